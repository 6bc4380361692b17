"""A run's cost beside its error (docs/peers.md): the parameters and multiply-adds of
its auxiliary heads apart from the backbone's, as metrics.json records them.

Parameters are counted on the built model (backbone: what backprop would train,
`params_backprop`; heads: the rest). Multiply-adds per example come from recipe/cost.py's
architecture model, forward only (a test example for the backbone; the heads'
forward for a training example), and are left out (None) for a network recipe/cost.py has
no model of yet. Importing this module does not import torch.

A record older than those keys (the committed Fashion-MNIST runs) is counted again from
its recorded config by `recorded_head_macs`, the trainer's defaults under it: the recipe
fills in its own flags, so the tables (report/tables.py) read records and build no parser.
"""
from __future__ import annotations

import argparse

from .cost import network_cost
from ..errors import ConfigError


def head_cost(cfg, params_backprop: int, params_total: int) -> dict:
    """head_params, backbone_params, head_macs and backbone_macs of one run (macs:
    None where recipe/cost.py has no model of the network)."""
    out = {"backbone_params": params_backprop, "head_params": params_total - params_backprop,
           "backbone_macs": None, "head_macs": None}
    try:
        cost = network_cost(cfg)
    except ConfigError:
        return out   # no cost model of this network (yet)
    out["backbone_macs"] = cost.eval_macs
    out["head_macs"] = sum(layer.heads for layer in cost.layers)
    return out


def recorded_head_macs(config: dict) -> float | None:
    """The heads' multiply-adds of a recorded config (metrics.json's `config`, the
    trainer's defaults under it) for a record without `head_macs`, or None where
    recipe/cost.py cannot count it: a cost column never stops the tables."""
    from .config import build_parser
    try:
        return head_cost(argparse.Namespace(**{**vars(build_parser().parse_args([])), **config}), 0, 0)["head_macs"]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
