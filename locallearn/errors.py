"""Errors a user can act on. The CLI prints each as one line (no traceback unless
--debug) and exits non-zero; everything else is a bug and keeps its traceback."""


class LocallearnError(Exception):
    """Base: a message that says what is wrong and where."""
    exit_code = 1


class ConfigError(LocallearnError, ValueError):
    """A flag, config key or cells.tsv value that cannot run."""
    exit_code = 2


class DatasetError(LocallearnError):
    """A dataset that is missing, incomplete or corrupt."""


class CheckpointError(LocallearnError):
    """A checkpoint that belongs to another config or cannot be read."""


class DivergenceError(LocallearnError):
    """A loss that became NaN or infinite."""


class TrackingError(LocallearnError):
    """The MLflow tracking store cannot be reached or written."""


class OutputError(LocallearnError):
    """An output file (checkpoint, metrics.json) that cannot be written: disk full, I/O error."""
