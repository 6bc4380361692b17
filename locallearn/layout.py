"""Where things live, said once: the data folder, a preset's run folders and its MLflow
store. Torch-free: the workflow (locallearn/workflow/plan.py) reads it to schedule, the
package to train, report and mirror.

    <results>/<preset>/runs/<cell>/seed<k>/   one run (its files: runs/runstate.py)
    <results>/<preset>/mlflow.db              the preset's default MLflow store
"""
from __future__ import annotations

import os
import re
from pathlib import Path

DATA_ENV = "LOCALLEARN_DATA"
DEFAULT_DATA_DIR = "data"
RUNS = "runs"
STORE_FILE = "mlflow.db"


def data_dir(flag: str | None = None) -> str:
    """The data folder as given: the flag (or config key), else $LOCALLEARN_DATA, else ./data."""
    return flag or os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR


def resolve_data_dir(flag: str | None = None) -> Path:
    """data_dir, absolute (for messages and records)."""
    return Path(data_dir(flag)).expanduser().absolute()


def runs_dir(results: str | Path) -> Path:
    """A preset's run folders: <results>/runs (results: e.g. results/full)."""
    return Path(results) / RUNS


def cell_seed(cell: str, seed: int | str) -> Path:
    """A run folder's path under runs/: <cell>/seed<k>."""
    return Path(cell) / f"seed{seed}"


def run_dir(results: str | Path, cell: str, seed: int | str) -> Path:
    """The folder of one run: <results>/runs/<cell>/seed<k>."""
    return runs_dir(results) / cell_seed(cell, seed)


def seed_of(folder: Path) -> int | None:
    """k for a folder named seed<k> (a run folder), else None (e.g. a set-aside one)."""
    m = re.fullmatch(r"seed(\d+)", folder.name)
    return int(m.group(1)) if m else None


def finished_run_folders(results: str | Path) -> list[Path]:
    """Every run folder of a preset holding a metrics.json, sorted."""
    return sorted(p.parent for p in runs_dir(results).glob("*/seed*/metrics.json") if seed_of(p.parent) is not None)


def default_store(results: str | Path) -> str:
    """A preset's own MLflow store: SQLite in its results folder."""
    return "sqlite:///" + str((Path(results) / STORE_FILE).resolve())
