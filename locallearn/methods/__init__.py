"""Local-learning methods, each the head it puts on a local module: one file per
method, one entry in METHODS (docs/methods.md, Adding a method).

  paper     the paper's pred / sim / predsim (--loss-sup, --beta; layers/local_losses.py)
  dgl       DGL's auxiliary classifier
  infopro   InfoPro's image reconstruction plus classifier, lambda schedule over modules
  auglocal  AugLocal's auxiliary networks of sampled subsequent layers, pyramidal depth

A head is an nn.Module called as head(h, x, y, y_onehot, image=...) -> (loss, stats):
h the module's output, x its input, image the network's input; stats may hold
"pred_logits" (the local classifier's logits: its error is recorded per module).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import auglocal, dgl, infopro, paper
from .site import Site, interpolate

__all__ = ["METHODS", "Method", "Site", "interpolate"]   # Site, interpolate: re-exported


@dataclass(frozen=True)
class Method:
    build_head: Callable          # (cfg, Site) -> head module
    needs_image: bool = False     # the head reads the network's input (no pipeline stages after the first)


METHODS: dict[str, Method] = {
    "paper": Method(paper.build_head),
    "dgl": Method(dgl.build_head),
    "infopro": Method(infopro.build_head, needs_image=True),
    "auglocal": Method(auglocal.build_head),
}
