"""The torch-free cost model (locallearn/recipe/cost.py) against what torch counts.

For networks of every kind (mlp, VGG with max-pools, the STL-10 7x7/2 stem, an MLP
head, the CIFAR ResNets split in K local modules), every local loss (pred, sim, predsim, bio, the unsupervised terms) and global
backprop / --no-detach, one real fused training step and one evaluation forward pass
run under torch's FlopCounterMode; the counted multiply-adds (FLOP / 2) per example
must equal cost.network_cost's train_macs and eval_macs within TOLERANCE, the local
heads' forward (a training forward less an evaluation one) its head_macs, the built
network's parameters its backbone_params and head_params, and every layer's output
shape must be the one the real layer returns (the pipeline sizes its message buffers
from them). The ResNets are counted with every method's heads (DGL, InfoPro, AugLocal,
the paper's)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import counted
from locallearn.recipe.config import parse_train_args
from locallearn.methods import registry
from locallearn.recipe.archspec import hidden_blocks
from locallearn.recipe.config import stage_count_error
from locallearn.recipe.cost import network_cost
from locallearn.data.datasets import SPECS
from locallearn.nets.models import build_model

TOLERANCE = 1e-9  # relative: the two agree exactly on every case below (float sums aside)

SMALL_VGG = ["--feat-mult", "0.0625", "--dim-in-decoder", "256", "--num-hidden", "32"]
CASES = {
    "mlp-backprop": ["--model", "mlp", "--dataset", "MNIST", "--num-layers", "3", "--num-hidden", "64", "--backprop"],
    "mlp-pred": ["--model", "mlp", "--dataset", "FashionMNIST", "--num-layers", "2", "--num-hidden", "64",
                 "--loss-sup", "pred"],
    "mlp-predsim": ["--model", "mlp", "--dataset", "CIFAR100", "--num-layers", "2", "--num-hidden", "64"],
    "mlp-sim-no-detach": ["--model", "mlp", "--dataset", "MNIST", "--num-layers", "2", "--num-hidden", "64",
                          "--loss-sup", "sim", "--no-detach"],
    "vgg8b-predsim": ["--model", "vgg8b", "--dataset", "CIFAR10", *SMALL_VGG],
    "vgg8b-backprop": ["--model", "vgg8b", "--dataset", "CIFAR10", "--backprop", *SMALL_VGG],
    "vgg6a-sim-head0": ["--model", "vgg6a", "--dataset", "KuzushijiMNIST", "--loss-sup", "sim",
                        "--num-layers", "0", *SMALL_VGG],
    "vgg8b-stl10-stem": ["--model", "vgg8b", "--dataset", "STL10", "--feat-mult", "0.03125",
                         "--dim-in-decoder", "512", "--num-hidden", "32"],
    "vgg11b-bio-predsim": ["--model", "vgg11b", "--dataset", "SVHN", "--bio", *SMALL_VGG],
    "vgg8-unsup-sim": ["--model", "vgg8", "--dataset", "CIFAR10", "--loss-unsup", "sim", "--alpha", "0.5",
                       *SMALL_VGG],
    "vgg8b-unsup-recon-no-std": ["--model", "vgg8b", "--dataset", "MNIST", "--loss-unsup", "recon", "--alpha", "0.5",
                                "--no-similarity-std", "--num-layers", "2", *SMALL_VGG],
    "mlp-unsup-recon": ["--model", "mlp", "--dataset", "MNIST", "--num-layers", "3", "--num-hidden", "64",
                        "--loss-unsup", "recon", "--alpha", "0.5", "--loss-sup", "pred"],
    # the CIFAR ResNets cut into K local modules, every method's heads (docs/methods.md)
    "resnet32-bp": ["--model", "resnet32", "--dataset", "CIFAR10", "--local-modules", "1"],
    "resnet32-dgl": ["--model", "resnet32", "--dataset", "CIFAR10", "--method", "dgl"],
    "resnet32-dgl-k4-fmnist": ["--model", "resnet32", "--dataset", "FashionMNIST", "--method", "dgl",
                               "--local-modules", "4"],
    "resnet32-infopro": ["--model", "resnet32", "--dataset", "CIFAR10", "--method", "infopro", "--ixx-1", "5"],
    "resnet32-infopro-k8-fmnist": ["--model", "resnet32", "--dataset", "FashionMNIST", "--method", "infopro",
                                   "--local-modules", "8"],
    "resnet32-auglocal-d3": ["--model", "resnet32", "--dataset", "CIFAR10", "--method", "auglocal",
                             "--aux-depth", "3", "--pyramid-coeff", "0.5"],
    "resnet32-auglocal-d1-fmnist": ["--model", "resnet32", "--dataset", "FashionMNIST", "--method", "auglocal",
                                    "--aux-depth", "1", "--local-modules", "6"],
    "resnet32-predsim": ["--model", "resnet32", "--dataset", "CIFAR10", "--loss-sup", "predsim",
                         "--dim-in-decoder", "512"],
    "resnet32-sim-unsup-sim": ["--model", "resnet32", "--dataset", "SVHN", "--loss-sup", "sim",
                               "--loss-unsup", "sim", "--alpha", "0.3", "--local-modules", "5"],
    # the methods' heads on the paper's networks
    "vgg8b-dgl": ["--model", "vgg8b", "--dataset", "CIFAR10", "--method", "dgl", *SMALL_VGG],
    "vgg8b-infopro-head0": ["--model", "vgg8b", "--dataset", "CIFAR10", "--method", "infopro",
                            "--num-layers", "0", *SMALL_VGG],
    "vgg11b-auglocal-d2": ["--model", "vgg11b", "--dataset", "SVHN", "--method", "auglocal", "--aux-depth", "2",
                           "--pyramid-coeff", "0.5", "--num-layers", "2", *SMALL_VGG],
    "vgg8b-stl10-auglocal": ["--model", "vgg8b", "--dataset", "STL10", "--method", "auglocal", "--aux-depth", "3",
                             "--feat-mult", "0.03125", "--num-hidden", "32"],
    "mlp-dgl": ["--model", "mlp", "--dataset", "MNIST", "--num-layers", "3", "--num-hidden", "64", "--method", "dgl"],
    "mlp-auglocal": ["--model", "mlp", "--dataset", "FashionMNIST", "--num-layers", "3", "--num-hidden", "64",
                     "--method", "auglocal", "--aux-depth", "1"],
    "resnet110-auglocal-d3": ["--model", "resnet110", "--dataset", "CIFAR10", "--method", "auglocal",
                              "--aux-depth", "3", "--pyramid-coeff", "0.5"],
}
@pytest.mark.parametrize("case", CASES)
def test_cost_model_matches_flop_counter(case):
    cfg, train, evaluate, shapes, (backbone, heads), heads_fwd = counted(CASES[case])
    cost = network_cost(cfg)
    assert cost.train_macs == pytest.approx(train, rel=TOLERANCE), case
    assert cost.eval_macs == pytest.approx(evaluate, rel=TOLERANCE), case
    assert cost.backbone_macs == cost.eval_macs
    assert cost.head_macs == pytest.approx(heads_fwd, rel=TOLERANCE, abs=1e-9), case
    assert (cost.backbone_params, cost.head_params) == (backbone, heads), case
    assert [l.shape for l in cost.layers] == shapes
    assert cost.blocks == len(build_model(cfg, 3 if cfg.dataset != "MNIST" else 1,
                                          SPECS[cfg.dataset].size, SPECS[cfg.dataset].num_classes).blocks)


def test_paper_sized_counts():
    """Counts of full-size networks, checked by hand: mlp 3x1024 on MNIST evaluates its
    weight matrices once per example; vgg8b on CIFAR-10's first conv is 32*32*3*128*9."""
    mlp = network_cost(parse_train_args(["--model", "mlp", "--dataset", "MNIST", "--num-layers", "3", "--backprop"]))
    assert mlp.eval_macs == 784 * 1024 + 2 * 1024 * 1024 + 1024 * 10
    assert mlp.train_macs == 3 * mlp.eval_macs - 784 * 1024      # no input gradient for the first layer
    vgg = network_cost(parse_train_args(["--model", "vgg8b", "--dataset", "CIFAR10", "--dim-in-decoder", "2048"]))
    first = vgg.layers[0]
    assert first.kind == "conv" and first.forward == 32 * 32 * 3 * 128 * 9 and first.shape == (128, 32, 32)
    assert first.heads > 128 * 128 * 9 * 32 * 32            # sim's extra conv dominates the heads
    assert vgg.blocks == 7


