"""Kill and resume, exactly: a real `python -m locallearn train` on Debian's Fashion-MNIST,
SIGKILLed at every point where a machine can die, rerun with the same command each time.

The kills land where they must through the trainer's fault hook ($LOCALLEARN_FAULT,
locallearn/faults.py): the process sends itself SIGKILL at that point, so no timing is
guessed. One output folder is killed at each fault point in a row (each rerun gets
further), its start record and a checkpoint are torn by hand, then the same command is
run to the end. A second test kills a run at seeded random times instead. It must end with
metrics.json equal to an uninterrupted run's (every history value but the timings), one
MLflow run, FINISHED, with every epoch logged once.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from conftest import REPO, child_env, needs_fmnist
from locallearn.train import trainer as train_mod
from locallearn.recipe.config import parse_train_args

TIMING = {"epoch_seconds", "images_per_second"}
EPOCHS = 4


def recipe(data_dir, out, mlflow_uri):
    return ["--model", "mlp", "--dataset", "FashionMNIST", "--num-layers", "3", "--num-hidden", "64",
            "--dropout", "0.025", "--nonlin", "leakyrelu", "--lr", "5e-4", "--epochs", str(EPOCHS),
            "--lr-decay-milestones", "1", "3", "--max-train-examples", "1000", "--max-test-examples", "500",
            "--threads", "1", "--device", "cpu", "--data-dir", str(data_dir), "--out", str(out),
            "--mlflow-uri", mlflow_uri, "--mlflow-experiment", "faults"]


def train(argv, fault=None):
    env = child_env(CUDA_VISIBLE_DEVICES="")
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
    ("kill-after-start-record:0", lambda d: (d / "start.json").exists() and not (d / "checkpoint.pt").exists()),
    ("kill-mid-epoch:2", lambda d: (d / "checkpoint.pt").exists() and not (d / "checkpoint.prev.pt").exists()),
    ("kill-checkpoint-tmp:2", lambda d: tmp_written(d) and (d / "checkpoint.pt").exists()),
    ("kill-mlflow-epoch:2", lambda d: (d / "checkpoint.pt").exists() and (d / "checkpoint.prev.pt").exists()),
    ("kill-checkpoint-rotated:3", lambda d: tmp_written(d)
     and not (d / "checkpoint.pt").exists() and (d / "checkpoint.prev.pt").exists()),
    ("term-mid-epoch:3", lambda d: (d / "checkpoint.prev.pt").exists()),  # SLURM's time limit
    ("kill-after-checkpoint:3", lambda d: (d / "checkpoint.pt").exists()),
    ("kill-before-metrics:4", lambda d: (d / "checkpoint.pt").exists()),
]


@needs_fmnist
@pytest.mark.slow
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

    # A start record torn (half its bytes) must not make this resumable run start over,
    # and a checkpoint torn by the crash (half its bytes) is detected, the previous one used.
    record = out / "start.json"
    record.write_bytes(record.read_bytes()[: record.stat().st_size // 2])
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
    assert not list(tmp_path.glob("killed.replaced-*"))          # nothing set aside, nothing retrained
    headers = [ln for ln in (out / "train.log").read_text().splitlines() if ln.startswith("# 20")]
    assert len(headers) == len(KILLS) + 1 and all("locallearn train --model mlp" in h for h in headers)

    exp = client.get_experiment_by_name("faults")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run_id = runs[0].info.run_id
    for key in ("epoch", "test_error", "train_loss", "local_loss", "lr"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), (key, steps)
    logged = {m.step: m.value for m in client.get_metric_history(run_id, "test_error")}
    assert logged == {h["epoch"]: h["test_error"] for h in full["history"]}


@needs_fmnist
@pytest.mark.slow
def test_killed_at_random_moments_then_rerun_is_exact(tmp_path):
    """SIGKILL at seeded random moments (start-up, data, epochs, checkpoints, MLflow,
    metrics.json), a rerun of the same command after each. In rounds: each round is one
    folder, killed and rerun until an attempt outlives its kill moment and finishes; then
    one more attempt is killed at random (a finished run is never touched again) and the
    last rerun must leave an uninterrupted run's metrics.json and one FINISHED MLflow run.
    Rounds go on until at least 10 kills have landed, so how fast this machine is on the
    day changes how many rounds run, never what is checked. No kill ever loses a finished
    epoch: the newest checkpoint's epoch never goes back. Within a round the kill window
    grows by a fifth each attempt, so a machine slower now than when the uninterrupted run
    was timed (the other test worker busy) still sees the round finish."""
    import random
    import time

    import mlflow.tracking
    import torch

    data = tmp_path / "data"
    base = tmp_path / "uninterrupted"
    t0 = time.monotonic()
    r = train(recipe(data, base, f"sqlite:///{tmp_path / 'base.db'}"))
    span = time.monotonic() - t0   # start-up and the whole run
    assert r.returncode == 0, r.stderr[-2000:]
    full = json.loads((base / "metrics.json").read_text())

    env = child_env(CUDA_VISIBLE_DEVICES="")
    env.pop("LOCALLEARN_FAULT", None)
    rng = random.Random(20261129)

    def attempt(argv, window):
        """One run of the command, SIGKILLed at a random moment in `window` seconds; True if the kill landed."""
        proc = subprocess.Popen([sys.executable, "-m", "locallearn", "train", *argv], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, window))
        landed = proc.poll() is None
        if landed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        return landed

    kills, rounds = 0, 0
    while kills < 10:
        rounds += 1
        assert rounds <= 8, f"only {kills} kills landed in {rounds - 1} rounds"
        out, uri = tmp_path / f"killed{rounds}", f"sqlite:///{tmp_path / f'mlflow{rounds}.db'}"
        argv = recipe(data, out, uri)
        newest = 0
        for k in range(30):
            kills += attempt(argv, span * 1.2 ** k)
            if (out / "metrics.json").exists():
                break
            states = [torch.load(p, weights_only=True)["epoch"] for p in out.glob("checkpoint*.pt")]
            if states:
                assert max(states) >= newest, (states, newest)
                newest = max(states)
        if not (out / "metrics.json").exists():
            t0 = time.monotonic()
            r = train(argv)
            raise AssertionError(f"round {rounds}: 30 attempts, none finished; a rerun to the end took "
                                 f"{time.monotonic() - t0:.1f} s (the whole run {span:.1f} s), exit "
                                 f"{r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        finished = (out / "metrics.json").read_bytes()
        kills += attempt(argv, span)
        assert (out / "metrics.json").read_bytes() == finished   # a finished run is never touched again
        r = train(argv)
        assert r.returncode == 0, r.stderr[-2000:]
        assert (out / "metrics.json").read_bytes() == finished
        got = json.loads(finished)
        assert strip_timing(got["history"]) == strip_timing(full["history"])
        assert (got["test_error"], got["config_hash"]) == (full["test_error"], full["config_hash"])
        client = mlflow.tracking.MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "test_error")]
        assert sorted(steps) == list(range(1, EPOCHS + 1))
    assert not list(tmp_path.glob("killed*.replaced-*"))
    print(f"{kills} kills landed in {rounds} rounds; the uninterrupted run took {span:.1f} s")
