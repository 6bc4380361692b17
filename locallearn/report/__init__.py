"""Reporting from metrics.json: tables, figures, the README splice, the reporting steps."""
