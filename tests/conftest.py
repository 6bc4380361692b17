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


@pytest.fixture(autouse=True)
def _mlflow_credentials_stay_in_their_test():
    """take_credentials (config.validate) exports a URI's user and password into this
    process's environment, as a training process needs; in the one pytest process that
    would hand them to every later test's servers and jobs. Restore them after each test."""
    from locallearn.credentials import PASSWORD_VAR, USERNAME_VAR
    saved = {k: os.environ.get(k) for k in (USERNAME_VAR, PASSWORD_VAR)}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
