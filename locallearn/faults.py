"""Fault injection, for the tests only (tests/test_faults.py, test_bad_input.py,
test_pipeline.py, test_run_state.py): $LOCALLEARN_FAULT="POINT:EPOCH" makes the run fail at POINT of
epoch EPOCH the way a crash would. Unset, nothing happens.

  kill-after-start-record SIGKILL with the start record written, nothing trained (EPOCH: 0)
  kill-mid-epoch          SIGKILL after the 2nd batch of the epoch
  term-mid-epoch          SIGTERM (SLURM's time limit) after the 2nd batch of the epoch
  kill-checkpoint-tmp     SIGKILL with the checkpoint's temporary file complete, not yet renamed
  kill-checkpoint-rotated SIGKILL with checkpoint.pt moved to .prev, the temporary file not renamed
  kill-after-checkpoint   SIGKILL after the checkpoint, before MLflow gets the epoch
  kill-mlflow-epoch       SIGKILL while the epoch is being sent to MLflow
  kill-before-metrics     SIGKILL after the last epoch, before metrics.json (EPOCH: the last)
  kill-after-metrics      SIGKILL after metrics.json, before MLflow marks the run FINISHED
  enospc-checkpoint       disk full while writing the epoch's checkpoint
  enospc-metrics          disk full while writing metrics.json (EPOCH: the last)
  nan                     the epoch's training loss becomes NaN

In a pipelined run only one stage fails: $LOCALLEARN_FAULT_STAGE (default: the last).
"""
from __future__ import annotations

import errno
import os
import signal
import sys

FAULT_ENV = "LOCALLEARN_FAULT"
FAULT_STAGE_ENV = "LOCALLEARN_FAULT_STAGE"

# (rank, world) of this process when it is a pipeline stage; None in a sequential run
_stage: tuple[int, int] | None = None


def set_stage(rank: int, world: int) -> None:
    """This process is pipeline stage `rank` of `world`: faults fire in the chosen stage only."""
    global _stage
    _stage = (rank, world)


def fault(point: str, epoch: int) -> bool:
    """Fail at `point` of `epoch` if $LOCALLEARN_FAULT asks for it; True for faults
    the caller enacts itself (nan)."""
    if os.environ.get(FAULT_ENV) != f"{point}:{epoch}":
        return False
    if _stage is not None and os.environ.get(FAULT_STAGE_ENV, str(_stage[1] - 1)) != str(_stage[0]):
        return False
    if point.startswith(("kill-", "term-")):
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL if point.startswith("kill-") else signal.SIGTERM)
    if point.startswith("enospc-"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return True
