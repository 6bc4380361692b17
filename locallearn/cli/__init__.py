"""The command line, `locallearn <command>`: the entry point and its commands (cli/main.py), the
first word's parser that each level dispatches on (cli/dispatch.py), the
report and tables commands (cli/report.py), the MLflow store's commands (cli/tracking.py)."""
