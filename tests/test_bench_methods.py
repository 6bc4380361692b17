"""`locallearn bench --paths modulewise fused` on a ResNet with another method's heads
(docs/methods.md, Engines and speed), on synthetic CIFAR-10-shaped inputs: it prints a
row per engine with seconds, images/s, GFLOP/s (recipe/cost.py counts the ResNets and their
heads), speed-up against modulewise and test error, and both engines end with the same
test error (they compute the same updates). The figures themselves are never asserted."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^(\S+) +([\d.]+) +(\d+) +([\d.]+) +([\d.]+)x +([\d.]+)$", re.M)
RECIPE = ["--model", "resnet32", "--method", "dgl", "--local-modules", "4", "--dataset", "CIFAR10", "--synthetic",
          "--max-train-examples", "32", "--batch-size", "16", "--optim", "sgd", "--momentum", "0.9",
          "--nesterov", "--lr", "0.05", "--device", "cpu", "--threads", "1"]


@pytest.mark.slow
def test_bench_times_modulewise_against_fused():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "locallearn", "bench", *RECIPE, "--paths", "modulewise", "fused"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {m[0]: [float(v) for v in m[1:]] for m in ROW.findall(r.stdout)}
    assert list(rows) == ["modulewise", "fused"], r.stdout
    assert rows["modulewise"][3] == 1.0                       # the base of the speed-up column
    for seconds, images, gflops, _, err in rows.values():
        assert seconds > 0 and images > 0 and gflops > 0 and 0 <= err <= 100
    assert rows["modulewise"][-1] == rows["fused"][-1], r.stdout   # same updates, same test error
    assert "# resnet32 CIFAR10 dgl, batch 16, 32 images/epoch, device cpu, threads 1" in r.stdout
