"""`snakemake peers_quick` (issues 26, 34) on the real Fashion-MNIST: every method of the
field's grid (the ResNet-32 CIFAR-10 rows of workflow/config/peers.tsv: BP, DGL, PredSim,
InfoPro, AugLocal d=1/2/3/5, trained whole, and BP's holdout row) at its tiny budget
(config peers_quick: 1 epoch, 512 training examples, of which the holdout row holds 48
out, 256 test examples), with its own tables; the errors and the heads' cost in every
metrics.json, MLflow and the tables, each row under its protocol."""
from __future__ import annotations

import json

import pytest

from conftest import needs_fmnist
from test_workflow import job_counts, snakemake

CELLS = ["fmnist-resnet32-k1-bp", "fmnist-resnet32-k1-bp-holdout", "fmnist-resnet32-k16-dgl",
         "fmnist-resnet32-k16-predsim", "fmnist-resnet32-k16-infopro", "fmnist-resnet32-k16-auglocal-d1",
         "fmnist-resnet32-k16-auglocal-d2", "fmnist-resnet32-k16-auglocal-d3", "fmnist-resnet32-k16-auglocal-d5"]


@needs_fmnist
@pytest.mark.slow
def test_peers_quick_end_to_end(tmp_path):
    r = snakemake(tmp_path, "--cores", "2", "peers_quick", timeout=900)
    assert r.returncode == 0, r.stderr[-5000:]
    assert job_counts(r.stdout + r.stderr)["train"] == len(CELLS)
    out = tmp_path / "results" / "peers-quick"
    metrics = {c: json.loads((out / "runs" / c / "seed1" / "metrics.json").read_text()) for c in CELLS}
    for c, m in metrics.items():
        held = c.endswith("-holdout")
        assert m["epochs"] == 1 and m["config"]["dataset"] == "FashionMNIST"
        assert m["config"]["val_examples"] == (48 if held else 0)
        assert (m.get("val_split") or {}).get("examples") == (48 if held else None)
        assert m["best_test_error"] == m["test_error"]                       # one epoch
        assert (m["val_selected_test_error"] == m["test_error"]) if held else m.get("val_selected_test_error") is None
        assert m["config"]["crop_fill"] == "reflect" and m["config"].get("pixel_mean") is None   # CIFAR-10's crop only
        assert (m["head_params"] == 0) == c.startswith("fmnist-resnet32-k1-bp")
    summary = (out / "tables" / "summary.md").read_text()
    assert summary.count("budget run (not compared)") == len(CELLS)
    assert summary.count("holdout (validation-selected)") == 1 and summary.count("whole (best test epoch)") == 8
    readme = (out / "README.md").read_text()
    assert "AugLocal d=2" in readme and "### Cost" in readme and "[1/400 ep, 512 train ex, 256 test ex]" in readme
    assert (out / "figures" / "field.png").read_bytes()[:4] == b"\x89PNG"   # error against cost
    assert not (tmp_path / "docs").exists() and not (tmp_path / "results" / "full").exists()

    import mlflow
    mlflow.set_tracking_uri("sqlite:///" + str(out / "mlflow.db"))
    runs = mlflow.search_runs(experiment_names=["locallearn-peers-quick"])
    assert sorted(runs["tags.cell"]) == sorted(CELLS) and set(runs["status"]) == {"FINISHED"}
    for _, run in runs.iterrows():
        assert run["metrics.best_test_error"] == metrics[run["tags.cell"]]["best_test_error"]

    r = snakemake(tmp_path, "--cores", "2", "peers_quick", timeout=300)   # finished runs stay final
    assert r.returncode == 0 and "train" not in job_counts(r.stdout + r.stderr)


@needs_fmnist
@pytest.mark.slow
def test_infopro_quick_end_to_end_and_the_infopro_target(tmp_path):
    """`snakemake infopro_quick` (issue 35): greedy SL and InfoPro (Contrast) trained at a
    tiny budget, tables with their methods; `snakemake -n infopro` lists the 20 cells x 5
    seeds, outside `all`."""
    r = snakemake(tmp_path, "--cores", "2", "infopro_quick", timeout=600)
    assert r.returncode == 0, r.stderr[-5000:]
    out = tmp_path / "results" / "infopro-quick"
    for cell, method in (("fmnist-resnet32-k16-greedysl-t2", "greedysl"),
                         ("fmnist-resnet32-k16-infoprocontrast-t2", "infoprocontrast")):
        m = json.loads((out / "runs" / cell / "seed1" / "metrics.json").read_text())
        assert m["config"]["method"] == method and m["config"]["placement"] == "infopro" and m["head_params"] > 0
    readme = (out / "README.md").read_text()
    assert "Greedy SL" in readme and "InfoPro (Contrast)" in readme and "budget run (not compared)" in readme
    r = snakemake(tmp_path, "-n", "infopro")
    assert r.returncode == 0, r.stderr[-3000:]
    assert job_counts(r.stdout)["train"] == 100
    assert "results/infopro/runs/stl10-resnet110-k16-infoprocontrast-t2/seed5/metrics.json" in r.stdout
