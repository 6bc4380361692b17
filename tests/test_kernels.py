"""--channels-last and --cudnn-benchmark (host/precision.py): what they set, that they leave
the config hash alone, and that a channels-last step computes the same update as the
default layout to within float32 rounding (CPU; the GPU speed is not claimed here)."""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from locallearn.recipe.config import config_hash, parse_train_args
from locallearn.recipe.specs import SPECS
from locallearn.train.engines import FusedEngine
from locallearn.train.placement import make_model
from locallearn.host.precision import configure

VGG = ["--model", "vgg8b", "--dataset", "CIFAR10", "--feat-mult", "0.0625", "--dim-in-decoder", "256",
       "--num-hidden", "32", "--dropout", "0.1", "--device", "cpu"]


def steps(*extra, n=3):
    cfg = parse_train_args(VGG + list(extra))
    spec = SPECS[cfg.dataset]
    model = make_model(cfg, spec, torch.device("cpu"))
    engine = FusedEngine(cfg, model, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    model.train()
    model.seed_dropout(cfg.seed, 1)
    no_autocast = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731
    outputs = []
    for _ in range(n):
        x = torch.randn(16, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (16,), generator=g)
        logits, ce, losses, _ = engine.step(x, y, F.one_hot(y, 10).float(), no_autocast)
        outputs.append(torch.cat([logits.detach().flatten(), ce.detach().view(1), torch.stack(losses)]))
    return cfg, model, torch.cat(outputs)


def test_channels_last_same_update_within_rounding():
    saved = torch.backends.cudnn.benchmark
    try:
        cfg, nchw, out = steps()
        cfg_cl, nhwc, out_cl = steps("--channels-last", "--cudnn-benchmark")
        assert torch.backends.cudnn.benchmark is True
        assert config_hash(cfg) == config_hash(cfg_cl)           # not part of the recipe
        conv = nhwc.blocks[0].layer.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
        assert nchw.blocks[0].layer.weight.is_contiguous()
        # Each step's logits, output loss and local losses. (Not the parameters: a conv
        # bias before BatchNorm has a gradient of pure rounding noise, which Adam turns
        # into steps of size lr whatever the layout.)
        assert torch.allclose(out, out_cl, rtol=1e-4, atol=1e-5), (out - out_cl).abs().max()
        steps()                                                     # the default turns autotuning off again
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = saved


def test_configure_converts_4d_conv_weights_and_leaves_2d_ones():
    """precision.configure with --channels-last: a conv's 4-D weight becomes channels-last;
    a 2-D (linear) weight, beside a conv or in a network without one, is left as it was
    (same layout, same values) and does not make it raise; without the flag nothing moves."""
    saved = torch.backends.cudnn.benchmark
    try:
        on = SimpleNamespace(channels_last=True, cudnn_benchmark=False)
        mixed = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
        linear = mixed[2].weight.detach().clone()
        assert configure(on, mixed) is mixed
        conv = mixed[0].weight
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
        assert mixed[2].weight.is_contiguous() and torch.equal(mixed[2].weight, linear)

        mlp = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
        before = [p.detach().clone() for p in mlp.parameters()]
        assert configure(on, mlp) is mlp
        assert all(p.is_contiguous() and torch.equal(p, b) for p, b in zip(mlp.parameters(), before))

        off = nn.Sequential(nn.Conv2d(3, 4, 3))
        configure(SimpleNamespace(channels_last=False, cudnn_benchmark=False), off)
        assert off[0].weight.is_contiguous()
    finally:
        torch.backends.cudnn.benchmark = saved
