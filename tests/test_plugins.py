"""A method from outside the repository, found through real discovery: the test writes a
tiny package (one module and its *.dist-info with an entry_points.txt in the group
`locallearn.methods`) into a folder, puts that folder on PYTHONPATH, and runs locallearn
in subprocesses, where importlib.metadata finds it. No registry is patched.

The package brings three entry points: `probe` (a linear probe on each module's output,
with a flag of its own), `clash` (a method that takes the built-in name dgl) and `broken`
(a module that does not exist). The two bad ones are left out, each with one line naming
its distribution and entry point; `probe` trains, is described, is costed, fills a
one-row grid of the workflow and its tables, and passes every check the built-in
methods pass (tests/test_method_contract.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, child_env, snakemake
from fake_data import write_fake

PLUGIN = '''
"""A linear probe on each local module's (pooled) output: a method from outside locallearn."""
import functools

from locallearn.methods.method import Flag, Method
from locallearn.recipe.tally import Tally


def head_cost(cfg, site):
    t = Tally()
    t.linear(site.channels, site.num_classes, True)   # the pooling is no multiply-add
    return t


@functools.cache
def head_class():
    import torch.nn as nn
    import torch.nn.functional as F

    class ProbeHead(nn.Module):
        def __init__(self, site, weight):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1) if site.side is not None else nn.Identity()
            self.linear = nn.Linear(site.channels, site.num_classes)
            self.weight = weight

        def forward(self, h, x, y, y_onehot, image=None):
            logits = self.linear(self.pool(h).flatten(1))
            ce = F.cross_entropy(logits, y)
            return self.weight * ce, {"pred_logits": logits, "ce": ce.detach()}
    return ProbeHead


def build_head(cfg, site):
    return head_class()(site, cfg.probe_weight)


METHOD = Method("probe", "a linear probe on each module's pooled output", build_head, head_cost,
                flags=(Flag("--probe-weight", float, 1.0, "probe: weight of each probe's cross-entropy",
                            check=lambda w: None if w > 0 else f"must be > 0, got {w}"),))
