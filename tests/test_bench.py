"""`locallearn bench` (issues 2 and 8) on the real Fashion-MNIST, a few hundred images:
it prints one row per path with seconds, images/s, GFLOP/s, speed-up and test error,
and the pipelined path ends with exactly the fused path's test error (same updates).
The figures themselves are measured by hand (docs/speed.md), never asserted."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import FMNIST_DEBIAN, child_env, needs_fmnist

pytestmark = needs_fmnist
RECIPE = ["--model", "mlp", "--dataset", "FashionMNIST", "--num-layers", "3", "--num-hidden", "256",
          "--dropout", "0.025", "--lr", "5e-4", "--nonlin", "leakyrelu",
          "--max-train-examples", "512", "--max-test-examples", "256"]
ROW = re.compile(r"^(\S+) +([\d.]+) +(\d+) +([\d.]+) +([\d.]+)x +([\d.]+)$", re.M)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """The Debian files imported the way users import them (`locallearn data prepare`)."""
    d = tmp_path_factory.mktemp("data")
    r = subprocess.run([sys.executable, "-m", "locallearn", "data", "prepare", "FashionMNIST",
                        "--source", str(FMNIST_DEBIAN), "--data-dir", str(d)],
                       capture_output=True, text=True, env=child_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    return str(d)


def bench(data_dir: str, *flags: str) -> str:
    env = child_env()
    r = subprocess.run([sys.executable, "-m", "locallearn", "bench", *RECIPE, "--data-dir", data_dir, *flags],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def rows(out: str) -> dict[str, dict]:
    return {m[0]: {"s": float(m[1]), "img": int(m[2]), "gflops": float(m[3]), "speedup": float(m[4]),
                   "err": float(m[5])} for m in ROW.findall(out)}


@pytest.mark.slow
def test_bench_prints_every_path(data_dir):
    out = bench(data_dir, "--threads", "2")
    got = rows(out)
    assert list(got) == ["reference-pil", "fused", "fused-bf16"], out
    assert got["reference-pil"]["speedup"] == 1.0
    for r in got.values():
        assert r["s"] > 0 and r["gflops"] > 0 and 0 <= r["err"] <= 100
        assert r["img"] > 0
    assert "512 images/epoch, device cpu, threads 2, precision fp32, best of 1 epoch(s)" in out


@pytest.mark.slow
def test_bench_pipeline_against_one_process(data_dir):
    # One thread for the single process too: float32 reductions split over 2 threads
    # are summed in another order, and the two runs would drift apart by rounding.
    out = bench(data_dir, "--pipeline-stages", "2", "--epochs", "2", "--threads", "1")
    got = rows(out)
    assert list(got) == ["fused", "pipeline-2"], out
    assert got["pipeline-2"]["err"] == got["fused"]["err"]          # exact: the same updates
    assert "# pipeline-2: 2 processes x 1 thread(s); fused: 1 process x 1 threads" in out
    stages = re.findall(r"#   stage (\d) \(layers (\d+)\.\.(\d+)\): waits ([\d.]+) s for input, "
                        r"([\d.]+) s for sends; busy (\d+)% of the epoch", out)
    assert [s[0] for s in stages] == ["0", "1"] and stages[0][3] == "0.00"  # stage 0 reads the data


def test_bench_refuses_what_cannot_be_pipelined(data_dir):
    env = child_env()
    r = subprocess.run([sys.executable, "-m", "locallearn", "bench", *RECIPE, "--data-dir", data_dir,
                        "--pipeline-stages", "2",
                        "--backprop"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "--backprop cannot be combined with --pipeline-stages 2" in r.stderr
