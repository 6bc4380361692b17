"""A run's output folder: whether the run is finished, its checkpoints and metrics.json.
A sequential run and every stage of a pipelined one go through this one object, so
they write the same files the same way (pipeline stage k keeps checkpoint.stage{k}.pt
instead of checkpoint.pt). The folder's file names are runs/runstate.py's; drawing its curve
is report/figures.py's, mirroring it to MLflow track/mirror.py's.

Checkpoints are written atomically (atomic.py) and rotated, the newest two kept, so a
file torn by a crash falls back to the previous one; a full disk leaves the previous
one and says so. They hold tensors and plain data only and are loaded with
torch.load(weights_only=True): a file whose pickle would build any other object (and
so could run code) is refused, never unpickled.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import sys
import tempfile
from pathlib import Path

import torch

from ..atomic import atomic_write, atomic_write_text
from ..recipe.config import config_hash, recipe_dict
from ..errors import CheckpointError, ConfigError, ForeignCheckpointError, OutputError
from ..faults import fault
from .runstate import CURVE, METRICS, config_diff, is_number


def checkpoint_name(stage: int | None = None, prev: bool = False) -> str:
    """checkpoint.pt / checkpoint.prev.pt; a pipeline stage k: checkpoint.stage{k}[.prev].pt."""
    return f"checkpoint{'' if stage is None else f'.stage{stage}'}{'.prev' if prev else ''}.pt"


def checkpoint_problem(state: dict, epochs: int, whole_run: bool = True) -> str | None:
    """What makes a checkpoint of this config unusable for resuming, or None: the fields
    the run loop reads (a pipeline stage's may have no history: only one stage reports)."""
    epoch, history = state.get("epoch"), state.get("history")
    if type(epoch) is not int or not 1 <= epoch <= epochs:
        return f"epoch is {epoch!r}, not one of 1..{epochs}"
    if (whole_run or history is not None) and (not isinstance(history, list) or len(history) != epoch):
        return f"its history does not hold epochs 1..{epoch}"
    if not is_number(state.get("wall_seconds")):
        return f"wall_seconds is {state.get('wall_seconds')!r}, not a number"
    return None


class RunFolder:
    def __init__(self, cfg, stage: int | None = None):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.config_hash = config_hash(cfg)
        self.stage = stage
        self.checkpoint = self.out / checkpoint_name(stage)
        self.previous = self.out / checkpoint_name(stage, prev=True)
        self.metrics_path = self.out / METRICS
        self.curve = self.out / CURVE
        self.run_name = cfg.run_name or self.out.resolve().name

    def prepare(self) -> None:
        """The folder exists and can be written (one clear error if not)."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.out, prefix=".write-test.")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise ConfigError(f"--out {self.out}: cannot write there ({e.strerror})") from None

    # ------------------------------------------------------------------ finished run
    def finished_metrics(self) -> dict | None:
        """metrics.json of this folder's finished run (runstate.run_state has matched its
        recipe), or None."""
        if not self.metrics_path.exists():
            return None
        return json.loads(self.metrics_path.read_text())

    # ------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, state: dict) -> None:
        """state (an engine's state_dict, the epoch, history...) with this config,
        written atomically; the one it replaces becomes the previous one."""
        state = {"config": recipe_dict(self.cfg), "config_hash": self.config_hash, **state}
        epoch = state["epoch"]
        kept = f"the checkpoint of epoch {epoch - 1} is kept" if self.checkpoint.exists() else "no checkpoint is kept"
        # Serialised in memory, written with plain file I/O: torch.save onto a full disk
        # raises an opaque RuntimeError from its zip writer, a write() raises OSError(ENOSPC).
        buf = io.BytesIO()
        torch.save(state, buf)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                f.write(buf.getbuffer())
                fault("enospc-checkpoint", epoch)
            fault("kill-checkpoint-tmp", epoch)
            if self.checkpoint.exists():  # rotated only once the new one is complete
                os.replace(self.checkpoint, self.previous)
            fault("kill-checkpoint-rotated", epoch)
        try:
            atomic_write(self.checkpoint, write)
        except OSError as e:  # disk full, quota, I/O error: the previous checkpoint stays
            raise OutputError(f"cannot write checkpoint {self.checkpoint} ({e.strerror or e}); {kept}: "
                              "free space and rerun the same command") from None

    def read_checkpoint(self, path: Path) -> dict | None:
        """A checkpoint of this config; None if the file is torn (a crash mid-write);
        CheckpointError if it holds anything but data, or another config."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:  # a pickled object: never built, never run
            reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{path} is not a locallearn checkpoint: it holds pickled objects, not just "
                                  f"tensors and plain data ({reason[:200]}); refusing to load it") from None
        except Exception as e:  # a torn or corrupt file
            print(f"locallearn: warning: checkpoint {path} unreadable ({type(e).__name__}); "
                  "trying the previous one", file=sys.stderr)
            return None
        if not isinstance(state, dict) or state.get("config_hash") != self.config_hash:
            old = state.get("config", {}) if isinstance(state, dict) else {}
            raise ForeignCheckpointError(f"{path} belongs to another config ({config_diff(old, recipe_dict(self.cfg))}); "
                                  "refusing to mix runs: use another --out or delete the folder")
        problem = checkpoint_problem(state, self.cfg.epochs, whole_run=self.stage is None)
        if problem:
            raise CheckpointError(f"{path} cannot be resumed ({problem}); use another --out, or delete the "
                                  "checkpoint to start over")
        return state

    def checkpoints(self) -> list[dict]:
        """The readable checkpoints of this folder, newest first. Temporary files left
        by a writer that was killed are removed first."""
        for tmp in self.out.glob(f".{self.checkpoint.name}.*.tmp"):
            tmp.unlink(missing_ok=True)
        found = []
        for path in (self.checkpoint, self.previous):
            if path.exists():
                state = self.read_checkpoint(path)
                if state is not None:
                    found.append(state)
        return found

    def latest_checkpoint(self) -> dict | None:
        """--resume's checkpoint, else this folder's newest readable one."""
        if self.cfg.resume:
            path = Path(self.cfg.resume)
            if not path.exists():
                raise CheckpointError(f"--resume {path}: no such checkpoint")
            state = self.read_checkpoint(path)
            if state is None:
                raise CheckpointError(f"--resume {path}: the checkpoint is unreadable (torn or corrupt)")
            return state
        found = self.checkpoints()
        return found[0] if found else None

    # ----------------------------------------------------------- metrics.json, curve
    def write_metrics(self, metrics: dict) -> None:
        """metrics.json (atomically: it marks the run finished); the previous checkpoints
        are no longer needed."""
        epochs = metrics["epochs"]
        fault("kill-before-metrics", epochs)
        try:
            fault("enospc-metrics", epochs)
            atomic_write_text(self.metrics_path, json.dumps(metrics, indent=1))
        except OSError as e:
            raise OutputError(f"cannot write {self.metrics_path} ({e.strerror or e}); the checkpoint of epoch "
                              f"{epochs} is kept: free space and rerun the same command") from None
        fault("kill-after-metrics", epochs)
        for old in self.out.glob("checkpoint*.prev.pt"):  # the run's, or every pipeline stage's
            old.unlink(missing_ok=True)
