"""A run's cost beside its error (docs/peers.md): the parameters and multiply-adds of
its auxiliary heads apart from the backbone's, as metrics.json records them.

Parameters are counted on the built model (backbone: what backprop would train,
`params_backprop`; heads: the rest). Multiply-adds per example come from recipe/cost.py's
architecture model, forward only (a test example for the backbone; the heads'
forward for a training example), and are left out (None) for a network recipe/cost.py has
no model of yet. Importing this module does not import torch.
"""
from __future__ import annotations

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
