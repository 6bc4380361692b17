"""A run folder and its record: its state and file names, checkpoints and metrics.json,
train.log, and the reported errors of a run's history."""
