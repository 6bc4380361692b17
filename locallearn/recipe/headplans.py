"""What the methods' local heads are made of, as plain numbers (no torch import): the
methods (methods/) build their heads from these, the cost model (recipe/cost.py) counts them.
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
INFOPRO_RECON_WIDTH = 12
INFOPRO_HIDDEN = 128


def infopro_classifier_conv(site: Site) -> tuple[int, int]:
    """(out channels, stride) of the classifier's 3x3 conv. Their code defines it for
    the ResNets' widths only: 16 -> 32 and 32 -> 64 with stride 2, 64 -> 64 with
    stride 1 (InfoPro's AuxClassifier, AugLocal's AuxNetwork 'InfoPro'). The rule behind
    it, used on any network: the next wider width among the network's conv layers,
    with stride 2; at the widest, the same width with stride 1."""
    convs = [w for w, kind in zip(site.widths, site.kinds or ("conv",) * len(site.widths)) if kind == "conv"]
    wider = [w for w in convs if w > site.channels]
    return (min(wider), 2) if wider else (site.channels, 1)


def infopro_refusal(site: Site) -> str | None:
    """Why InfoPro's head cannot sit at `site`, or None."""
    if site.side is None:
        return ("--method infopro: its decoder upsamples a feature map to the image, and a linear block "
                "(the mlp's, a VGG's classifier blocks) has none; on a VGG use --num-layers 0")
    return None


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


def auglocal_layers(site: Site, depth: int) -> list[tuple[int, int, int]]:
    """On the mlp and the VGGs (site.kinds set): (max-pools in front, in width, out width)
    of each copied layer. The sampled layers are the subsequent ones of the head's own
    kind (a conv head samples the convs, as their VGG code's net_dim lists them; a
    linear head the linear blocks), by sampled_layers; each copy is preceded by the
    backbone's max-pools between the previous copy and it, so it sees its layer's side."""
    same = [i for i, kind in enumerate(site.kinds) if kind == site.kinds[site.layer]]
    at = same.index(site.layer)
    plan, prev, width = [], site.layer, site.channels
    for j in sampled_layers(at, len(same), depth):
        i = same[j]
        plan.append((sum(site.pools[prev + 1:i + 1]), width, site.widths[i]))
        prev, width = i, site.widths[i]
    return plan


# Their VGG auxiliary network's classifier (exp_imagenet/networks/auxiliary_nets.py,
# AuxClassifier_VGG 'unifSamp'): flatten, average to 512 features, two linear +
# BatchNorm + ReLU layers of 512, linear to the classes.
AUGLOCAL_VGG_HIDDEN = 512


def auglocal_sides(site: Site, blocks: list[tuple[int, int, int]]) -> list[int]:
    """The output side of each auxiliary BasicBlock (3x3 convs, padding 1)."""
    sides, side = [], site.side
    for _, _, stride in blocks:
        side = conv_side(side, 3, stride, 1)
        sides.append(side)
    return sides
