"""The three reported errors (issue 26): last epoch, best test epoch, and the epoch a
held-out validation split picks (--val-examples), recorded in metrics.json and MLflow;
--val-examples 0 leaves every earlier run's config hash as it was."""
from __future__ import annotations

import json

import numpy as np

from conftest import needs_fmnist
from locallearn.train import trainer as train_mod
from locallearn.recipe.config import config_hash, parse_train_args
from locallearn.data.batches import held_out
from locallearn.runs.selection import ERRORS, error_of, reported_errors


def test_reported_errors_by_hand():
    history = [{"epoch": 1, "test_error": 30.0, "val_error": 31.0},
               {"epoch": 2, "test_error": 20.0, "val_error": 25.0},
               {"epoch": 3, "test_error": 22.0, "val_error": 24.0},
               {"epoch": 4, "test_error": 20.0, "val_error": 24.0},   # ties: the earliest epoch wins
               {"epoch": 5, "test_error": 23.0, "val_error": 26.0}]
    assert reported_errors(history) == {"best_test_error": 20.0, "best_test_epoch": 2,
                                        "val_selected_test_error": 22.0, "val_selected_epoch": 3,
                                        "val_selected_val_error": 24.0}
    no_val = [{k: v for k, v in e.items() if k != "val_error"} for e in history]
    assert reported_errors(no_val) == {"best_test_error": 20.0, "best_test_epoch": 2}
    # a metrics.json recorded before these keys: the best test epoch from its history
    old = {"test_error": 23.0, "history": no_val}
    assert [error_of(old, k) for k in ERRORS] == [23.0, 20.0, None]


def test_held_out_split_is_fixed_and_disjoint():
    train, val, record = held_out(1000, 100)
    again = held_out(1000, 100)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1]) and record == again[2]
    assert len(val) == 100 and len(train) == 900 and not set(train) & set(val)
    assert sorted(set(train) | set(val)) == list(range(1000))
    assert list(val) == sorted(val) and record["examples"] == 100 and record["of"] == 1000
    assert len(record["indices_sha256"]) == 64


def test_val_examples_enters_the_hash_only_when_set():
    base = ["--model", "mlp", "--dataset", "FashionMNIST"]
    assert config_hash(parse_train_args(base)) == config_hash(parse_train_args(base + ["--val-examples", "0"]))
    assert config_hash(parse_train_args(base)) != config_hash(parse_train_args(base + ["--val-examples", "100"]))


@needs_fmnist
def test_run_records_three_errors_in_metrics_and_mlflow(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = parse_train_args([
        "--model", "mlp", "--dataset", "FashionMNIST", "--num-layers", "1", "--num-hidden", "64",
        "--epochs", "3", "--lr-decay-milestones", "100", "--max-train-examples", "700",
        "--max-test-examples", "300", "--val-examples", "200", "--data-dir", str(tmp_path / "data"),
        "--out", str(tmp_path / "run"), "--mlflow-uri", uri, "--threads", "1"])
    m = train_mod.run(cfg)
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    history = on_disk["history"]
    assert all("val_error" in e and "val_loss" in e for e in history)
    best = min(history, key=lambda e: (e["test_error"], e["epoch"]))
    chosen = min(history, key=lambda e: (e["val_error"], e["epoch"]))
    assert on_disk["test_error"] == history[-1]["test_error"]
    assert (on_disk["best_test_error"], on_disk["best_test_epoch"]) == (best["test_error"], best["epoch"])
    assert (on_disk["val_selected_test_error"], on_disk["val_selected_epoch"]) == (chosen["test_error"],
                                                                                   chosen["epoch"])
    assert on_disk["val_split"] == held_out(700, 200)[2]     # the choice recorded
    assert on_disk["head_params"] == on_disk["params_total"] - on_disk["params_backprop"] > 0
    assert m["best_test_error"] == on_disk["best_test_error"]

    from mlflow.tracking import MlflowClient
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("locallearn").experiment_id])[0]
    for key in ("best_test_error", "best_test_epoch", "val_selected_test_error", "val_selected_epoch",
                "head_params"):
        assert run.data.metrics[key] == on_disk[key]
    assert len(client.get_metric_history(run.info.run_id, "val_error")) == 3


def test_a_number_is_an_int_or_float_not_a_bool_nor_nan():
    """The one rule of what a recorded number is (runs/runstate.is_number), by hand: a NaN
    validation error (a held-out pass that diverged) never selects an epoch, and a NaN
    recorded error counts as no error."""
    from locallearn.runs.runstate import is_number
    values = (0, 3, 2.5, float("inf"), True, False, float("nan"), "3", None, [1])
    assert [is_number(v) for v in values] == [True, True, True, True, False, False, False, False, False, False]
    history = [{"epoch": 1, "test_error": 20.0, "val_error": float("nan")},
               {"epoch": 2, "test_error": 15.0, "val_error": 14.0}]
    assert reported_errors(history)["val_selected_epoch"] == 2
    assert error_of({"test_error": float("nan")}, "test_error") is None
