"""A run folder's fate, decided in one place: `run_state(out, cfg)`.

`locallearn train --out DIR` calls it before it touches DIR, and the workflow calls
the same function to decide which runs become jobs (locallearn/workflow/plan.py); nothing
else decides. Torch-free: the workflow imports it while it builds its DAG.

A folder is in one of four states:

  START     nothing of a run yet: train from epoch 1
  RESUME    an unfinished run of this recipe (its start record says so), or one whose
            start record is missing or unreadable: the trainer resumes from the
            checkpoint, which it verifies (a checkpoint of another recipe is set aside
            then). So a torn start record never makes a resumable run start over.
  FINISHED  metrics.json of this recipe: final; never trained again, never scheduled
  REPLACE   a run (finished or not) of another recipe: the whole folder is moved to
            <out>.replaced-<time>/ with replaced.json, then this recipe starts

"This recipe" means the config_hash (recipe/config.py): the fields that decide the numbers.
A flag added after a run was made enters it only when set away from its default, so
new flags neither retrain nor refuse earlier runs.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from datetime import datetime
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write_json, atomic_write_text
from ..recipe.config import config_hash, recipe_dict
from ..errors import CheckpointError

START, RESUME, FINISHED, REPLACE = "start", "resume", "finished", "replace"
METRICS = "metrics.json"
CURVE = "curve.png"           # the run's learning curve, drawn beside metrics.json
START_RECORD = "start.json"   # written by the trainer when it starts or resumes a run
TRAIN_LOG = "train.log"       # appended by the trainer, one header per attempt
REPLACED = "replaced.json"    # in a set-aside folder: what was moved, from where, why
# Before the trainer owned its folder the workflow wrote plan.json ({"args": [...]});
# such a folder is read as one without a start record (RESUME, checkpoint verified).


@dataclass(frozen=True)
class State:
    what: str               # START | RESUME | FINISHED | REPLACE
    why: str                # one line for the user
    recorded: dict | None   # metrics.json (FINISHED) or the record that decided REPLACE


def config_diff(old: dict, new: dict) -> str:
    """The first few recipe fields that differ, as 'lr: 0.001 -> 0.002'."""
    keys = sorted(k for k in set(old) | set(new) if json.dumps(old.get(k)) != json.dumps(new.get(k)))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:4]) or "unknown difference"


def is_number(value) -> bool:
    """Whether a value read from a record (metrics.json, a history entry) is a number:
    an int or float, not a bool, not NaN. The one such rule: selection, tables, figures
    and the MLflow mirror all ask it."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def finished_problem(done: dict) -> str | None:
    """What makes a metrics.json unusable as a finished run's record, or None."""
    if not isinstance(done.get("config_hash"), str):
        return "it has no config_hash"
    if not is_number(done.get("test_error")):
        return f"test_error is {done.get('test_error')!r}, not a number"
    if not isinstance(done.get("history"), list) or not done["history"]:
        return "it has no history of epochs"
    if type(done.get("epochs")) is not int:
        return f"epochs is {done.get('epochs')!r}, not a whole number"
    return None


def recorded_run_name(folder: Path, metrics: dict) -> str:
    """A finished run's name: metrics.json's `run_name`, else <cell>-s<seed> (runs
    finished before the name was recorded)."""
    return metrics.get("run_name") or f"{Path(folder).parent.name}-s{metrics.get('seed', Path(folder).name)}"


def run_times(metrics: dict, path: Path) -> tuple[int | None, int | None]:
    """(start, end) of a finished run in ms since the epoch: metrics.json's `started_at`
    and `finished_at`; for a metrics.json older than those fields, the end is the time
    of the git commit that added the file and the start `wall_seconds` before it.
    (None, None) where neither is known (MLflow then uses the time of the sync)."""
    end = _iso_ms(metrics.get("finished_at")) or _added_in_git_ms(path)
    if end is None:
        return None, None
    start = _iso_ms(metrics.get("started_at"))
    if start is None and is_number(metrics.get("wall_seconds")):
        start = end - int(round(float(metrics["wall_seconds"]) * 1000))
    return (start if start is not None else end), end


