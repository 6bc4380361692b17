"""Greedy supervised learning (greedy SL): a linear classifier on each local module's
pooled output, trained with cross-entropy; the baseline of InfoPro's Table 2 (Wang et al.,
ICLR 2021) and of DGL's (Belilovsky et al., 2020) comparisons.

As InfoPro's code builds it (blackfeather-wang/InfoPro-Pytorch, commit a38362a,
"Experiments on CIFAR-SVHN-STL10/networks/auxiliary_nets.py", AuxClassifier with
`--aux_net_config 0c1f` and `--local_loss_mode cross_entropy`, the comment there naming it
greedy SL): global average pooling, a linear layer to the classes. Loss: ixy(module) *
cross-entropy (the ixy schedule of --ixy-1/--ixy-2, 1 by default). Their network also
builds InfoPro's decoder at every head and weighs it by ixx; their code has no greedy SL
command, and with ixx 0 the decoder changes no weight of the network, so it is left out
here (docs/methods.md). On a linear block the head is the linear layer alone.

The whole method is this file: its cost (`head_cost`), its head (`build_head`, the only
place torch is imported) and its registry entry (`METHOD`).
"""
from __future__ import annotations

import functools

from ..recipe.archspec import Site, interpolate
from ..recipe.tally import Tally
from .method import Method


def head_cost(cfg, site: Site) -> Tally:
    t = Tally()
    t.linear(site.channels, site.num_classes, True)
    return t


@functools.cache
def head_class():
    """GreedySLHead, defined on first use: importing this file imports no torch."""
    import torch.nn as nn
    import torch.nn.functional as F

    class GreedySLHead(nn.Module):
        def __init__(self, site: Site, ixy: float):
            super().__init__()
            pool = [] if site.side is None else [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            self.classifier = nn.Sequential(*pool, nn.Linear(site.channels, site.num_classes))
            self.ixy = ixy

        def forward(self, h, x, y, y_onehot, image=None):
            logits = self.classifier(h)
            ce = F.cross_entropy(logits, y)
            return self.ixy * ce, {"pred_logits": logits, "ce": ce.detach()}

    return GreedySLHead


def build_head(cfg, site: Site):
    return head_class()(site, interpolate(cfg.ixy_1, cfg.ixy_2, site))


METHOD = Method("greedysl", "greedy SL: a linear classifier on the pooled output (InfoPro's 0c1f)",
                build_head, head_cost)
