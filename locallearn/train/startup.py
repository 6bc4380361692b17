"""The one line a run prints before its first epoch: what trains, where, on which data,
into which folder. It is there so that a log (a terminal, a Snakemake job log, a SLURM
job log) shows at its top whether the run got the GPU, the precision, the network and
the data it was meant to get.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import __version__
from ..layout import resolve_data_dir


def _device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'s' if n != 1 else ''})"
    return str(device)


def startup_line(cfg, device: torch.device, model, train, test) -> str:
    """e.g. `locallearn 0.1.0: mlp on FashionMNIST, predsim | device cpu (2 threads), fp32 |
    params 2,913,290 (network 2,913,290; local heads 0) | data /d: train 60,000, test 10,000 | out /r`.

    `model` is the built network (count_params), `train`/`test` the loaded splits (their
    example counts, after --max-train-examples / --max-test-examples)."""
    backprop, total = model.count_params()
    loss = "global backprop" if cfg.backprop or not model.blocks else cfg.loss_sup + (" (bio)" if cfg.bio else "")
    if getattr(cfg, "method", "paper") != "paper" and model.blocks:
        loss = f"{cfg.method}, {len(model.blocks) + 1} local modules"
    return (f"locallearn {__version__}: {cfg.model} on {cfg.dataset}, {loss}"
            f" | device {_device(device)}, {cfg.precision}"
            f" | params {total:,} (network {backprop:,}; local heads {total - backprop:,})"
            f" | data {resolve_data_dir(cfg.data_dir)}: train {train.n:,}, test {test.n:,}"
            f" | out {Path(cfg.out).absolute()}")