def _iso_ms(text) -> int | None:
    try:
        return int(datetime.fromisoformat(str(text)).timestamp() * 1000) if text else None
    except ValueError:
        return None


def _added_in_git_ms(path: Path) -> int | None:
    """The committer time of the commit that added `path` (the newest such), or None
    outside a git checkout or for a file not committed."""
    try:
        out = subprocess.run(["git", "log", "--diff-filter=A", "--format=%cI", "--", path.name],
                             cwd=path.parent, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split() if out.returncode == 0 else []
    return _iso_ms(lines[0]) if lines else None


def _read_json(path: Path) -> dict | None:
    """The JSON object in path, or None if it is torn, empty or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_state(out: str | Path, cfg) -> State:
    """The state of the run folder `out` for the run of `cfg` (parsed train flags)."""
    out = Path(out)
    chash = config_hash(cfg)
    metrics = out / METRICS
    if metrics.is_file():
        done = _read_json(metrics)
        problem = "not a JSON object" if done is None else finished_problem(done)
        if problem:   # never torn by us (written atomically): a copy or an edit broke it
            raise CheckpointError(f"{metrics} is unreadable ({problem}); it is a finished run's record: "
                                  "restore it, or move the folder away to train again")
        if done["config_hash"] == chash:
            return State(FINISHED, f"{out}: finished (test error {done.get('test_error')}%)", done)
        return State(REPLACE, f"{out} holds a finished run of another recipe "
                              f"({config_diff(recipe_dict(done.get('config') or {}), recipe_dict(cfg))})", done)
    record = _read_json(out / START_RECORD)
    if record is not None and isinstance(record.get("config_hash"), str):
        if record["config_hash"] == chash:
            return State(RESUME, f"{out}: an unfinished run of this recipe", record)
        return State(REPLACE, f"{out} holds an unfinished run of another recipe "
                              f"({config_diff(recipe_dict(record.get('config') or {}), recipe_dict(cfg))})", record)
    if out.is_dir() and any(out.iterdir()):
        return State(RESUME, f"{out}: a run folder without a readable start record (its checkpoint, if "
                             "any, is verified before resuming)", None)
    return State(START, f"{out}: a new run", None)


def write_start_record(out: Path, cfg, argv: list[str]) -> None:
    """What this folder's run is, written atomically before any checkpoint: the recipe
    and its hash decide the folder's state; the command line and time say who started it."""
    atomic_write_text(out / START_RECORD, json.dumps({
        "config_hash": config_hash(cfg), "config": recipe_dict(cfg), "argv": list(argv),
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": socket.gethostname()}, indent=1) + "\n")


def aside_path(out: Path) -> Path:
    """Where set_aside puts `out` by default: <out>.replaced-<YYYYmmdd-HHMMSS>, with -2,
    -3... after it when that second already has one."""
    base = out.with_name(f"{out.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def set_aside(out: Path, why: str, to: Path | None = None, new_argv: list[str] = ()) -> Path:
    """Move the run folder `out` whole to `to` (default aside_path) in one rename, and
    record in <to>/replaced.json what was moved and why. Nothing of it is deleted.
    `to` may exist as an empty folder (Snakemake makes the output's folder first)."""
    to = Path(to) if to else aside_path(out)
    record = {"moved": str(out), "to": str(to), "why": why, "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "host": socket.gethostname(), "new_argv": list(new_argv)}
    done = _read_json(out / METRICS)
    if done is not None:
        record.update(finished=True, test_error=done.get("test_error"), config_hash=done.get("config_hash"))
    else:
        record["finished"] = False
    if to.is_dir() and not any(to.iterdir()):
        to.rmdir()
    to.parent.mkdir(parents=True, exist_ok=True)
    os.rename(out, to)   # one rename: the folder is at one place or the other, never lost
    atomic_write_json(to / REPLACED, record)
    return to
