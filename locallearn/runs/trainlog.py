"""Where `locallearn train` writes what it prints, besides the terminal:

- the run folder's train.log: appended across attempts and resumes, one header per
  attempt (time, host, command), one closing line (finished, or why it stopped);
- with --job-log FILE, also FILE, this attempt only (the workflow's per-job log, which
  Snakemake empties before each attempt anyway). The trainer makes its folder, so the
  command `snakemake -n -p` prints can be pasted into any shell as it is.

Output is copied at the Python level (sys.stdout and sys.stderr); the pipeline's stage
processes print through their launcher, which copies their output here too.
"""
from __future__ import annotations

import contextlib
import shlex
import socket
import sys
import time
from pathlib import Path


class _Tee:
    """A text stream that writes to the original stream and to a log file."""

    def __init__(self, stream, log):
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._stream.write(text)
        try:
            self._log.write(text)
            self._log.flush()   # a SIGKILL loses nothing already printed
        except (OSError, ValueError):   # a full disk or a closed log never stops the run
            pass
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name):   # isatty, fileno, encoding...: the original stream's
        return getattr(self._stream, name)


def terminal(stream):
    """The stream under any copies (_Tee) of it: what the user's terminal, or the job's
    own log, receives. A progress bar writes here, so its refreshes never reach a log."""
    while isinstance(stream, _Tee):
        stream = stream._stream
    return stream


def named(run_name: str, line: str) -> str:
    """A line of the run's output, named: `[<run name>] line` (the workflow's run names
    are <cell>-s<seed>), so that the lines of jobs side by side can be told apart; each
    line of a text of several."""
    return "\n".join(f"[{run_name}] {part}" for part in line.split("\n"))


def duration(seconds: float) -> str:
    """'42s', '7m05s', '3h12m'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def header(argv: list[str]) -> str:
    return (f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {socket.gethostname()}: "
            f"{shlex.join(['locallearn', 'train', *argv])}\n")


@contextlib.contextmanager
def copy_output(path: str | Path | None, mode: str = "a", first: str = ""):
    """Copy stdout and stderr into `path` (opened with `mode`) until the end of the
    block, which adds the closing line; `first` is written first, to `path` only (the
    attempt's header: the terminal and a job's log have the command already).
    path None: nothing is copied."""
    if path is None:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode, encoding="utf-8") as log:
        old = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
        if first:
            log.write(first)
            log.flush()
        outcome = "# finished\n"
        try:
            yield
        except BaseException as e:
            outcome = f"# stopped: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}\n"
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = old
            try:
                log.write(outcome)
            except OSError:
                pass


def train_log(path: Path, argv: list[str]):
    """The run folder's train.log: appended, this attempt's header first."""
    return copy_output(path, "a", header(argv))
