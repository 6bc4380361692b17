"""The field's grid as AugLocal ran it (workflow/config/peers.tsv, docs/peers.md): each row
carries only its recipe, the data as their train.py reads it, one protocol per row, a
hold-out sized per dataset and refused by the plan when it takes too much."""
from __future__ import annotations

import shlex

import pytest

from conftest import REPO
from locallearn.recipe.cells import moved_to, protocol, recipe_args
from locallearn.recipe.specs import run_spec
from locallearn.workflow import plan

PEERS = REPO / "workflow" / "config" / "peers.tsv"
# The paper's columns that a ResNet under the cosine schedule never reads: no peers command has them.
UNREAD = ("--feat-mult", "--num-layers", "--num-hidden", "--nonlin", "--dropout", "--lr-decay-milestones")
# Their train.py's data, by dataset (ChenxiangMA/AugLocal 98c90d6, train.py lines 115-151).
DATA = {
    "CIFAR10": "--crop-padding 4 --crop-fill reflect --hflip yes --pixel-mean 125.3 123.0 113.9 "
               "--pixel-std 63.0 62.1 66.7",
    "SVHN": "--svhn-split train --crop-padding 2 --hflip no --pixel-mean 127.5 127.5 127.5 "
            "--pixel-std 127.5 127.5 127.5",
    "STL10": "--crop-padding 4 --hflip yes --pixel-mean 127.5 127.5 127.5 --pixel-std 127.5 127.5 127.5 "
             "--num-classes 100",
}


@pytest.fixture(scope="module")
def presets():
    config = plan.load_config()
    return config, plan.make_presets(config, plan.load_cells(plan.cells_path(config)))


def test_a_peers_command_is_run_sh_line_by_line(presets):
    """run.sh's first line: python train.py --dataset cifar10 --model resnet --layers 32 --cos_lr
    --local_module_num 16 --epochs 400 --batch_size 1024 --rule AugLocal --aux_net_depth 1
    --pyramid --pyramid_coeff 0.5 (train.py: lr 0.8, SGD, Nesterov momentum 0.9, wd 1e-4)."""
    _, p = presets
    row = next(r for r in p["peers"].rows if r["cell"] == "cifar10-resnet32-k16-auglocal-d1")
    assert shlex.join(p["peers"].args(row)) == (
        "--model resnet32 --dataset CIFAR10 --lr 0.8 --epochs 400 --method auglocal --optim sgd --momentum 0.9 "
        "--nesterov --weight-decay 1e-4 --lr-schedule cosine-warmup --batch-size 1024 " + DATA["CIFAR10"]
        + " --local-modules 16 --aux-depth 1 --pyramid-coeff 0.5")


def test_every_row_carries_its_recipe_and_nothing_more(presets):
    config, p = presets
    rows = p["peers"].rows
    assert len(rows) == 90 and {protocol(r) for r in rows} == {"whole", "holdout"}
    for r in rows:
        args = p["peers"].args(r)
        text = " ".join(args)
        assert not any(flag in args for flag in UNREAD), r["cell"]
        assert ("--dim-in-decoder" in args) == (r["loss"] == "predsim"), r["cell"]
        assert DATA[r["dataset"]] in text, r["cell"]
        held = f"--val-examples {config['peers']['holdout'][r['dataset']]}"
        assert (held in text) == (protocol(r) == "holdout") and text.count("--val-examples") <= 1, r["cell"]
        assert r["cell"].endswith("-holdout") == (protocol(r) == "holdout")
        assert not r["published_error"] and "2402.17318" in r["published_source"]
    # every method of a whole row has its holdout twin, with the same recipe but the hold-out
    whole = {r["cell"]: r for r in rows if protocol(r) == "whole"}
    for r in rows:
        if protocol(r) == "holdout":
            assert recipe_args(whole[r["cell"].removesuffix("-holdout")]) == recipe_args(r)