CLASH = Method("dgl", "takes a built-in name", build_head, head_cost)
'''
ENTRY_POINTS = """[locallearn.methods]
probe = llplug_probe:METHOD
clash = llplug_probe:CLASH
broken = llplug_missing:METHOD
"""
CELL = "fmnist-mlp-probe"
GRID_COLUMNS = ("cell dataset network model feat_mult num_layers num_hidden loss bio nonlin dropout lr epochs "
                "milestones dim_in_decoder beta cutout length classes_per_batch classes_per_batch_until_epoch "
                "published_error published_params extra_flags").split()
GRID_ROW = [CELL, "FashionMNIST", "mlp", "mlp", "1", "1", "32", "probe", "0", "relu", "0", "0.0005", "1",
            "200 300", "512", "0.99", "0", "", "0", "0", "", "", "--max-train-examples 60 --max-test-examples 40"]


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """(folder on PYTHONPATH holding the package, data folder, child environment)."""
    root = tmp_path_factory.mktemp("plugin")
    site = root / "site"
    (site / "llplug_probe").mkdir(parents=True)
    (site / "llplug_probe" / "__init__.py").write_text(PLUGIN)
    dist = site / "llplug_probe-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: llplug-probe\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    data = root / "data"
    write_fake("FashionMNIST", data, n_train=60, n_test=40)
    env = child_env()
    env["PYTHONPATH"] += os.pathsep + str(site)
    env["LOCALLEARN_DATA"] = str(data)
    return site, data, env


def run(env, *args, cwd=REPO, timeout=300):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


@pytest.mark.slow
def test_the_bad_entry_points_are_one_line_each_and_the_others_work(plugin):
    _, _, env = plugin
    r = run(env, "-m", "locallearn", "describe", "--method", "dgl", "--model", "resnet32", "--dataset", "CIFAR10")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2, r.stderr
    assert "plugin 'broken' (distribution llplug-probe 0.3, entry point broken = llplug_missing:METHOD" in lines[0]
    assert "ModuleNotFoundError" in lines[0]
    assert ("plugin 'clash' (distribution llplug-probe 0.3, entry point clash = llplug_probe:CLASH in group "
            "locallearn.methods) takes the name 'dgl', which locallearn has") in lines[1]
    assert json.loads(r.stdout)["layers"][0]["head"] == "DGLHead"   # the built-in dgl, not the clash
    r = run(env, "-m", "locallearn", "train", "--method", "broken", "--model", "mlp")
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith(
        "locallearn: error: --method broken: plugin 'broken' (distribution llplug-probe 0.3")


@pytest.mark.slow
def test_a_plugin_method_trains_is_described_and_records_its_package(plugin, tmp_path):
    _, _, env = plugin
    out = tmp_path / "run"
    r = run(env, "-m", "locallearn", "train", "--method", "probe", "--probe-weight", "0.5", "--model", "mlp",
            "--dataset", "FashionMNIST", "--num-layers", "2", "--num-hidden", "32", "--epochs", "1",
            "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "probe, 3 local modules" in r.stdout                      # the first line says what trains
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method_source"] == {"method": "probe", "distribution": "llplug-probe", "version": "0.3",
                                        "entry_point": "probe = llplug_probe:METHOD"}
    assert metrics["config"]["probe_weight"] == 0.5
    assert metrics["head_macs"] == 2 * 32 * 10 and metrics["head_params"] == 2 * (32 * 10 + 10)
    from locallearn.track.records import mlflow_tags    # what MLflow is sent, live or mirrored
    tags = mlflow_tags(metrics)
    assert (tags["method_distribution"], tags["method_version"], tags["loss"]) == ("llplug-probe", "0.3", "probe")
    r = run(env, "-m", "locallearn", "describe", "--method", "probe", "--model", "mlp", "--dataset", "FashionMNIST",
            "--num-layers", "2", "--num-hidden", "32")
    assert r.returncode == 0, r.stderr
    assert [(l["head"], l["head_params"]) for l in json.loads(r.stdout)["layers"]] == [("ProbeHead", 330)] * 2
    r = run(env, "-m", "locallearn", "train", "--help")
    assert "--probe-weight" in r.stdout and "probe: a linear probe" in " ".join(r.stdout.split())
    r = run(env, "-m", "locallearn", "train", "--method", "probe", "--probe-weight", "0", "--model", "mlp")
    assert r.returncode != 0 and "--probe-weight: must be > 0, got 0.0" in r.stderr


@pytest.mark.slow
def test_a_plugin_method_fills_a_grid_row_and_the_tables(plugin, tmp_path):
    _, data, env = plugin
    grid = tmp_path / "grid.tsv"
    grid.write_text("\t".join(GRID_COLUMNS) + "\n" + "\t".join(GRID_ROW) + "\n")
    config = ["--config", f"cells={grid}", f"data_dir={data}", "seeds=[1]", "train={device: cpu, gpu: 0}"]
    r = snakemake(tmp_path, "-n", "-p", *config, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "--method probe" in r.stdout
    (tmp_path / "README.md").write_text("# Mine\n\n<!-- locallearn:tables:begin -->\n<!-- locallearn:tables:end -->\n")
    r = snakemake(tmp_path, "--cores", "1", "all", "tables", *config, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    done = json.loads((tmp_path / "results" / "full" / "runs" / CELL / "seed1" / "metrics.json").read_text())
    assert done["method_source"]["distribution"] == "llplug-probe"
    readme = (tmp_path / "README.md").read_text()
    assert "probe" in readme and "not run" not in readme, readme


@pytest.mark.slow
def test_a_plugin_method_passes_every_check_the_built_in_ones_pass(plugin):
    """tests/test_method_contract.py, run where the plugin is installed: its tests are
    parametrized by the registry's names, so the plugin's are there without a line written."""
    _, _, env = plugin
    r = run(env, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "tests" / "test_method_contract.py"),
            "-k", "probe", cwd=REPO / "tests")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1].startswith("4 passed"), r.stdout[-500:]   # locality, step, cost, flags