def test_cost_model_is_torch_free():
    """The workflow's plan imports it: it must not pull in torch (nor the walks it counts)."""
    code = "import sys, locallearn.recipe.cost; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_resnet_counts_by_hand():
    """ResNet-32 on CIFAR-10: their backbone's 466,906 parameters; the stem's conv is
    32*32*3*16*9 multiply-adds; K=1 has no heads."""
    bp = network_cost(parse_train_args(["--model", "resnet32", "--dataset", "CIFAR10", "--backprop"]))
    assert (bp.backbone_params, bp.head_params, bp.head_macs, bp.layers) == (466_906, 0, 0, ())
    dgl = network_cost(parse_train_args(["--model", "resnet32", "--dataset", "CIFAR10", "--method", "dgl"]))
    assert dgl.backbone_params == 466_906 and dgl.backbone_macs == bp.backbone_macs
    assert dgl.layers[0].forward == 32 * 32 * 3 * 16 * 9 and dgl.layers[0].shape == (16, 32, 32)
    assert dgl.blocks == 15
    # DGL's head after the stem: 1x1 convs at side 8, then 16*2*2 = 64 features
    assert dgl.layers[0].heads == 3 * 8 * 8 * 16 * 16 + 2 * 64 * 64 + 64 * 10


def test_stage_count_error():
    cfg = parse_train_args(["--model", "mlp", "--dataset", "MNIST", "--num-layers", "3"])
    assert stage_count_error(cfg, 1) is None and stage_count_error(cfg, 3) is None
    assert stage_count_error(cfg, 4) == "--pipeline-stages 4: the network has only 3 hidden blocks to split"
    assert "must be >= 1" in stage_count_error(cfg, 0)
    cfg.backprop = True
    assert stage_count_error(cfg, 2).startswith("--backprop cannot be combined with --pipeline-stages 2")


@pytest.mark.parametrize("argv, by_hand", [
    (["--model", "mlp", "--num-layers", "3"], 3),
    (["--model", "vgg8b", "--num-layers", "1"], 7),   # 6 convs (128 256 256 512 512 512) + 1 linear
    (["--model", "resnet32", "--method", "dgl", "--local-modules", "16"], 15),   # K - 1 modules before the output
])
def test_hidden_blocks_by_hand_and_as_the_cost_model_counts_them(argv, by_hand):
    cfg = parse_train_args(argv + ["--dataset", "CIFAR10"])
    assert hidden_blocks(cfg, registry.get(cfg.method).module_count) == by_hand == network_cost(cfg).blocks
