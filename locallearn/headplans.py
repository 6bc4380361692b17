"""What the methods' local heads are made of, as plain numbers (no torch import): the
methods (methods/) build their heads from these, the cost model (cost.py) counts them.
Sources: ChenxiangMA/AugLocal, commit 98c90d6, networks/auxiliary_nets.py (docs/methods.md).
"""
from __future__ import annotations

import math

from .archspec import Site, conv_side

# --------------------------------------------------------------------------------- DGL
def dgl_sides(side: int) -> tuple[int, int]:
    """DGL's two average-pooling sides: ceil(side/4) before its 1x1 convs, at most 2 before its MLP."""
    pooled = math.ceil(side / 4)
    return pooled, min(pooled, 2)


# ----------------------------------------------------------------------------- InfoPro
# The classifier's first conv per module width: (out channels, stride); their code
# defines it for the CIFAR ResNets' widths only.
INFOPRO_CLASSIFIER_CONV = {16: (32, 2), 32: (64, 2), 64: (64, 1)}
INFOPRO_RECON_WIDTH = 12
INFOPRO_HIDDEN = 128


# ---------------------------------------------------------------------------- AugLocal
def auglocal_depth(cfg, site: Site) -> int:
    """The pyramidal depth of the head after layer site.layer:
    max(1, round(d * (1 - t) + t)), t = layer * c / (K - 2) (Python's round)."""
    if site.modules <= 2:  # their list is empty then: no second head to slope towards
        return cfg.aux_depth
    t = site.layer * cfg.pyramid_coeff / (site.modules - 2)
    return max(1, round(cfg.aux_depth * (1 - t) + t))


def sampled_layers(layer: int, n_layers: int, depth: int) -> list[int]:
    """The subsequent layers an auxiliary network of `depth` copies: all of them if too
    few are left, else round(layer + (n_layers - layer - 1) / depth * j), j = 1..depth."""
    if depth >= n_layers - 1 - layer:
        return list(range(layer + 1, n_layers))
    return [round(layer + (n_layers - layer - 1) / depth * j) for j in range(1, depth + 1)]


def auglocal_blocks(site: Site, depth: int) -> list[tuple[int, int, int]]:
    """(in width, out width, stride) of each BasicBlock of the auxiliary network: the
    sampled layers' widths; a width that grows by 2^k owes k stride-2 blocks, spent one
    per block as they come."""
    blocks, width, owed = [], site.channels, 0
    for i in sampled_layers(site.layer, len(site.widths), depth):
        out = site.widths[i]
        if out < width:
            raise ValueError(f"auxiliary layer {i} is narrower ({out}) than its input ({width})")
        owed += int(math.log2(out // width))
        stride = 2 if owed >= 1 else 1
        owed -= stride == 2
        blocks.append((width, out, stride))
        width = out
    return blocks


def auglocal_sides(site: Site, blocks: list[tuple[int, int, int]]) -> list[int]:
    """The output side of each auxiliary BasicBlock (3x3 convs, padding 1)."""
    sides, side = [], site.side
    for _, _, stride in blocks:
        side = conv_side(side, 3, stride, 1)
        sides.append(side)
    return sides
