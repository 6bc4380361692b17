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
subsequent blocks of its own kind (`layer_plan`): convs as their VGG code
copies them (exp_imagenet/networks/auxiliary_nets.py, AuxClassifier_VGG 'unifSamp':
conv 3x3 + BatchNorm + ReLU, then flatten, average to 512, two linear + BatchNorm +
ReLU of 512, linear), linear blocks as linear + BatchNorm + ReLU, then a linear
classifier (their code has no linear network; ours).

The whole method is this file: its plan in plain numbers, its cost, its flags, its
module count, its head (`build_head`, the only place torch is imported) and `METHOD`.
"""
from __future__ import annotations

import functools
import math

from ..recipe.archspec import ResidualLayer, Site, conv_side, interpolate
from ..recipe.tally import Tally
from .method import Flag, Method


# ------------------------------------------------------------------------------ plan
def depth_at(cfg, site: Site) -> int:
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


def resnet_plan(site: Site, depth: int) -> list[tuple[int, int, int]]:
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


def layer_plan(site: Site, depth: int) -> list[tuple[int, int, int]]:
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
VGG_HIDDEN = 512


def resnet_sides(site: Site, blocks: list[tuple[int, int, int]]) -> list[int]:
    """The output side of each auxiliary BasicBlock (3x3 convs, padding 1)."""
    sides, side = [], site.side
    for _, _, stride in blocks:
        side = conv_side(side, 3, stride, 1)
        sides.append(side)
    return sides


def head_cost(cfg, site: Site) -> Tally:
    t = Tally()
    depth = depth_at(cfg, site)
    if site.kinds:                      # the mlp and the VGGs: copies of blocks of the head's kind
        side, width = site.side, site.channels
        for pools, c_in, c_out in layer_plan(site, depth):
            if side is None:
                t.linear(c_in, c_out, True)
            else:
                side //= 2 ** pools
                t.conv(c_in, c_out, 3, side, True, bias=True)
            t.norm(c_out)
            width = c_out
        if side is not None:            # their VGG classifier: average to n features, 2 x (linear + BN), linear
            width = n = VGG_HIDDEN
            for _ in range(2):
                t.linear(n, n, True)
                t.norm(n)
        t.linear(width, site.num_classes, True)
        return t
    blocks = resnet_plan(site, depth)
    side_in = site.side
    for (c_in, c_out, stride), side in zip(blocks, resnet_sides(site, blocks)):
        t.residual(ResidualLayer("basic", c_in, c_out, stride, side_in, side), True)
        side_in = side
    width = blocks[-1][1] if blocks else site.channels
    if depth <= 1:
        t.norm(width)
    t.linear(width, site.num_classes, True)
    return t


def module_count(cfg, k: int) -> int:
    """Their train.py builds local_module_num - aux_net_depth modules for --local_module_num K."""
    return k - cfg.aux_depth


# ------------------------------------------------------------------------------ head
@functools.cache
def head_class():
    """AugLocalHead, defined on first use: importing this file imports no torch."""
    import torch.nn as nn
    import torch.nn.functional as F

    from ..layers.localnet import BasicBlock

    def auxiliary_blocks(site: Site, depth: int) -> tuple[list[nn.Module], int]:
        """The sampled layers as BasicBlocks (resnet_plan), and the last one's width."""
        plan = resnet_plan(site, depth)
        width = plan[-1][1] if plan else site.channels
        return [BasicBlock(c_in, c_out, stride) for c_in, c_out, stride in plan], width

    def resnet_classifier(site: Site, depth: int) -> nn.Sequential:
        blocks, width = auxiliary_blocks(site, depth)
        norm = [nn.BatchNorm1d(width)] if depth <= 1 else []
        return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), *norm,
                             nn.Linear(width, site.num_classes))

    def vgg_classifier(site: Site, depth: int) -> nn.Sequential:
        """Copies of the sampled convs (conv 3x3 + BatchNorm + ReLU, after the backbone's
        max-pools in between), then their VGG classifier (VGG_HIDDEN)."""
        layers, n = [], VGG_HIDDEN
        for pools, c_in, c_out in layer_plan(site, depth):
            layers += [nn.MaxPool2d(2, 2) for _ in range(pools)]
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        return nn.Sequential(*layers, nn.Flatten(), nn.AdaptiveAvgPool1d(n), nn.Linear(n, n), nn.BatchNorm1d(n),
                             nn.ReLU(), nn.Linear(n, n), nn.BatchNorm1d(n), nn.ReLU(), nn.Linear(n, site.num_classes))

    def linear_classifier(site: Site, depth: int) -> nn.Sequential:
        """Copies of the sampled linear blocks (linear + BatchNorm + ReLU), linear to the classes."""
        layers, width = [], site.channels
        for _, c_in, c_out in layer_plan(site, depth):
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

    return AugLocalHead


def build_head(cfg, site: Site):
    return head_class()(site, depth_at(cfg, site), interpolate(cfg.ixy_1, cfg.ixy_2, site))


METHOD = Method(
    "auglocal", "AugLocal's auxiliary networks of sampled subsequent layers, pyramidal depth",
    build_head, head_cost, module_count=module_count,
    flags=(Flag("--aux-depth", int, 1, "auglocal: layers in an auxiliary network (d)",
                check=lambda d: None if d >= 1 else f"must be >= 1, got {d}"),
           Flag("--pyramid-coeff", float, 0.0, "auglocal: pyramidal depth coefficient (0: every auxiliary "
                                                "network d deep; their run.sh: 0.5)")))
