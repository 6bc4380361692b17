"""Networks, registered by name: the paper's `mlp` and VGG family (docs/method.md,
Networks), and the CIFAR ResNets of the local-learning peers (nets/resnet.py, docs/methods.md).

A network is a `LocalNet` (layers/localnet.py): a flat list of layers, each a hidden `Block`
(conv or linear, with its own `LocalHead`) or a parameter-free step (max-pool,
flatten), followed by the output `Linear`.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ..recipe.archspec import MaxPool, block_sites, vgg_flat, vgg_layers
from ..layers.local_losses import LocalHead
from ..layers.localnet import Block, LocalNet
from ..methods import registry
from .resnet import build_resnet
from ..recipe.specs import MODEL_NAMES, RESNET_BLOCKS, VGG_CONFIGS, run_spec

MODELS: dict[str, Callable] = {}


def register(name: str):
    """Register a network builder as `--model name`; the name must be one of the
    architecture tables' (recipe/specs.py MODEL_NAMES, what --model and the grid accept)."""
    if name not in MODEL_NAMES:
        raise ValueError(f"model {name!r} is not in recipe/specs.py's MODEL_NAMES")

    def add(fn):
        MODELS[name] = fn
        return fn
    return add


def _local(cfg) -> bool:
    return not cfg.backprop


def _head(cfg, index: int, paper_head: Callable[[], nn.Module]) -> nn.Module | None:
    """Hidden block `index`'s local head: none under --backprop; the paper's LocalHead
    (built by `paper_head`) under --method paper; else the method's head (methods/) at
    the block's archspec.block_sites Site."""
    if not _local(cfg):
        return None
    if cfg.method == "paper":
        return paper_head()
    return registry.get(cfg.method).build_head(cfg, block_sites(cfg, run_spec(cfg))[index])


def _linear_blocks(cfg, n_in: int, num_classes: int, start: int) -> tuple[list[Block], int]:
    """The mlp, or a VGG's classifier head: the reference builds both as its `Net`,
    whose first block is a first layer (no recon loss) even on top of a VGG's convs."""
    blocks = []
    for i in range(cfg.num_layers):
        lin = nn.Linear(n_in, cfg.num_hidden)
        head = _head(cfg, start + i, lambda: LocalHead(cfg, cfg.num_hidden, None, n_in, num_classes, first=i == 0))
        blocks.append(Block(lin, cfg.num_hidden, conv=False, cfg=cfg, head=head, index=start + i))
        n_in = cfg.num_hidden
    return blocks, n_in


def _output_layer(cfg, n_in: int, num_classes: int) -> nn.Linear:
    out = nn.Linear(n_in, num_classes)
    # The reference zeroes the output layer of its `Net` (the mlp, a VGG's classifier
    # head) in local mode. A VGG with --num-layers 0 has no Net: its output is a plain
    # nn.Linear there, which keeps PyTorch's default initialisation.
    if _local(cfg) and cfg.num_layers > 0:
        nn.init.zeros_(out.weight)
    return out


@register("mlp")
def build_mlp(cfg, channels: int, size: int, num_classes: int) -> LocalNet:
    blocks, n_out = _linear_blocks(cfg, channels * size * size, num_classes, start=0)
    return LocalNet([nn.Flatten(), *blocks], _output_layer(cfg, n_out, num_classes), num_classes)


def build_vgg(name: str, cfg, channels: int, size: int, num_classes: int) -> LocalNet:
    layers: list[nn.Module] = []
    walk = vgg_layers(name, cfg.feat_mult, channels, size)
    for item in walk:
        if isinstance(item, MaxPool):
            layers.append(nn.MaxPool2d(2, 2))
            continue
        geometry = (item.kernel, item.stride, item.padding)
        head = _head(cfg, item.index, lambda: LocalHead(cfg, item.c_out, item.side, item.c_in, num_classes,
                                                        first=item.index == 0, conv_geometry=geometry))
        conv = nn.Conv2d(item.c_in, item.c_out, item.kernel, stride=item.stride, padding=item.padding, bias=True)
        layers.append(Block(conv, item.c_out, conv=True, cfg=cfg, head=head, index=item.index))
    n_flat, index = vgg_flat(walk, channels, size)
    mlp_head, n_out = _linear_blocks(cfg, n_flat, num_classes, start=index)
    layers += [nn.Flatten(), *mlp_head]
    return LocalNet(layers, _output_layer(cfg, n_out, num_classes), num_classes)


for _name in VGG_CONFIGS:
    register(_name)(lambda cfg, channels, size, num_classes, _n=_name: build_vgg(_n, cfg, channels, size, num_classes))


for _name in RESNET_BLOCKS:
    register(_name)(lambda cfg, channels, size, num_classes, _n=_name: build_resnet(_n, cfg, run_spec(cfg)))


def build_model(cfg, channels: int, size: int, num_classes: int) -> LocalNet:
    return MODELS[cfg.model](cfg, channels, size, num_classes)


def describe_layers(model: LocalNet) -> list[dict]:
    """Per hidden block: kind, width, and the pred decoder's pooling (docs/method.md, Local losses)."""
    rows = []
    for b in model.blocks:
        head = b.head
        if hasattr(b, "channels"):  # a local module of residual layers (nets/resnet.py)
            rows.append({"layer": b.index, "kind": "residual", "channels": b.channels, "layers": len(b.layer),
                         "head": type(head).__name__ if head is not None else None,
                         "head_params": sum(p.numel() for p in head.parameters()) if head is not None else 0})
            continue
        row = {"layer": b.index, "kind": "conv" if b.conv else "linear",
               "channels": b.layer.out_channels if b.conv else b.layer.out_features}
        if head is not None and not isinstance(head, LocalHead):   # another method's head
            row.update(head=type(head).__name__, head_params=sum(p.numel() for p in head.parameters()))
        elif head is not None and head.pool is not None:
            row.update(pool_kernel=list(head.pool.kernel), pool_padding=list(head.pool.padding),
                       decoder_in=head.pool.out_features)
        elif head is not None:
            row.update(pool_kernel=None, decoder_in=b.layer.out_features)
        rows.append(row)
    return rows


def describe(cfg) -> dict:
    """The network `cfg` builds, as `locallearn describe` prints it: input shape, classes,
    parameter counts and each layer (describe_layers), without data or training."""
    spec = run_spec(cfg)
    model = build_model(cfg, spec.channels, spec.size, spec.num_classes)
    backprop, total = model.count_params()
    return {"model": cfg.model, "dataset": cfg.dataset,
            "input_shape": [spec.channels, spec.size, spec.size], "num_classes": spec.num_classes,
            "params_backprop": backprop, "params_total": total, "params_heads": total - backprop,
            "layers": describe_layers(model)}
