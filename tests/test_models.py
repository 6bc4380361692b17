"""Networks: parameter counts against the paper, the decoder pooling rule, and every
seed README recipe accepted verbatim by `locallearn describe`."""
from __future__ import annotations

import re
import shlex

import pytest

from conftest import CELLS_TSV, REPO
from locallearn.recipe.cells import published_params_millions, read_cells, recipe_args
from locallearn.nets.models import describe
from locallearn.recipe.config import parse_train_args
from locallearn.nets.models import MODELS, VGG_CONFIGS

ROWS = read_cells(CELLS_TSV)

# docs/method.md: the one published count inconsistent with its own architecture.
TRUE_COUNT_MILLIONS = {"CIFAR100/mlp": 27.5}


@pytest.mark.parametrize("row", ROWS, ids=[r["cell"] for r in ROWS])
def test_params_match_published(row):
    d = describe(parse_train_args(recipe_args(row)))
    published = published_params_millions(row)
    if published is None:  # the bio rows publish no count
        return
    expected = TRUE_COUNT_MILLIONS.get(f"{row['dataset']}/{row['model']}", published)
    assert round(d["params_backprop"] / 1e6, 1) == expected
    assert d["params_total"] >= d["params_backprop"]


@pytest.mark.parametrize("cell,exact", [
    ("mnist-mlp-backprop", 2_919_434), ("cifar10-vgg8b-backprop", 8_903_434),
    ("cifar10-vgg11b-x3-backprop", 91_276_298), ("cifar10-mlp-backprop", 27_273_010),
    ("stl10-vgg8b-backprop", 11_540_234), ("cifar100-mlp-backprop", 27_543_100),
])
def test_exact_counts_of_spec(cell, exact):
    row = next(r for r in ROWS if r["cell"] == cell)
    assert describe(parse_train_args(recipe_args(row)))["params_backprop"] == exact


def test_decoder_pooling_vgg8b_cifar_2048():
    row = next(r for r in ROWS if r["cell"] == "cifar10-vgg8b-predsim")
    layers = describe(parse_train_args(recipe_args(row)))["layers"]
    conv = [layer for layer in layers if layer["kind"] == "conv"]
    assert [tuple(layer["pool_kernel"]) for layer in conv] == [(8, 8), (16, 8), (8, 4), (8, 8), (4, 4), (2, 2)]
    assert all(layer["decoder_in"] == 2048 for layer in conv)


def test_decoder_pooling_mnist_1024():
    row = next(r for r in ROWS if r["cell"] == "mnist-vgg8b-predsim")
    d = describe(parse_train_args(recipe_args(row)))
    conv = [layer for layer in d["layers"] if layer["kind"] == "conv"]
    assert all(layer["decoder_in"] == 1024 for layer in conv)
    assert d["input_shape"] == [1, 28, 28] and d["num_classes"] == 10


def test_stl10_uses_7x7_stride2_stem():
    from locallearn.nets.models import build_model
    row = next(r for r in ROWS if r["cell"] == "stl10-vgg8b-predsim")
    model = build_model(parse_train_args(recipe_args(row)), 3, 96, 10)
    stem = model.blocks[0].layer
    assert stem.kernel_size == (7, 7) and stem.stride == (2, 2) and stem.padding == (3, 3)
    assert model.blocks[1].layer.kernel_size == (3, 3)


def test_every_vgg_config_builds_and_num_layers_zero():
    for name in VGG_CONFIGS:
        assert name in MODELS
        d = describe(parse_train_args(["--model", name, "--dataset", "CIFAR10", "--num-layers", "0"]))
        assert d["params_backprop"] > 0 and all(layer["kind"] == "conv" for layer in d["layers"])


def seed_readme_commands() -> list[list[str]]:
    """The seed README's `python train.py ...` recipes, each also with the variants the
    README says to append (pred, sim, backprop, bio, cutout)."""
    text = (REPO / "tests" / "fixtures" / "seed_README.md").read_text()
    base = [shlex.split(m) for m in re.findall(r"^python train\.py (.*)$", text, flags=re.M)]
    variants = [[], ["--loss-sup", "pred"], ["--loss-sup", "sim"], ["--backprop"], ["--bio"],
                ["--cutout", "--length", "14"]]
    return [b + v for b in base for v in variants]


@pytest.mark.slow
def test_seed_readme_recipes_all_parse():
    cmds = seed_readme_commands()
    assert len(cmds) == 5 * 6
    for argv in cmds:
        d = describe(parse_train_args(argv))
        assert d["params_backprop"] > 0


@pytest.mark.parametrize("argv, zeroed", [
    (["--model", "mlp"], True),
    (["--model", "vgg8b", "--num-layers", "1"], True),
    (["--model", "vgg8b", "--num-layers", "0"], False),       # a plain nn.Linear in the reference
    (["--model", "vgg8b", "--num-layers", "0", "--backprop"], False),
    (["--model", "mlp", "--backprop"], False),
])
def test_output_layer_is_zeroed_where_the_reference_zeroes_it(argv, zeroed):
    """The reference zeroes the output layer of its `Net` (the mlp, a VGG's head) in local
    mode; a VGG with --num-layers 0 ends in a plain nn.Linear, default-initialised."""
    from locallearn.nets.models import build_model
    cfg = parse_train_args(argv + ["--dataset", "MNIST", "--feat-mult", "0.0625", "--num-hidden", "32"])
    out = build_model(cfg, 1, 28, 10).output
    assert bool((out.weight == 0).all()) == zeroed
    bound = 1 / out.in_features ** 0.5  # nn.Linear's default: uniform within +-1/sqrt(fan_in)
    assert zeroed or (out.weight.abs().max() <= bound and out.weight.std() > bound / 4)


def test_pre_act_is_accepted_and_changes_nothing_as_in_the_reference():
    """The reference reads --pre-act only in its ResNet blocks; its mlp and VGG blocks
    are post-activation whatever the flag says. Same network, same recipe hash."""
    import torch

    from locallearn.recipe.config import config_hash
    from locallearn.nets.models import build_model
    argv = ["--model", "vgg8b", "--dataset", "MNIST", "--feat-mult", "0.0625", "--num-hidden", "32"]
    plain, pre = parse_train_args(argv), parse_train_args(argv + ["--pre-act"])
    assert pre.pre_act and config_hash(pre) == config_hash(plain)
    nets = []
    for cfg in (plain, pre):
        torch.manual_seed(0)
        nets.append(build_model(cfg, 1, 28, 10))
    assert str(nets[0]) == str(nets[1])
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        assert torch.equal(a, b)


def test_the_registry_builds_every_model_name():
    """config.py checks --model against specs.MODEL_NAMES without torch; the registry
    must build exactly those networks."""
    from locallearn.recipe.specs import MODEL_NAMES
    assert set(MODELS) == set(MODEL_NAMES)
