"""`--precision fp32 | tf32 | bf16` (issue 18): the switches really set, the choice
recorded in metrics.json and MLflow, and float32 (the default) leaving the
config hash of every committed run unchanged. What TF32 and bf16 do to the numbers
needs a GPU (docs/precision.md); here the CPU checks the plumbing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import REPO, needs_fmnist
from locallearn.host import precision
from locallearn.train import trainer as train_mod
from locallearn.recipe.cells import read_cells, recipe_args
from locallearn.recipe.config import config_hash, parse_train_args
from locallearn.track.records import mlflow_tags


@pytest.fixture
def restore_switches():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_apply_sets_torch_switches(restore_switches):
    torch.backends.cudnn.allow_tf32 = True       # PyTorch's own default: TF32 convolutions
    assert precision.apply("fp32") == {"name": "fp32", "autocast": None,
                                       "cuda_matmul_tf32": False, "cudnn_conv_tf32": False}
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "highest"
    assert precision.apply("tf32")["cudnn_conv_tf32"] is True
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert precision.apply("bf16") == {"name": "bf16", "autocast": "bfloat16",
                                       "cuda_matmul_tf32": False, "cudnn_conv_tf32": False}
    with precision.autocast("bf16", torch.device("cpu"))():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with precision.autocast("tf32", torch.device("cpu"))():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        precision.apply("fp16")


def test_flag_choices_and_graphs():
    assert parse_train_args(["--precision", "tf32"]).precision == "tf32"
    assert parse_train_args([]).precision == "fp32"
    from locallearn.errors import ConfigError
    with pytest.raises(ConfigError, match="--precision: unknown value 'fp16' \\(known: fp32, tf32, bf16\\)"):
        parse_train_args(["--precision", "fp16"])
    assert [p for p in precision.PRECISIONS if precision.graphable(p)] == ["fp32", "tf32"]


def test_default_keeps_the_committed_config_hashes():
    """The committed runs were trained before --precision tf32 existed; the default
    (fp32) must still hash their recipes to the config_hash they recorded, or every
    finished cell would refuse its checkpoint and be retrained."""
    rows = {r["cell"]: r for r in read_cells(REPO / "workflow" / "config" / "cells.tsv")}
    committed = sorted((REPO / "results" / "full" / "runs").glob("*/seed*/metrics.json"))
    assert committed
    for path in committed:
        m = json.loads(path.read_text())
        cfg = parse_train_args(recipe_args(rows[path.parts[-3]]) + ["--seed", str(m["seed"])])
        assert config_hash(cfg) == m["config_hash"], path


@needs_fmnist
def test_run_records_its_precision(tmp_path, restore_switches):
    def run(name, *extra):
        return train_mod.run(parse_train_args([
            "--model", "mlp", "--dataset", "FashionMNIST", "--num-layers", "1", "--num-hidden", "32",
            "--epochs", "1", "--max-train-examples", "256", "--max-test-examples", "128",
            "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / name), "--mlflow-uri", "", *extra]))
    tf32 = run("tf32", "--precision", "tf32")
    assert tf32["precision"] == {"name": "tf32", "autocast": None, "cuda_matmul_tf32": True, "cudnn_conv_tf32": True}
    assert tf32["config"]["precision"] == "tf32"
    assert mlflow_tags(tf32)["env.precision"] == "tf32"            # MLflow: param precision, tag env.precision
    fp32 = run("fp32")
    assert fp32["precision"]["cudnn_conv_tf32"] is False and not torch.backends.cudnn.allow_tf32
    assert fp32["config_hash"] != tf32["config_hash"]       # another precision is another run
    on_disk = json.loads(Path(tmp_path / "fp32" / "metrics.json").read_text())
    assert on_disk["precision"]["name"] == "fp32" and mlflow_tags(on_disk)["env.precision"] == "fp32"
