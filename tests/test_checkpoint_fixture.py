"""A checkpoint written by an earlier revision of the code still resumes.

tests/fixtures/checkpoint/mnist-mlp-predsim/ holds what `locallearn train` left in its
run folder when killed after epoch 1 of 2 (LOCALLEARN_FAULT=kill-after-checkpoint:1):
checkpoint.pt and start.json, written before the package was reorganised into
subpackages. The run was made with

    write_fake("MNIST", data, n_train=200, n_test=50)     # tests/fake_data.py
    locallearn train --model mlp --dataset MNIST --num-layers 2 --num-hidden 16 \
        --epochs 2 --lr-decay-milestones 10 --device cpu --threads 1 --seed 1 \
        --data-dir DATA --mlflow-uri '' --out RUN

and expected.json holds the history of that run resumed to the end by the same code
(equal to an uninterrupted run's). Today's code must take the folder as its own run
(same recipe hash), resume after epoch 1, and end with the same numbers.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fake_data import write_fake
from locallearn.cli.main import main

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "checkpoint" / "mnist-mlp-predsim"


def test_an_old_checkpoint_resumes_to_the_same_numbers(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    write_fake("MNIST", data, n_train=200, n_test=50)
    shutil.copytree(FIXTURE, run)
    (run / "expected.json").unlink()
    expected = json.loads((FIXTURE / "expected.json").read_text())
    rc = main(["train", "--model", "mlp", "--dataset", "MNIST", "--num-layers", "2", "--num-hidden", "16",
               "--epochs", "2", "--lr-decay-milestones", "10", "--device", "cpu", "--threads", "1",
               "--seed", "1", "--data-dir", str(data), "--mlflow-uri", "", "--out", str(run)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "resuming after epoch 1 of 2" in out + err, out + err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["config_hash"] == expected["config_hash"]
    assert len(metrics["history"]) == 2
    for got, want in zip(metrics["history"], expected["history"]):
        for key, value in want.items():
            if key == "local":
                assert [(e["layer"], e["error"]) for e in got[key]] == [(e["layer"], e["error"]) for e in value]
                assert [e["loss"] for e in got[key]] == pytest.approx([e["loss"] for e in value], rel=1e-5)
            else:
                assert got[key] == pytest.approx(value, rel=1e-5), (got["epoch"], key)
