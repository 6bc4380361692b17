"""The DAG survives: snakemake killed mid-grid (with its training job) and rerun with the
README's recovery command retrains no finished cell, resumes the interrupted one from
its checkpoint, and ends with the tables of an uninterrupted run."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, needs_fmnist

BUDGET = "quick={epochs: 3, max_train_examples: 1500, max_test_examples: 500}"
CELLS = ["fmnist-mlp-backprop", "fmnist-mlp-pred", "fmnist-mlp-sim", "fmnist-mlp-predsim"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOCALLEARN_DATA")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _cmd(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]


def _run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run(_cmd(workdir, *args), capture_output=True, text=True, timeout=600, cwd=workdir, env=_env())
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r


def _tables(workdir: Path) -> dict[str, str]:
    """The compiled tables, each cell's wall time (the summary's last column, the only
    thing a kill and resume may change) masked."""
    tables = workdir / "results" / "quick" / "tables"
    wall = re.compile(r"\| (\d+ s|[\d.]+ min|[\d.]+ h) +\|$", re.M)
    return {p.name: wall.sub("| <wall> |", p.read_text()) for p in sorted(tables.glob("*.md"))}


@pytest.mark.slow
@needs_fmnist
def test_killed_grid_resumes_to_identical_tables(tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    clean.mkdir()
    killed.mkdir()
    _run(clean, "--cores", "1", "quick", "--config", BUDGET)

    # One job at a time; kill snakemake and its job once a cell has finished and
    # another has checkpointed (mid-run), as a dying machine would.
    runs = killed / "results" / "quick" / "runs"
    proc = subprocess.Popen(_cmd(killed, "--cores", "1", "quick", "--config", BUDGET), cwd=killed, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 400
    victim = None
    while time.monotonic() < deadline and victim is None:
        done = {c for c in CELLS if (runs / c / "seed1" / "metrics.json").exists()}
        for c in CELLS:
            if c not in done and done and (runs / c / "seed1" / "checkpoint.pt").exists():
                victim = c
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert victim, "no cell was caught between checkpoint and finish"
    finished = {c: (runs / c / "seed1" / "metrics.json").stat().st_mtime_ns
                for c in CELLS if (runs / c / "seed1" / "metrics.json").exists()}
    assert finished and victim not in finished

    # The README's recovery: release the lock the killed snakemake held, then rerun.
    _run(killed, "--unlock")
    _run(killed, "--cores", "1", "quick", "--config", BUDGET, "--rerun-incomplete")
    for c, stamp in finished.items():  # not retrained
        assert (runs / c / "seed1" / "metrics.json").stat().st_mtime_ns == stamp
    log = (killed / "results" / "quick" / "logs" / "train" / victim / "seed1.log").read_text()
    assert "resuming after epoch" in log
    assert _tables(killed) == _tables(clean) and _tables(clean)
    for c in CELLS:
        a = json.loads((runs / c / "seed1" / "metrics.json").read_text())
        b = json.loads((clean / "results" / "quick" / "runs" / c / "seed1" / "metrics.json").read_text())
        assert [h["test_error"] for h in a["history"]] == [h["test_error"] for h in b["history"]]
