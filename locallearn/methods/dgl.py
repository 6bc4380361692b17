"""DGL (Belilovsky et al., 2020): an auxiliary classifier per local module, trained
with cross-entropy.

The classifier is the one AugLocal's code builds for its DGL rule (ChenxiangMA/AugLocal
networks/auxiliary_nets.py, AuxNetwork 'DGL', commit 98c90d6; from eugenium/DGL
auxiliary_nets_study/models.py): average-pool to ceil(side/4), three 1x1 convs with
BatchNorm and ReLU, average-pool to min(ceil(side/4), 2), two bias-free linear layers
with BatchNorm and ReLU, a linear classifier. Loss: ixy(module) * cross-entropy (the
ixy schedule of --ixy-1/--ixy-2, 1 by default).

On a linear block (the mlp, a VGG's classifier blocks) the head is its MLP part
alone, on the block's width: DGL's own code has such MLP-only auxiliaries
(eugenium/DGL auxiliary_nets_study/models.py, aux_type 'mlp').

The whole method is this file: its plan in plain numbers (`dgl_sides`), its cost from
that plan (`head_cost`), its head (`build_head`, the only place torch is imported) and
its registry entry (`METHOD`).
"""
from __future__ import annotations

import functools
import math

from ..recipe.archspec import Site, interpolate
from ..recipe.tally import Tally
from .method import Method


# ------------------------------------------------------------------------------ plan
def dgl_sides(side: int) -> tuple[int, int]:
    """DGL's two average-pooling sides: ceil(side/4) before its 1x1 convs, at most 2 before its MLP."""
    pooled = math.ceil(side / 4)
    return pooled, min(pooled, 2)


def head_cost(cfg, site: Site) -> Tally:
    t, c = Tally(), site.channels
    f = c                                   # a linear block: the MLP part alone
    if site.side is not None:
        pooled, mlp_side = dgl_sides(site.side)
        for _ in range(3):
            t.conv(c, c, 1, pooled, True)
            t.norm(c)
        f = c * mlp_side * mlp_side
    for _ in range(2):
        t.linear(f, f, True, bias=False)
        t.norm(f)
    t.linear(f, site.num_classes, True)
    return t


# ------------------------------------------------------------------------------ head
@functools.cache
def head_class():
    """DGLHead, defined on first use: importing this file imports no torch."""
    import torch.nn as nn
    import torch.nn.functional as F

    def conv_bn_relu_1x1(c: int) -> list[nn.Module]:
        return [nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]

    def linear_bn_relu(f: int) -> list[nn.Module]:
        return [nn.Linear(f, f, bias=False), nn.BatchNorm1d(f), nn.ReLU()]

    class DGLHead(nn.Module):
        def __init__(self, site: Site, ixy: float):
            super().__init__()
            c = site.channels
            if site.side is None:   # a linear block: the MLP part alone
                f, convs = c, []
            else:
                pooled, mlp_side = dgl_sides(site.side)
                f = c * mlp_side * mlp_side
                convs = [nn.AdaptiveAvgPool2d(pooled), *conv_bn_relu_1x1(c), *conv_bn_relu_1x1(c),
                         *conv_bn_relu_1x1(c), nn.AdaptiveAvgPool2d(mlp_side), nn.Flatten()]
            self.classifier = nn.Sequential(*convs, *linear_bn_relu(f), *linear_bn_relu(f),
                                            nn.Linear(f, site.num_classes))
            self.ixy = ixy

        def forward(self, h, x, y, y_onehot, image=None):
            logits = self.classifier(h)
            ce = F.cross_entropy(logits, y)
            return self.ixy * ce, {"pred_logits": logits, "ce": ce.detach()}

    return DGLHead


def build_head(cfg, site: Site):
    return head_class()(site, interpolate(cfg.ixy_1, cfg.ixy_2, site))


METHOD = Method("dgl", "DGL's auxiliary classifier (1x1 convs, then an MLP)", build_head, head_cost)