def test_infopro_weights_and_assumptions_are_those_of_their_sources(presets):
    _, p = presets
    rows = {r["cell"]: r for r in p["peers"].rows}

    def weights(cell):
        args = recipe_args(rows[cell])
        return [args[args.index(f) + 1] for f in ("--ixx-1", "--ixy-1", "--ixx-2", "--ixy-2")]
    # InfoPro's comand.sh, K=16 (blackfeather-wang/InfoPro-Pytorch a38362a): svhn, stl10 for ResNet-110
    assert weights("svhn-resnet110-k55-infopro") == ["5", "0.2", "0.5", "1"]
    assert weights("stl10-resnet110-k55-infopro") == ["20", "0.5", "10", "0.1"]
    assert weights("cifar10-resnet110-k55-infopro") == ["5", "0", "0.5", "1"]          # run.sh
    for ds in ("cifar10", "svhn", "stl10"):                                              # run.sh's CIFAR-10 ones
        assert weights(f"{ds}-resnet32-k16-infopro") == ["5", "0.05", "0.2", "0.5"]
    assert "none published for ResNet-32 on svhn" in rows["svhn-resnet32-k16-infopro"]["assumption"]
    assert "'sl10'" in rows["stl10-resnet32-k1-bp"]["assumption"] and "400 epochs" in rows["svhn-resnet32-k1-bp"][
        "assumption"]
    assert "README" in rows["cifar10-resnet32-k16-auglocal-d2"]["assumption"]
    assert not rows["cifar10-resnet32-k1-bp"]["assumption"]                             # run.sh says it all


def test_the_data_their_code_reads(presets):
    _, p = presets
    rows = {r["cell"]: r for r in p["peers"].rows}
    spec = run_spec(plan.recipe(rows["svhn-resnet32-k1-bp"]))
    assert (spec.train_size, spec.crop_padding, spec.hflip, spec.mean) == (73257, 2, False, (0.5, 0.5, 0.5))
    spec = run_spec(plan.recipe(rows["stl10-resnet110-k55-dgl"]))
    assert (spec.num_classes, spec.crop_padding, spec.hflip) == (100, 4, True)
    assert run_spec(plan.recipe(rows["cifar10-resnet32-k1-bp"])).crop_fill == "reflect"
    # a row moved onto another dataset (peers-quick) leaves its dataset's pixels and split behind
    moved = moved_to(rows["svhn-resnet32-k1-bp"], "FashionMNIST", "fmnist")
    assert "--pixel-mean" not in moved["extra_flags"] and "--svhn-split" not in moved["extra_flags"]
    assert "--crop-padding 2 --hflip no" in moved["extra_flags"]


@pytest.mark.parametrize("overrides, message", [
    ({"peers": {"holdout": {"STL10": 5000}}},
     "config key 'peers.holdout.STL10': 5000 held-out examples is more than 10% of the 5,000 training "
     "examples of cell stl10-resnet32-k1-bp-holdout (at most 500)"),
    ({"peers": {"holdout": {"SVHN": 7326}}}, "of the 73,257 training examples of cell svhn-resnet32-k1-bp-holdout "
                                             "(at most 7,325)"),
    ({"peers_quick": {"holdout": 52}}, "config key 'peers_quick.holdout': 52 held-out examples is more than 10% "
                                       "of the 512 training examples"),
])
def test_a_holdout_over_a_tenth_is_refused_before_any_job(overrides, message):
    config = plan.load_config(overrides=overrides)
    presets = plan.make_presets(config, plan.load_cells(plan.cells_path(config)))
    name = "peers-quick" if "peers_quick" in overrides else "peers"
    with pytest.raises(plan.PlanError) as e:
        presets[name]
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_holdout_row_without_its_datasets_holdout_is_named(tmp_path):
    config = plan.load_config()
    config["peers"]["holdout"] = {"CIFAR10": 5000, "STL10": 500}
    presets = plan.make_presets(config, plan.load_cells(plan.cells_path(config)))
    with pytest.raises(plan.PlanError, match="config key 'peers.holdout.SVHN': cell svhn-resnet32-k1-bp-holdout "
                                             "trains with a hold-out, but none is set for SVHN"):
        presets["peers"]
