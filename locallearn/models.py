"""Networks of the paper, registered by name: `mlp` and the VGG family (docs/method.md, Networks).

A network is a flat list of layers, each a hidden `Block` (conv or linear, with its
own `LocalHead`) or a parameter-free step (max-pool, flatten), followed by the output
`Linear`. The flat list is what lets an engine detach between blocks, step per block
(reference engine) or cut the network into pipeline stages.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .local_losses import LocalHead
from .seeding import derive_seed
from .specs import VGG_CONFIGS

MODELS: dict[str, Callable] = {}


def register(name: str):
    def add(fn):
        MODELS[name] = fn
        return fn
    return add


class Block(nn.Module):
    """conv 3x3 (or the 7x7/2 stem) or Linear -> BatchNorm -> ReLU/LeakyReLU -> dropout.

    forward returns (h, out): h before dropout (what the local losses see), out after
    (what goes on). Dropout masks come from the block's own generator, seeded per
    epoch by `seed_dropout`, so they do not depend on what else draws random numbers.
    """

    def __init__(self, layer: nn.Module, channels: int, conv: bool, cfg, head: LocalHead | None, index: int):
        super().__init__()
        self.layer = layer
        self.bn = None if cfg.no_batch_norm else (nn.BatchNorm2d(channels) if conv else nn.BatchNorm1d(channels))
        self.nonlin = nn.LeakyReLU(0.01) if cfg.nonlin == "leakyrelu" else nn.ReLU()
        self.p = cfg.dropout
        self.conv = conv
        self.head = head
        self.index = index
        self._gen: torch.Generator | None = None
        self._gen_seed = 0

    def seed_dropout(self, seed: int) -> None:
        self._gen_seed = seed
        if self._gen is not None:  # reseeded in place: a CUDA graph holds this very generator
            self._gen.manual_seed(seed)

    @property
    def dropout_generator(self) -> torch.Generator | None:
        """The generator of this block's dropout masks, once a mask was drawn (a CUDA
        graph registers it, so that a replay draws fresh masks)."""
        return self._gen

    def dropout(self, h: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return h
        if self._gen is None or self._gen.device != h.device:
            self._gen = torch.Generator(device=h.device)
            self._gen.manual_seed(self._gen_seed)
        # Dropout2d drops whole channels; Dropout single units.
        shape = h.shape[:2] + (1,) * (h.dim() - 2) if self.conv else h.shape
        keep = torch.empty(shape, device=h.device, dtype=torch.float32).bernoulli_(1 - self.p, generator=self._gen)
        return h * (keep / (1 - self.p)).to(h.dtype)

    def forward(self, x):
        h = self.layer(x)
        if self.bn is not None:
            h = self.bn(h)
        h = self.nonlin(h)
        return h, self.dropout(h)


def forward_layers(layers, x, y=None, y_onehot=None, detach: bool = True, local: bool = True):
    """Run a contiguous run of a LocalNet's layers (all of them, or a pipeline stage's).
    Returns (output, [local loss per block], [stats per block]).

    detach: cut the graph after every block, so each local loss reaches only its
    own block and the output loss only the output layer (docs/method.md, The update).
    """
    losses, stats = [], []
    for m in layers:
        if isinstance(m, Block):
            h, out = m(x)
            if local and m.head is not None:
                loss, st = m.head(h, x, y, y_onehot)
                losses.append(loss)
                stats.append(st)
            x = out.detach() if detach else out
        else:
            x = m(x)
    return x, losses, stats


class LocalNet(nn.Module):
    def __init__(self, layers: list[nn.Module], output: nn.Linear, num_classes: int):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.output = output
        self.num_classes = num_classes

    @property
    def blocks(self) -> list[Block]:
        return [m for m in self.layers if isinstance(m, Block)]

    def seed_dropout(self, seed: int, epoch: int) -> None:
        for b in self.blocks:
            b.seed_dropout(derive_seed(seed, epoch, 1000 + b.index))

    def forward(self, x, y=None, y_onehot=None, detach: bool = True, local: bool = True):
        """Returns (logits, [local loss per block], [stats per block])."""
        x, losses, stats = forward_layers(self.layers, x, y, y_onehot, detach, local)
        return self.output(x), losses, stats

    def backprop_parameters(self):
        """The network alone, without local heads: the paper's #Params."""
        for name, p in self.named_parameters():
            if ".head." not in f".{name}":
                yield p

    def count_params(self) -> tuple[int, int]:
        total = sum(p.numel() for p in self.parameters())
        return sum(p.numel() for p in self.backprop_parameters()), total


def _local(cfg) -> bool:
    return not cfg.backprop


def _linear_blocks(cfg, n_in: int, num_classes: int, start: int) -> tuple[list[Block], int]:
    """The mlp, or a VGG's classifier head: the reference builds both as its `Net`,
    whose first block is a first layer (no recon loss) even on top of a VGG's convs."""
    blocks = []
    for i in range(cfg.num_layers):
        lin = nn.Linear(n_in, cfg.num_hidden)
        head = (LocalHead(cfg, cfg.num_hidden, None, n_in, num_classes, first=i == 0)
                if _local(cfg) else None)
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
    scale, index, ch_in = 1, 0, channels
    for item in VGG_CONFIGS[name]:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            scale *= 2
            continue
        ch = int(item * cfg.feat_mult)
        # Inputs wider than 64 px (STL-10) get a 7x7 stride-2 stem instead of 3x3.
        k, stride, pad = (7, 2, 3) if index == 0 and size > 64 else (3, 1, 1)
        scale *= stride
        side = size // scale
        head = (LocalHead(cfg, ch, side, ch_in, num_classes, first=index == 0, conv_geometry=(k, stride, pad))
                if _local(cfg) else None)
        conv = nn.Conv2d(ch_in, ch, k, stride=stride, padding=pad, bias=True)
        layers.append(Block(conv, ch, conv=True, cfg=cfg, head=head, index=index))
        ch_in, index = ch, index + 1
    n_flat = ch_in * (size // scale) ** 2
    mlp_head, n_out = _linear_blocks(cfg, n_flat, num_classes, start=index)
    layers += [nn.Flatten(), *mlp_head]
    return LocalNet(layers, _output_layer(cfg, n_out, num_classes), num_classes)


for _name in VGG_CONFIGS:
    register(_name)(lambda cfg, channels, size, num_classes, _n=_name: build_vgg(_n, cfg, channels, size, num_classes))


def build_model(cfg, channels: int, size: int, num_classes: int) -> LocalNet:
    return MODELS[cfg.model](cfg, channels, size, num_classes)


def describe_layers(model: LocalNet) -> list[dict]:
    """Per hidden block: kind, width, and the pred decoder's pooling (docs/method.md, Local losses)."""
    rows = []
    for b in model.blocks:
        row = {"layer": b.index, "kind": "conv" if b.conv else "linear",
               "channels": b.layer.out_channels if b.conv else b.layer.out_features}
        head = b.head
        if head is not None and head.pool is not None:
            row.update(pool_kernel=list(head.pool.kernel), pool_padding=list(head.pool.padding),
                       decoder_in=head.pool.out_features)
        elif head is not None:
            row.update(pool_kernel=None, decoder_in=b.layer.out_features)
        rows.append(row)
    return rows
