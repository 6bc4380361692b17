"""Kill and resume, exactly: a real `python -m locallearn train` on Debian's Fashion-MNIST,
SIGKILLed at every point where a machine can die, rerun with the same command each time.

The kills land where they must through the trainer's fault hook ($LOCALLEARN_FAULT,
locallearn/faults.py): the process sends itself SIGKILL at that point, so no timing is
guessed. One output folder is killed six times in a row (each rerun gets further), and a
checkpoint is torn by hand, then the same command is run to the end. It must end with
metrics.json equal to an uninterrupted run's (every history value but the timings), one
MLflow run, FINISHED, with every epoch logged once.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from conftest import REPO, needs_fmnist
from locallearn import train as train_mod
from locallearn.config import parse_train_args

TIMING = {"epoch_seconds", "images_per_second"}
EPOCHS = 4


def recipe(data_dir, out, mlflow_uri):
    return ["--model", "mlp", "--dataset", "FashionMNIST", "--num-layers", "3", "--num-hidden", "64",
            "--dropout", "0.025", "--nonlin", "leakyrelu", "--lr", "5e-4", "--epochs", str(EPOCHS),
            "--lr-decay-milestones", "1", "3", "--max-train-examples", "1000", "--max-test-examples", "500",
            "--threads", "1", "--device", "cpu", "--data-dir", str(data_dir), "--out", str(out),
            "--mlflow-uri", mlflow_uri, "--mlflow-experiment", "faults"]


def train(argv, fault=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    env.pop("LOCALLEARN_FAULT", None)
    if fault:
        env["LOCALLEARN_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "locallearn", "train", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def strip_timing(history):
    return [{k: v for k, v in e.items() if k not in TIMING} for e in history]


def killed(r):
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-2000:])


def tmp_written(d):
    """The checkpoint's temporary file (atomic.atomic_write's), complete."""
    return any(p.stat().st_size > 0 for p in d.glob(".checkpoint.pt.*.tmp"))


# (fault, what must be on disk right after the kill)
KILLS = [
    ("kill-mid-epoch:2", lambda d: (d / "checkpoint.pt").exists() and not (d / "checkpoint.prev.pt").exists()),
    ("kill-checkpoint-tmp:2", lambda d: tmp_written(d) and (d / "checkpoint.pt").exists()),
    ("kill-checkpoint-rotated:3", lambda d: tmp_written(d)
     and not (d / "checkpoint.pt").exists() and (d / "checkpoint.prev.pt").exists()),
    ("term-mid-epoch:3", lambda d: (d / "checkpoint.prev.pt").exists()),  # SLURM's time limit
    ("kill-after-checkpoint:3", lambda d: (d / "checkpoint.pt").exists()),
    ("kill-before-metrics:4", lambda d: (d / "checkpoint.pt").exists()),
]


@needs_fmnist
def test_kill_anywhere_then_rerun_is_exact(tmp_path):
    import mlflow.tracking
    import torch

    data = tmp_path / "data"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "killed"
    argv = recipe(data, out, uri)

    # The uninterrupted run, in this process (tracking off: only its numbers matter).
    torch.set_num_threads(1)
    full = train_mod.run(parse_train_args(recipe(data, tmp_path / "full", "")))

    client = mlflow.tracking.MlflowClient(uri)
    for fault, on_disk in KILLS:
        r = train(argv, fault)
        if fault.startswith("term-"):  # SIGTERM unwinds: one line, the MLflow run FAILED
            assert r.returncode == 143 and r.stderr.strip().count("\n") == 0, (r.returncode, r.stderr)
            assert "terminated (SIGTERM); rerun the same command" in r.stderr
            run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
            assert client.get_run(run_id).info.status == "FAILED"
        else:
            killed(r)
        assert on_disk(out), (fault, sorted(p.name for p in out.iterdir()))
        assert not (out / "metrics.json").exists(), fault

    # A checkpoint torn by the crash (half its bytes): detected, the previous one used.
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    assert torch.load(out / "checkpoint.prev.pt", weights_only=True)["epoch"] == EPOCHS - 1
    r = train(argv, f"kill-after-metrics:{EPOCHS}")
    killed(r)
    assert f"checkpoint {ckpt} unreadable" in r.stderr and f"resuming after epoch {EPOCHS - 1}" in r.stdout
    assert (out / "metrics.json").exists()

    r = train(argv)  # finished: MLflow is brought up to date, nothing retrained
    assert r.returncode == 0 and "already finished" in r.stdout, r.stderr[-2000:]

    got = json.loads((out / "metrics.json").read_text())
    assert strip_timing(got["history"]) == strip_timing(full["history"])
    assert got["test_error"] == full["test_error"] and got["epochs"] == EPOCHS
    assert got["config_hash"] == full["config_hash"]
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []  # killed writers' removed

    exp = client.get_experiment_by_name("faults")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run_id = runs[0].info.run_id
    for key in ("epoch", "test_error", "train_loss", "local_loss", "lr"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), (key, steps)
    logged = {m.step: m.value for m in client.get_metric_history(run_id, "test_error")}
    assert logged == {h["epoch"]: h["test_error"] for h in full["history"]}
