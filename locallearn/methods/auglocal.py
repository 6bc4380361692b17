"""AugLocal (Ma et al., ICLR 2024): each local module's auxiliary network is built
from layers uniformly sampled among the subsequent layers of the network, with a
depth that shrinks towards the output (pyramidal depth).

As their code builds it (ChenxiangMA/AugLocal, commit 98c90d6: networks/auxiliary_nets.py
AuxNetwork 'unifSamp'; networks/resnet.py LocalResNet.__init__; train.py):
  depth of the head after layer i, with d = --aux-depth, c = --pyramid-coeff and K the
    local modules: max(1, round(d * (1 - i*c/(K-2)) + i*c/(K-2))) (Python's round:
    halves to even); c = 0 gives d everywhere (their run without --pyramid);
  sampled layers: all subsequent layers if d >= L - 1 - i (L layers in all), else
    round(i + (L - i - 1) / d * j) for j = 1..d;
  each sampled layer becomes a residual BasicBlock of that layer's width, with stride 2
    where the width doubles (a projection shortcut where shape changes);
  then global average pool, (BatchNorm1d when the depth is 1), linear to the classes;
  loss = ixy(module) * cross-entropy (1 by default).
Their train.py runs AugLocal with K - d local modules for --local_module_num K, so
`--local-modules K --aux-depth d` builds K - d here too (docs/methods.md).

On the paper's VGGs and mlp (a head per block, K = blocks + 1) a head copies the
subsequent blocks of its own kind (headplans.auglocal_layers): convs as their VGG code
copies them (exp_imagenet/networks/auxiliary_nets.py, AuxClassifier_VGG 'unifSamp':
conv 3x3 + BatchNorm + ReLU, then flatten, average to 512, two linear + BatchNorm +
ReLU of 512, linear), linear blocks as linear + BatchNorm + ReLU, then a linear
classifier (their code has no linear network; ours).
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from ..recipe.headplans import AUGLOCAL_VGG_HIDDEN, auglocal_blocks, auglocal_depth, auglocal_layers
from ..layers.localnet import BasicBlock
from .site import Site, interpolate


def auxiliary_blocks(site: Site, depth: int) -> tuple[list[nn.Module], int]:
    """The sampled layers as BasicBlocks (headplans.auglocal_blocks), and the last one's width."""
    plan = auglocal_blocks(site, depth)
    return [BasicBlock(c_in, c_out, stride) for c_in, c_out, stride in plan], (plan[-1][1] if plan else site.channels)


def resnet_classifier(site: Site, depth: int) -> nn.Sequential:
    blocks, width = auxiliary_blocks(site, depth)
    norm = [nn.BatchNorm1d(width)] if depth <= 1 else []
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), *norm, nn.Linear(width, site.num_classes))


def vgg_classifier(site: Site, depth: int) -> nn.Sequential:
    """Copies of the sampled convs (conv 3x3 + BatchNorm + ReLU, after the backbone's
    max-pools in between), then their VGG classifier (headplans.AUGLOCAL_VGG_HIDDEN)."""
    layers, n = [], AUGLOCAL_VGG_HIDDEN
    for pools, c_in, c_out in auglocal_layers(site, depth):
        layers += [nn.MaxPool2d(2, 2) for _ in range(pools)]
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Flatten(), nn.AdaptiveAvgPool1d(n), nn.Linear(n, n), nn.BatchNorm1d(n),
                         nn.ReLU(), nn.Linear(n, n), nn.BatchNorm1d(n), nn.ReLU(), nn.Linear(n, site.num_classes))


def linear_classifier(site: Site, depth: int) -> nn.Sequential:
    """Copies of the sampled linear blocks (linear + BatchNorm + ReLU), linear to the classes."""
    layers, width = [], site.channels
    for _, c_in, c_out in auglocal_layers(site, depth):
        layers += [nn.Linear(c_in, c_out), nn.BatchNorm1d(c_out), nn.ReLU()]
        width = c_out
    return nn.Sequential(*layers, nn.Linear(width, site.num_classes))


class AugLocalHead(nn.Module):
    def __init__(self, site: Site, depth: int, ixy: float):
        super().__init__()
        if not site.kinds:
            self.classifier = resnet_classifier(site, depth)
        elif site.side is not None:
            self.classifier = vgg_classifier(site, depth)
        else:
            self.classifier = linear_classifier(site, depth)
        self.depth, self.ixy = depth, ixy

    def forward(self, h, x, y, y_onehot, image=None):
        logits = self.classifier(h)
        ce = F.cross_entropy(logits, y)
        return self.ixy * ce, {"pred_logits": logits, "ce": ce.detach()}


def build_head(cfg, site: Site) -> AugLocalHead:
    return AugLocalHead(site, auglocal_depth(cfg, site), interpolate(cfg.ixy_1, cfg.ixy_2, site))

