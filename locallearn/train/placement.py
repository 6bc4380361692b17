"""A run's model: the whole network built with its initial weights, and placed on its
device with the kernel flags. The sequential trainer, every pipeline stage and the
benches build and place a model only here; how it is then trained is train/engines.py's.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..host import precision
from ..layers.localnet import LocalNet
from ..nets.models import build_model


def initial_model(cfg, spec) -> LocalNet:
    """The whole network with its initial weights, on the CPU: a function of the seed
    alone, so that a sequential run and every pipeline stage start from the same ones."""
    torch.manual_seed(cfg.seed)
    return build_model(cfg, spec.channels, spec.size, spec.num_classes)


def place(cfg, model: nn.Module, device: torch.device) -> nn.Module:
    """`model` (a network, or a pipeline stage's layers) on `device`, with the kernel
    flags (--channels-last, --cudnn-benchmark) applied: the one way a model reaches its device."""
    return precision.configure(cfg, model.to(device))


def make_model(cfg, spec, device: torch.device) -> LocalNet:
    return place(cfg, initial_model(cfg, spec), device)
