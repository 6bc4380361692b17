"""Real short runs on the real Fashion-MNIST: it learns, and resume is exact."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime

import pytest
import torch

from conftest import needs_fmnist
from locallearn.train import fit as fit_mod
from locallearn.train import trainer as train_mod
from locallearn.recipe.config import parse_train_args
from locallearn.train.fit import lr_at
from locallearn.host.machine import lease_devices
from locallearn.runs.rundir import RunFolder

TIMING = {"epoch_seconds", "images_per_second"}


def recipe(tmp_path, out="run", *extra):
    # The paper's Fashion-MNIST mlp predsim recipe, narrowed (256 units) and on the
    # first 2,000 / 1,000 examples so that a test takes seconds.
    return parse_train_args([
        "--model", "mlp", "--dataset", "FashionMNIST", "--dropout", "0.025", "--lr", "5e-4",
        "--num-layers", "3", "--num-hidden", "256", "--epochs", "3", "--lr-decay-milestones", "1", "2",
        "--nonlin", "leakyrelu", "--max-train-examples", "2000", "--max-test-examples", "1000",
        "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / out), "--mlflow-uri", "", *extra])


def untrained_error(tmp_path) -> float:
    """The test error of the same recipe and seed with lr 1e-12: its weights as initialised
    (about chance, 90%). An epoch of training must take the error far below it."""
    return train_mod.run(recipe(tmp_path, "untrained", "--lr", "1e-12", "--epochs", "1"))["test_error"]


def strip_timing(history):
    return [{k: v for k, v in e.items() if k not in TIMING} for e in history]


def test_lr_schedule():
    cfg = parse_train_args(["--lr", "1", "--lr-decay-milestones", "2", "4", "--lr-decay-fact", "0.5"])
    assert [lr_at(cfg, e) for e in range(1, 7)] == [1, 1, 0.5, 0.5, 0.25, 0.25]


@needs_fmnist
@pytest.mark.slow
def test_real_run_learns_and_resume_is_exact(tmp_path, monkeypatch):
    full = train_mod.run(recipe(tmp_path, "full"))
    assert full["epochs"] == 3 and len(full["history"]) == 3
    assert full["test_error"] < 40  # chance is 90%
    assert [h["lr"] for h in full["history"]] == [5e-4, 1.25e-4, 3.125e-5]
    assert len(full["history"][0]["local"]) == 3 and full["history"][0]["local"][0]["error"] is not None
    on_disk = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert on_disk["test_error"] == full["test_error"] and on_disk["config_hash"]
    for key in ("params_backprop", "params_total", "seed", "config", "environment", "git_revision", "device",
                "peak_memory_bytes", "wall_seconds", "started_at", "finished_at"):
        assert key in on_disk
    # MLflow's run times (docs/mlflow.md): the training's span, in UTC
    span = datetime.fromisoformat(on_disk["finished_at"]) - datetime.fromisoformat(on_disk["started_at"])
    assert on_disk["finished_at"].endswith("+00:00") and span.total_seconds() >= int(on_disk["wall_seconds"])

    # Interrupt after the first epoch's checkpoint, then run the same command again.
    real_save = RunFolder.save_checkpoint
    saves = []

    def save_then_die(folder, state):
        real_save(folder, state)
        saves.append(state["epoch"])
        raise KeyboardInterrupt

    monkeypatch.setattr(RunFolder, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_mod.run(recipe(tmp_path, "resumed"))
    assert saves == [1] and not (tmp_path / "resumed" / "metrics.json").exists()
    first_attempt = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["started_at"]
    monkeypatch.setattr(RunFolder, "save_checkpoint", real_save)
    resumed = train_mod.run(recipe(tmp_path, "resumed"))
    assert strip_timing(resumed["history"]) == strip_timing(full["history"])
    assert resumed["test_error"] == full["test_error"]
    assert resumed["started_at"] == fit_mod.utc_iso(first_attempt)   # the run started with its first attempt

    # A finished run is recognised; a run of another recipe in the same folder is set
    # aside whole (its metrics.json byte for byte), and the new recipe trains.
    again = train_mod.run(recipe(tmp_path, "full"))
    assert again["history"] == on_disk["history"]
    finished_bytes = (tmp_path / "full" / "metrics.json").read_bytes()
    other = train_mod.run(recipe(tmp_path, "full", "--seed", "2"))
    assert other["seed"] == 2 and json.loads((tmp_path / "full" / "metrics.json").read_text())["seed"] == 2
    [aside] = tmp_path.glob("full.replaced-*")
    assert (aside / "metrics.json").read_bytes() == finished_bytes
    record = json.loads((aside / "replaced.json").read_text())
    assert record["finished"] and record["test_error"] == full["test_error"] and "seed: 1 -> 2" in record["why"]


@needs_fmnist
@pytest.mark.slow
def test_cli_one_line_error_and_bf16(tmp_path):
    r = subprocess.run([sys.executable, "-m", "locallearn", "train", "--model", "resnet99"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--model" in r.stderr
    m = train_mod.run(recipe(tmp_path, "bf16", "--precision", "bf16", "--epochs", "1"))
    assert m["test_error"] < untrained_error(tmp_path) - 40   # here: about 40.5 against 90.7


@needs_fmnist
def test_reference_engine_runs_the_real_data(tmp_path):
    m = train_mod.run(recipe(tmp_path, "ref", "--engine", "reference", "--epochs", "1"))
    assert m["test_error"] < untrained_error(tmp_path) - 40   # here: about 40.5 against 90.7


def test_run_leases_a_gpu_unless_a_scheduler_chose(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALLEARN_GPU_COUNT", "2")
    monkeypatch.setenv("LOCALLEARN_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cfg = recipe(tmp_path)
    [first] = lease_devices(cfg, 1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == str(first.index)  # set before CUDA starts
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")  # as in another job's process
    [second] = lease_devices(cfg, 1)
    assert {first.index, second.index} == {0, 1}
    assert lease_devices(parse_train_args(["--device", "cpu"]), 1) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # SLURM's choice wins
    assert lease_devices(cfg, 1) is None
    first.release()
    second.release()


@needs_fmnist
@pytest.mark.slow
def test_live_run_explains_itself_in_mlflow(tmp_path, monkeypatch):
    """A run logged live carries the environment it ran in (resolved device, CPU model,
    threads, precision) as env.* tags and in metrics.json, the same record a later
    `tracking sync` reads; --mlflow-system-metrics adds MLflow's system/* metrics."""
    from mlflow import MlflowClient
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = recipe(tmp_path, "run", "--device", "auto", "--mlflow-system-metrics")
    cfg.mlflow_uri = uri
    metrics = train_mod.run(cfg)
    env = metrics["environment"]
    assert env["device"] == "cpu" and env["cpu_model"] and env["precision"] == "fp32"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["environment"] == env
    client = MlflowClient(uri)
    run = client.get_run(json.loads((tmp_path / "run" / "mlflow_run.json").read_text())["run_id"])
    tags = run.data.tags
    assert tags["env.device"] == "cpu" and tags["env.cpu_model"] == env["cpu_model"]
    assert tags["env.device_name"] == env["device_name"] and tags["env.threads"] == str(env["threads"])
    assert "mlflow_system_metrics" not in run.data.params and "device" not in run.data.params
    assert "system/cpu_utilization_percentage" in run.data.metrics
