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


class ForeignCheckpointError(CheckpointError):
    """A checkpoint of another recipe (its config_hash differs from the run's)."""


class DivergenceError(LocallearnError):
    """A loss that became NaN or infinite."""


class TrackingError(LocallearnError):
    """The MLflow tracking store cannot be reached or written."""


class OutputError(LocallearnError):
    """An output file (checkpoint, metrics.json) that cannot be written: disk full, I/O error."""


class PipelineError(LocallearnError):
    """A pipeline stage died, hung or failed: the whole pipelined run stops."""


def error_class(name: str) -> type[LocallearnError]:
    """The error class called `name` (a stage process reports its error by name to the
    launcher, which raises it again); LocallearnError for a name it does not know."""
    found, todo = {}, [LocallearnError]
    while todo:
        c = todo.pop()
        found[c.__name__] = c
        todo += c.__subclasses__()
    return found.get(name, LocallearnError)
