"""The command line, `locallearn <command>`: the entry point and dispatch (cli/main.py), the
report and tables commands (cli/report.py), the MLflow store's commands (cli/tracking.py)."""
