"""The DAG survives: snakemake killed mid-grid (with its training job) and rerun with the
README's recovery command retrains no finished cell, resumes the interrupted one from
its checkpoint, and ends with the tables of an uninterrupted run."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import QUICK_BUDGET as BUDGET, QUICK_CELLS as CELLS, child_env, needs_fmnist, snakemake, snakemake_cmd


def _run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    r = snakemake(workdir, *args, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r


def _tables(workdir: Path) -> dict[str, str]:
    """The compiled tables with what a kill and resume may change masked, the measured
    costs of a run: the summary's "Wall time per seed", the cost table's peak memory and
    s / epoch (in cost.md and tables.md)."""
    tables = workdir / "results" / "quick" / "tables"
    wall = re.compile(r"\| (\d+ s|[\d.]+ min|[\d.]+ h) +\|")
    memory_and_speed = re.compile(r"\| [\d,.]+ [KMG]iB +\| [\d.]+ +\|$", re.M)

    def masked(text: str) -> str:   # column widths follow the masked values: padding ignored
        text = memory_and_speed.sub("| <memory> | <s/epoch> |", wall.sub("| <wall> |", text))
        return re.sub(r"-{3,}", "---", re.sub(r" {2,}", " ", text))
    return {p.name: masked(p.read_text()) for p in sorted(tables.glob("*.md"))}


@pytest.mark.slow
@needs_fmnist
def test_killed_grid_resumes_to_identical_tables(finished_quick, tmp_path):
    clean, _ = finished_quick   # the same grid and budget, never interrupted
    killed = tmp_path / "killed"
    killed.mkdir()

    # One job at a time; kill snakemake and its job once a cell has finished and
    # another has checkpointed (mid-run), as a dying machine would.
    runs = killed / "results" / "quick" / "runs"
    proc = subprocess.Popen(snakemake_cmd(killed, "--cores", "1", "quick", "--config", BUDGET), cwd=killed, env=child_env(),
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


@pytest.mark.slow
@needs_fmnist
def test_killed_job_keeps_its_log_and_quick_writes_only_its_own_files(tmp_path):
    """A training job killed mid-epoch, then the same command again: the run folder's
    train.log holds both attempts, each under its own header (time, host, command); the
    rule's log (emptied by Snakemake before each attempt) the last one. With a tracking
    server named by $MLFLOW_TRACKING_URI, the quick preset's runs go there and its files
    only under results/quick/ (plus the dataset and its check mark), as the README says."""
    work, server = tmp_path / "work", tmp_path / "server"
    work.mkdir()
    server.mkdir()
    env = dict(child_env(), MLFLOW_TRACKING_URI=f"sqlite:///{server}/mlflow.db")
    budget = ("quick={epochs: 2, max_train_examples: 640, max_test_examples: 256, "
              "select: {cells: [fmnist-mlp-pred]}}")
    cmd = snakemake_cmd(work, "--cores", "1", "quick", "--config", budget)
    killed = subprocess.run(cmd, cwd=work, env=dict(env, LOCALLEARN_FAULT="kill-mid-epoch:2"),
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode != 0
    run = work / "results" / "quick" / "runs" / "fmnist-mlp-pred" / "seed1"
    assert (run / "checkpoint.pt").is_file() and not (run / "metrics.json").exists()
    again = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]

    log = (run / "train.log").read_text()
    header = re.compile(r"^# \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S* ?on (\S+): locallearn train .*--seed 1 .*$", re.M)
    assert header.findall(log) == [socket.gethostname()] * 2, log[:3000]
    _, _, first, _, second = header.split(log)   # before, host, attempt 1, host, attempt 2
    # the killed attempt ends without a closing line; the second resumes and finishes
    assert "epoch 1/2" in first and "# finished" not in first and "# stopped" not in first
    assert "resuming after epoch 1" in second and second.rstrip().endswith("# finished")
    rule_log = (work / "results" / "quick" / "logs" / "train" / "fmnist-mlp-pred" / "seed1.log").read_text()
    # the job's log: this attempt's lines, named; the attempt's header is train.log's alone
    assert not header.findall(rule_log) and "[fmnist-mlp-pred-s1] " in rule_log and "resuming after epoch 1" in rule_log

    written = sorted(p.relative_to(work).as_posix() for p in work.rglob("*")
                     if p.is_file() and p.relative_to(work).parts[0] != ".snakemake")
    outside = [p for p in written if not p.startswith(("results/quick/", "data/", "results/.prepared/"))]
    assert outside == [] and written, outside
    assert "results/.prepared/FashionMNIST.ok" in written and not (work / "results" / "quick" / "mlflow.db").exists()
    import mlflow
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["locallearn-quick"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(runs["status"]) == ["FINISHED"] and list(runs["metrics.test_error"]) == [metrics["test_error"]]
