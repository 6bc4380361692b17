"""The paper's local losses (pred, sim, predsim; --loss-sup, --loss-unsup, --beta) as
the head of a local module: local_losses.LocalHead, on the module's output.

The paper's maths is the harness's own and lives in layers/local_losses.py; its cost in
recipe/cost.py (`head_cost` None: the cost model counts LocalHead itself, on every
network), and its flags are the reference's (recipe/config.py). This file registers it.
"""
from __future__ import annotations

from ..errors import ConfigError
from ..recipe.archspec import Site
from .method import Method


def build_head(cfg, site: Site):
    from ..layers.local_losses import LocalHead
    if cfg.loss_unsup == "recon":   # only a ResNet takes a paper head from here (nets/resnet.py)
        raise ConfigError("--loss-unsup recon: the paper's recon mirrors one conv; a residual module has no "
                          "such inverse here (use none or sim)")
    return LocalHead(cfg, site.channels, site.side, site.in_channels, site.num_classes, first=site.layer == 0)


METHOD = Method("paper", "the paper's pred / sim / predsim (--loss-sup, --beta; layers/local_losses.py)", build_head)
