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
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from ..recipe.headplans import dgl_sides
from .site import Site, interpolate


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
            convs = [nn.AdaptiveAvgPool2d(pooled), *conv_bn_relu_1x1(c), *conv_bn_relu_1x1(c), *conv_bn_relu_1x1(c),
                     nn.AdaptiveAvgPool2d(mlp_side), nn.Flatten()]
        self.classifier = nn.Sequential(*convs, *linear_bn_relu(f), *linear_bn_relu(f), nn.Linear(f, site.num_classes))
        self.ixy = ixy

    def forward(self, h, x, y, y_onehot, image=None):
        logits = self.classifier(h)
        ce = F.cross_entropy(logits, y)
        return self.ixy * ce, {"pred_logits": logits, "ce": ce.detach()}


def build_head(cfg, site: Site) -> DGLHead:
    return DGLHead(site, interpolate(cfg.ixy_1, cfg.ixy_2, site))
