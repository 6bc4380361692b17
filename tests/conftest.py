"""Shared helpers: flag namespaces for small networks, synthetic batches."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from locallearn.config import parse_train_args

REPO = Path(__file__).resolve().parent.parent
CELLS_TSV = REPO / "workflow" / "config" / "cells.tsv"   # the workflow's grid
FMNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")

# Tests share 2 cores with nothing else; one thread keeps them from oversubscribing
# when pytest runs a subprocess beside them.
torch.set_num_threads(int(os.environ.get("LOCALLEARN_TEST_THREADS", "1")))


def flags(*extra: str, **kw):
    """parse_train_args over a small default recipe; kw become --key value."""
    argv = ["--model", "mlp", "--dataset", "FashionMNIST", "--num-layers", "2", "--num-hidden", "32"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return parse_train_args(argv + list(extra))


def batches(n: int, shape=(1, 28, 28), classes: int = 10, batch: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, *shape, generator=g), torch.randint(0, classes, (batch,), generator=g))
            for _ in range(n)]


needs_fmnist = pytest.mark.skipif(not FMNIST_DEBIAN.exists(),
                                  reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
