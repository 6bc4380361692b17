"""The shape every network here takes: a flat list of layers, each a hidden block
(`Block`, with its own local head) or a parameter-free step, then the output part.

The flat list is what lets an engine detach between blocks, step per block (reference
engine) or cut the network into pipeline stages. nets/models.py builds the paper's
networks from it, nets/resnet.py the CIFAR ResNets.

The residual BasicBlock of He et al. (2016), CIFAR variant: two 3x3 convs with
BatchNorm, a 1x1 conv + BatchNorm projection shortcut where the shape changes,
ReLU after the sum. Shared by the ResNets (nets/resnet.py) and AugLocal's auxiliary
networks (methods/auglocal.py), whose layout it follows (ChenxiangMA/AugLocal,
networks/resnet.py BasicBlock, commit 98c90d6), submodule names included.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from ..seeding import derive_seed

if TYPE_CHECKING:   # annotations only
    from .local_losses import LocalHead


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


def forward_layers(layers, x, y=None, y_onehot=None, detach: bool = True, local: bool = True, image=None):
    """Run a contiguous run of a LocalNet's layers (all of them, or a pipeline stage's).
    Returns (output, [local loss per block], [stats per block]).

    image: the network's input, for heads that reconstruct it (InfoPro); x itself when
    the run starts at the first layer (a pipeline stage further on has none).

    detach: cut the graph after every block, so each local loss reaches only its
    own block and the output loss only the output layer (docs/method.md, The update).
    """
    losses, stats = [], []
    image = x if image is None else image
    for m in layers:
        if isinstance(m, Block):
            h, out = m(x)
            if local and m.head is not None:
                loss, st = m.head(h, x, y, y_onehot, image=image)
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


# --------------------------------------------------------------------------- residual blocks

def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.downsample = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
                           if stride != 1 or c_in != c_out else None)
        self.out_channels = c_out

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


def he_init(model: nn.Module) -> None:
    """Their initialisation, over every module of the model, local heads included (their
    loop runs over self.modules() after the heads are built): conv weights
    normal(0, sqrt(2 / (k*k*out_channels))), BatchNorm2d weight 1 and bias 0; linear
    layers keep PyTorch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
