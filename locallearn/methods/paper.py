"""The paper's local losses (pred, sim, predsim; --loss-sup, --loss-unsup, --beta) as
the head of a local module: local_losses.LocalHead, on the module's output."""
from __future__ import annotations

from ..errors import ConfigError
from ..layers.local_losses import LocalHead
from .site import Site


def build_head(cfg, site: Site) -> LocalHead:
    if cfg.loss_unsup == "recon":
        raise ConfigError("--loss-unsup recon: the paper's recon mirrors one conv; a residual module has no "
                          "such inverse here (use none or sim)")
    return LocalHead(cfg, site.channels, site.side, site.in_channels, site.num_classes, first=site.layer == 0)
