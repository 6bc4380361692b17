"""The Snakemake harness: config and cells.tsv validation (locallearn/workflow/plan.py),
the DAG (`snakemake -n`: one training job per cell x seed), `snakemake --lint`, bad
configs failing before any job, and the quick preset end to end on the real
Fashion-MNIST with MLflow (slow; needs the trainer)."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CELLS_TSV as CELLS, QUICK_BUDGET, QUICK_CELLS, REPO, child_env, made_once, needs_fmnist, snakemake

from locallearn.recipe.config import config_hash
from locallearn.workflow import plan


# --------------------------------------------------------------------------- plan (fast)

def test_default_config_and_grid():
    cfg = plan.load_config()
    rows = plan.load_cells(plan.cells_path(cfg))
    assert len(rows) == 86
    presets = plan.make_presets(cfg, rows)
    assert len(presets["full"].rows) == 86 and presets["full"].seeds == [1]
    assert [r["cell"] for r in presets["quick"].rows] == [
        "fmnist-mlp-backprop", "fmnist-mlp-pred", "fmnist-mlp-sim", "fmnist-mlp-predsim"]
    assert presets["quick"].budget_args() == ["--epochs", "2"]
    assert presets["full"].budget_args() == []
    assert presets["quick"].metrics("c", 3) == "results/quick/runs/c/seed3/metrics.json"


@pytest.mark.parametrize("override, message", [
    ({"colour": "red"}, "config: unknown key ('colour' was unexpected)"),
    ({"train": {"threads": "many"}}, "config key 'train.threads': 'many' is not of type 'integer'"),
    ({"quick": {"epochs": 0}}, "config key 'quick.epochs': 0 is less than the minimum of 1"),
    ({"seeds": ["1", "x"]}, "config key 'seeds.1': 'x' is not of type 'integer'"),
    ({"tolerance": {"Cifar10": 1}}, "config key 'tolerance': unknown key 'Cifar10'"),
    ({"mlflow": {"url": "x"}}, "config key 'mlflow': unknown key ('url' was unexpected)"),
    ({"train": {"device": "gpu"}}, "config key 'train.device': 'gpu' does not match"),
])
def test_bad_config_names_the_key(override, message):
    with pytest.raises(plan.PlanError) as e:
        plan.load_config(overrides=override)
    assert message in str(e.value)


def test_command_line_strings_are_coerced():
    # `--config seeds=[1,2] quick={epochs: 3}` reaches the Snakefile as strings
    cfg = plan.load_config(overrides={"seeds": ["1", "2"], "quick": {"epochs": "3", "max_train_examples": "512"},
                                         "download": "true", "mlflow": {"uri": "null"}})
    assert cfg["seeds"] == [1, 2] and cfg["quick"]["epochs"] == 3 and cfg["download"] is True
    assert cfg["mlflow"]["uri"] == "null"           # a string key stays a string
    assert cfg["quick"]["select"]["datasets"] == ["FashionMNIST"]   # merged, not replaced


def test_select():
    rows = plan.load_cells(CELLS)
    pick = lambda **sel: [r["cell"] for r in plan.select_cells(rows, sel)]  # noqa: E731
    assert pick(cells=["cifar10-vgg11b-x3-*"]) == [
        "cifar10-vgg11b-x3-backprop", "cifar10-vgg11b-x3-pred", "cifar10-vgg11b-x3-sim",
        "cifar10-vgg11b-x3-predsim", "cifar10-vgg11b-x3-cutout-predsim"]
    assert len(pick(datasets=["MNIST", "KuzushijiMNIST"])) == 18
    assert pick(models=["mlp"], losses=["predsim"], datasets=["CIFAR100"]) == ["cifar100-mlp-predsim"]
    assert len(pick(networks=["vgg8b + cutout"])) == 4
    with pytest.raises(plan.PlanError, match=r"'select.datasets': 'cifar10' matches no row"):
        pick(datasets=["cifar10"])
    with pytest.raises(plan.PlanError, match=r"'select.cells': 'nope-\*' matches no cell"):
        pick(cells=["nope-*"])
    with pytest.raises(plan.PlanError, match="select no cell"):
        pick(datasets=["MNIST"], models=["vgg11b"])


def _bad_tsv(tmp_path: Path, edit) -> Path:
    lines = CELLS.read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:]]
    header, rows = edit(header, rows)
    p = tmp_path / "cells.tsv"
    p.write_text("\n".join(["\t".join(header)] + ["\t".join(r.get(c, "") for c in header) for r in rows]) + "\n")
    return p


def _set(i, col, value):
    def edit(header, rows):
        rows[i][col] = value
        return header, rows
    return edit


@pytest.mark.parametrize("edit, message", [
    (_set(3, "dataset", "Cifar10"), "cells.tsv line 5 (cell mnist-mlp-predsim), column 'dataset': 'Cifar10' is not one of"),
    (_set(0, "lr", "fast"), "cells.tsv line 2 (cell mnist-mlp-backprop), column 'lr': expected a number, got 'fast'"),
    (_set(1, "epochs", "1.5"), "line 3 (cell mnist-mlp-pred), column 'epochs': expected an integer"),
    (_set(2, "loss", "global"), "column 'loss': 'global' is not one of backprop, pred, sim, predsim"),
    (_set(8, "length", ""), "line 10 (cell mnist-vgg8b-cutout-predsim), column 'length'"),
    (_set(4, "milestones", "50,75"), "column 'milestones': '50,75' does not match"),
    (_set(5, "cell", "mnist-mlp-backprop"), "cell name 'mnist-mlp-backprop' already used on line 2"),
    (_set(6, "network", "mlp"), "both fill the table slot dataset=MNIST network='mlp' column=sim"),
    (lambda h, r: ([c for c in h if c != "epochs"], r), "missing column(s) 'epochs'"),
    (lambda h, r: ([c for c in h if c != "dropout"], r), "missing column(s) 'dropout'"),   # the paper's format
    (lambda h, r: (h + ["notes"], r), "unknown column(s) 'notes'"),
])
def test_bad_cells_row_names_row_and_column(tmp_path, edit, message):
    with pytest.raises(plan.PlanError) as e:
        plan.load_cells(_bad_tsv(tmp_path, edit))
    assert message in str(e.value)


def test_tracking_uri_and_data_dir(monkeypatch):
    cfg = plan.load_config()
    quick = plan.make_presets(cfg, plan.load_cells(CELLS))["quick"]
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LOCALLEARN_DATA", raising=False)
    assert plan.tracking_uri(cfg, quick) == "sqlite:///" + str(Path("results/quick/mlflow.db").resolve())
    assert plan.data_dir(cfg) == "data"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://server:5000")
    monkeypatch.setenv("LOCALLEARN_DATA", "/data")
    assert plan.tracking_uri(cfg, quick) == "http://server:5000"
    assert plan.data_dir(cfg) == "/data"
    cfg["mlflow"]["uri"] = "sqlite:///x.db"
    assert plan.tracking_uri(cfg, quick) == "sqlite:///x.db"


def test_cost_model(tmp_path):
    """runtime from the FLOP model (recipe/cost.py's counts) until a measured grid-cost table of
    the preset's kind of device and precision exists, then from that table."""
    from locallearn.recipe import gridcost
    rows = {r["cell"]: r for r in plan.load_cells(CELLS)}
    cfg = plan.load_config(overrides={"results_dir": str(tmp_path)})
    full = plan.make_presets(cfg, list(rows.values()))["full"]
    small, big = (plan.runtime_minutes(rows[c], cfg, full) for c in ("mnist-mlp-backprop", "cifar10-vgg11b-x3-predsim"))
    assert 10 < small < big
    assert plan.estimate_hours(rows["mnist-mlp-sim"], cfg["estimate"]) > \
        plan.estimate_hours(rows["mnist-mlp-backprop"], cfg["estimate"])          # the sim heads cost
    path = gridcost.table_path(tmp_path, "cuda", "fp32")
    path.parent.mkdir(parents=True)
    cell = {"seconds_per_step": 0.01, "seconds_per_test_image": 1e-5}
    path.write_text(json.dumps({"batch_size": 128, "scale": 1, "cells": {"cifar10-vgg11b-x3-predsim": cell}}))
    # 400 epochs x (391 steps x 10 ms + 10,000 x 10 us) = 1604 s = 26.7 min; x3 + 10
    assert plan.runtime_minutes(rows["cifar10-vgg11b-x3-predsim"], cfg, full) == math.ceil(1604 / 60 * 3) + 10
    assert plan.runtime_minutes(rows["mnist-mlp-backprop"], cfg, full) == small   # not measured: the model
    full.precision = "bf16"                                                            # another precision's table
    assert plan.runtime_minutes(rows["cifar10-vgg11b-x3-predsim"], cfg, full) == big
    cfg["train"]["runtime_minutes"] = {"CIFAR10": 600}
    assert plan.runtime_minutes(rows["cifar10-vgg11b-x3-predsim"], cfg, full) == 600


def test_precision_setting_reaches_the_flags():
    """train.precision: fp32 adds no flag (a float32 grid's finished cells keep their
    params, so Snakemake retrains none); another precision is a flag, and a new run."""
    cfg = plan.load_config()
    rows = plan.load_cells(CELLS)
    assert plan.make_presets(cfg, rows)["full"].precision_args() == []
    cfg = plan.load_config(overrides={"train": {"precision": "bf16"}})
    assert plan.make_presets(cfg, rows)["full"].precision_args() == ["--precision", "bf16"]
    with pytest.raises(plan.PlanError, match="config key 'train.precision': 'fp16' is not one of fp32, tf32, bf16"):
        plan.load_config(overrides={"train": {"precision": "fp16"}})


def test_schema_enums_match_the_package():
    from locallearn.recipe.cells import COLUMNS, losses
    schema = json.loads((REPO / "workflow" / "schemas" / "cells.schema.json").read_text())
    assert tuple(schema["required"]) == COLUMNS
    assert tuple(schema["properties"]["loss"]["enum"]) == losses()   # no plugin installed here


def test_generating_the_schemas_enums_again_changes_nothing(tmp_path):
    """The committed lists are the registries' (python -m locallearn.workflow.schemas); a
    registry changed without regenerating, or a list edited by hand, fails here."""
    from locallearn.workflow import schemas
    for name in schemas.FILES:
        text = (REPO / "workflow" / "schemas" / name).read_text()
        assert schemas.regenerate(text) == text, f"{name}: run python -m locallearn.workflow.schemas"
    # and the command puts a stale list right
    stale = (REPO / "workflow" / "schemas" / "cells.schema.json").read_text().replace('"auglocal"]', '"other"]')
    assert schemas.regenerate(stale) == (REPO / "workflow" / "schemas" / "cells.schema.json").read_text()


def enums(node) -> dict[str, list]:
    """{where: enum} of every "enum" in a schema, where being the key path."""
    found = {}

    def walk(n, path):
        if isinstance(n, dict):
            if "enum" in n:
                found[path] = n["enum"]
            for k, v in n.items():
                walk(v, f"{path}.{k}" if path else k)
        elif isinstance(n, list):
            for k, v in enumerate(n):
                walk(v, f"{path}.{k}")
    walk(node, "")
    return found


def test_schemas_stand_alone_and_list_what_the_package_knows():
    """The schemas are read as they stand (nothing filled in at load time where no plugin
    method is installed), and each list
    they hold equals the package's: datasets = locallearn.recipe.specs.SPECS, models = the model
    registry, precisions = the --precision choices. A dataset or model added on one side
    only fails here."""
    from locallearn.recipe.config import CHOICES
    from locallearn.nets.models import MODELS
    from locallearn.recipe.specs import SPECS
    cells = json.loads((REPO / "workflow" / "schemas" / "cells.schema.json").read_text())
    config = json.loads((REPO / "workflow" / "schemas" / "config.schema.json").read_text())
    assert plan._schema("cells.schema.json") == cells and plan._schema("config.schema.json") == config
    assert "x-locallearn-enum" not in json.dumps(cells) + json.dumps(config)
    assert enums(cells)["properties.dataset"] == enums(config)["$defs.dataset"] == list(SPECS)
    assert enums(cells)["properties.model"] == list(MODELS)
    for preset in ("train", "quick"):
        assert enums(config)[f"properties.{preset}.properties.precision"] == list(CHOICES["precision"])
    # no other list of datasets, models or precisions hides in either schema
    known = {tuple(SPECS), tuple(MODELS), tuple(CHOICES["precision"])}
    for where, values in {**enums(cells), **enums(config)}.items():
        assert tuple(values) in known or not set(values) & {*SPECS, *MODELS, *CHOICES["precision"]}, where


def test_plan_validates_through_snakemakes_validate(monkeypatch):
    """The config and every cells.tsv row are judged by Snakemake's validate() on the
    schema files themselves; plan.py only says its error in one line."""
    import snakemake.utils
    original, seen = snakemake.utils.validate, []

    def recording(data, schema, set_default=True):
        seen.append(Path(schema).name)
        return original(data, schema, set_default)

    monkeypatch.setattr(snakemake.utils, "validate", recording)
    config = plan.load_config()
    rows = plan.load_cells(plan.cells_path(config))
    assert seen == ["config.schema.json"] + ["cells.schema.json"] * len(rows)

    def refusing(data, schema, set_default=True):   # what validate() decides is what plan says
        original({**data, "train": {**data["train"], "precision": "fp64"}}, schema, set_default)

    monkeypatch.setattr(snakemake.utils, "validate", refusing)
    with pytest.raises(plan.PlanError, match=r"^invalid workflow config .*config key 'train.precision': 'fp64' is not one of fp32"):
        plan.load_config()


def test_snakemakes_own_validate_reads_the_schemas_as_they_stand():
    """Snakemake's validate(), given only the schema files, accepts the committed config
    and every row of both grids (as plan.py types them), and refuses what plan.py refuses:
    the schemas need nothing from locallearn at load time."""
    import yaml
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate
    schemas = REPO / "workflow" / "schemas"
    config = yaml.safe_load((REPO / "workflow" / "config" / "config.yaml").read_text())
    validate(config, str(schemas / "config.schema.json"), set_default=False)
    for grid in ("cells.tsv", "peers.tsv"):
        for row in plan.load_cells(REPO / "workflow" / "config" / grid):
            typed = {k: (None if v == "" else v) for k, v in row.items()}
            for key, schema in json.loads((schemas / "cells.schema.json").read_text())["properties"].items():
                types = schema.get("type") or []
                types = [types] if isinstance(types, str) else types
                if typed.get(key) is None:
                    continue
                if "integer" in types:
                    typed[key] = int(typed[key])
                elif "number" in types:
                    typed[key] = float(typed[key])
            validate(typed, str(schemas / "cells.schema.json"), set_default=False)
    with pytest.raises(WorkflowError, match="fp64"):
        validate({**config, "train": {**config["train"], "precision": "fp64"}},
                 str(schemas / "config.schema.json"), set_default=False)
    with pytest.raises(WorkflowError, match="EMNIST"):
        validate({**typed, "dataset": "EMNIST"}, str(schemas / "cells.schema.json"), set_default=False)


# --------------------------------------------------------------------------- snakemake

def job_counts(output: str) -> dict[str, int]:
    """{rule: jobs} of Snakemake's job stats; {} when it had nothing to do."""
    if "Job stats:" not in output:
        assert "Nothing to be done" in output, output[-3000:]
        return {}
    stats = output[output.index("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


@pytest.mark.slow
def test_dry_run_schedules_one_train_job_per_cell_and_seed(tmp_path):
    r = snakemake(tmp_path, "-n")
    assert r.returncode == 0, r.stderr + r.stdout
    counts = job_counts(r.stdout)
    assert counts["train"] == 86 and counts["prepare_data"] == 7 and counts["tracking_init"] == 1
    assert counts["curve"] == counts["layers"] == 86 and counts["compile_tables"] == 1 and counts["splice_readme"] == 1

    r = snakemake(tmp_path, "-n", "--config", "seeds=[1,2,3]", "select={datasets: [CIFAR100], losses: [predsim]}")
    assert r.returncode == 0, r.stderr
    assert job_counts(r.stdout)["train"] == 15 and job_counts(r.stdout)["prepare_data"] == 1

    r = snakemake(tmp_path, "-n", "quick")
    assert r.returncode == 0, r.stderr
    assert job_counts(r.stdout)["train"] == 4
    assert "results/quick/runs/fmnist-mlp-sim/seed1/metrics.json" in r.stdout
    assert not (tmp_path / "results").exists()            # a dry run writes nothing


def test_lint_passes(tmp_path):
    r = snakemake(tmp_path, "--lint")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Congratulations" in r.stdout + r.stderr


@pytest.mark.parametrize("config, message", [
    (["colour=red"], "unknown key ('colour' was unexpected)"),
    (["quick={epochs: many}"], "config key 'quick.epochs': 'many' is not of type 'integer'"),
    (["select={losses: [global]}"], "'select.losses': 'global' matches no row"),
])
def test_bad_config_fails_before_any_job(tmp_path, config, message):
    r = snakemake(tmp_path, "--cores", "1", "quick", "--config", *config)
    assert r.returncode != 0
    assert message in r.stderr + r.stdout
    assert not (tmp_path / "results").exists()


def test_bad_cells_row_fails_before_any_job(tmp_path):
    bad = _bad_tsv(tmp_path, _set(10, "dataset", "FMNIST"))
    r = snakemake(tmp_path, "--cores", "1", "quick", "--config", f"cells={bad}")
    assert r.returncode != 0
    assert "line 12 (cell fmnist-mlp-pred), column 'dataset': 'FMNIST' is not one of" in r.stderr + r.stdout
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------- end to end

@pytest.mark.slow
@needs_fmnist
def test_quick_end_to_end_with_mlflow(finished_quick, tmp_path):
    """`snakemake --cores 2 quick` on the real Fashion-MNIST (2 epochs, 1000/500 examples;
    the session's finished_quick, in a copy of its folder): tables, figures, one FINISHED
    MLflow run per cell holding metrics.json's test error; a second run trains nothing and
    adds no MLflow run; a changed budget trains every cell again, the old runs kept."""
    made, output = finished_quick
    shutil.copytree(made, tmp_path, symlinks=True, dirs_exist_ok=True)
    budget = QUICK_BUDGET
    quick = tmp_path / "results" / "quick"
    cells = QUICK_CELLS
    metrics = {c: json.loads((quick / "runs" / c / "seed1" / "metrics.json").read_text()) for c in cells}
    for c, m in metrics.items():
        assert m["epochs"] == 2 and len(m["history"]) == 2 and 0 <= m["test_error"] <= 100
        assert (quick / "figures" / "curves" / f"{c}.png").read_bytes()[:4] == b"\x89PNG"
        log = (quick / "runs" / c / "seed1" / "train.log").read_text()   # the attempt's header: the command
        assert "--max-train-examples 1000" in log and "--threads 1" in log and f"--run-name {c}-s1" in log
        job = (quick / "logs" / "train" / c / "seed1.log").read_text()    # the job's lines, each named
        assert job and all(ln.startswith(f"[{c}-s1] ") for ln in job.splitlines() if not ln.startswith("# "))
    assert (quick / "figures" / "scatter.png").is_file()
    summary = (quick / "tables" / "summary.md").read_text()
    assert summary.count("[2/200 ep, 1000 train ex, 500 test ex]") == 4 and "budget run (not compared)" in summary
    readme = (quick / "README.md").read_text()
    assert "Quick preset: a budget run" in readme and "(figures/curves/fmnist-mlp-pred.png)" in readme
    assert not (tmp_path / "README.md").exists() and not (tmp_path / "results" / "full").exists()
    # the end of the run: where everything is, and the verdicts (read from summary.csv)
    assert "locallearn: quick preset done." in output
    assert "verdicts: 0 within tolerance, 0 outside, 4 budget runs" in output
    assert (quick / "tables" / "summary.csv").read_text().count("budget run (not compared)") == 4

    import mlflow
    uri = "sqlite:///" + str(quick / "mlflow.db")

    def finished_runs():
        mlflow.set_tracking_uri(uri)
        df = mlflow.search_runs(experiment_names=["locallearn-quick"])
        return df

    runs = finished_runs()
    assert sorted(runs["tags.mlflow.runName"]) == sorted(f"{c}-s1" for c in cells)
    assert set(runs["status"]) == {"FINISHED"}
    for _, run in runs.iterrows():
        cell = run["tags.cell"]
        assert run["metrics.test_error"] == metrics[cell]["test_error"]
        assert run["tags.seed"] == "1" and run["tags.preset"] == "quick"

    stamps = {c: (quick / "runs" / c / "seed1" / "metrics.json").stat().st_mtime_ns for c in cells}
    # finished runs are never scheduled again (the figures and tables may be redrawn once:
    # the runs they waited for are no longer jobs, a change of their input files)
    r = snakemake(tmp_path, "--cores", "2", "quick", "--config", budget, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "train" not in job_counts(r.stdout + r.stderr)
    assert stamps == {c: (quick / "runs" / c / "seed1" / "metrics.json").stat().st_mtime_ns for c in cells}
    again = finished_runs()
    assert sorted(again["run_id"]) == sorted(runs["run_id"])

    # a changed budget is a changed recipe: the cells are trained again, each old run folder
    # is first moved aside whole (metrics.json and checkpoint kept; its numbers stay in
    # MLflow), the new runs start fresh
    r = snakemake(tmp_path, "--cores", "2", "quick", "--config",
                  budget.replace("epochs: 2", "epochs: 1"), timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    for c in cells:
        assert json.loads((quick / "runs" / c / "seed1" / "metrics.json").read_text())["epochs"] == 1
        moved = list((quick / "runs" / c).glob("seed1.replaced-*"))
        assert len(moved) == 1 and (moved[0] / "checkpoint.pt").is_file()
        assert json.loads((moved[0] / "metrics.json").read_text()) == metrics[c]
        assert json.loads((moved[0] / "replaced.json").read_text())["test_error"] == metrics[c]["test_error"]
    assert len(finished_runs()) == 8
    assert (quick / "tables" / "summary.md").read_text().count("[1/200 ep, 1000 train ex, 500 test ex]") == 4


@pytest.mark.slow
@needs_fmnist
def test_pipelined_cell_runs_under_torchrun(tmp_path):
    """A cell of config pipeline_stages runs as S processes started by torchrun, asks
    for S x threads, logs one FINISHED MLflow run; taking it out of pipeline_stages
    retrains nothing (same numbers, not a recipe flag)."""
    budget = ("quick={epochs: 1, max_train_examples: 512, max_test_examples: 256, "
              "select: {cells: [fmnist-mlp-predsim]}}")
    r = snakemake(tmp_path, "--cores", "2", "quick", "--config", budget,
                  "pipeline_stages={fmnist-mlp-predsim: 2}", timeout=600)
    assert r.returncode == 0, r.stderr[-5000:]
    run = tmp_path / "results" / "quick" / "runs" / "fmnist-mlp-predsim" / "seed1"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["pipeline"]["stages"] == 2 and metrics["epochs"] == 1
    assert len(metrics["history"][0]["stage_wait_seconds"]) == 2
    log = (tmp_path / "results" / "quick" / "logs" / "train" / "fmnist-mlp-predsim" / "seed1.log").read_text()
    assert "-m torch.distributed.run --standalone --nproc-per-node=2" in log   # the trainer's launcher
    assert "--pipeline-stages 2" in log and "--threads 1" in log
    assert re.search(r"threads: 2\b", r.stdout + r.stderr)

    import mlflow
    mlflow.set_tracking_uri("sqlite:///" + str(tmp_path / "results" / "quick" / "mlflow.db"))
    runs = mlflow.search_runs(experiment_names=["locallearn-quick"])
    assert list(runs["status"]) == ["FINISHED"] and list(runs["metrics.test_error"]) == [metrics["test_error"]]

    r = snakemake(tmp_path, "--cores", "2", "quick", "--config", budget, timeout=300)
    assert r.returncode == 0 and "train" not in job_counts(r.stdout + r.stderr)


def test_pipeline_stages_config():
    config = plan.load_config(overrides={"pipeline_stages": {"cifar10-vgg11b-x3-*": 4, "fmnist-mlp-pred": 2}})
    rows = plan.load_cells(CELLS)
    stages = plan.pipeline_stages(config, rows)
    assert {c: s for c, s in stages.items() if s > 1} == {
        "cifar10-vgg11b-x3-pred": 4, "cifar10-vgg11b-x3-sim": 4, "cifar10-vgg11b-x3-predsim": 4,
        "cifar10-vgg11b-x3-cutout-predsim": 4, "fmnist-mlp-pred": 2}   # the backprop cell stays whole
    from locallearn.recipe.cost import network_cost
    vgg11b = next(r for r in rows if r["cell"] == "cifar10-vgg11b-predsim")
    assert network_cost(plan.recipe(vgg11b)).blocks == 10  # 8 convs + 2 linear
    for bad, message in (({"nope-*": 2}, "'nope-*' matches no cell of cells.tsv"),
                         ({"fmnist-mlp-backprop": 2}, "fmnist-mlp-backprop is a backprop cell"),
                         ({"fmnist-mlp-pred": 4}, "fmnist-mlp-pred: --pipeline-stages 4: the network has only 3 "
                                                  "hidden blocks to split")):
        with pytest.raises(plan.PlanError, match=re.escape(message)):
            plan.pipeline_stages(plan.load_config(overrides={"pipeline_stages": bad}), rows)
    with pytest.raises(plan.PlanError, match="'pipeline_stages.fmnist-mlp-pred': 0 is less than the minimum of 1"):
        plan.load_config(overrides={"pipeline_stages": {"fmnist-mlp-pred": 0}})


@pytest.mark.slow
def test_dry_run_asks_pipelined_cells_for_s_gpus_and_threads(tmp_path):
    r = snakemake(tmp_path, "-n", "--cores", "16", "--config", "select={cells: [cifar10-vgg11b-x3-pred]}",
                  "pipeline_stages={cifar10-vgg11b-x3-*: 4}", "train={threads: 3, gpu: 1}")
    assert r.returncode == 0, r.stderr + r.stdout
    assert re.search(r"threads: 12\b", r.stdout) and "gpu=4" in r.stdout
    r = snakemake(tmp_path, "-n", "--config", "pipeline_stages={mnist-mlp-backprop: 2}")
    assert r.returncode != 0 and "mnist-mlp-backprop is a backprop cell" in r.stdout + r.stderr


def test_budget_flags_replace_the_recipe_values():
    args = ["--model", "mlp", "--epochs", "200", "--lr-decay-milestones", "100", "150", "--beta", "0.99"]
    assert plan.with_flags(args, ["--epochs", "2", "--max-train-examples", "512"]) == [
        "--model", "mlp", "--epochs", "2", "--lr-decay-milestones", "100", "150", "--beta", "0.99",
        "--max-train-examples", "512"]
    assert plan.with_flags(args, []) == args


@pytest.mark.slow
def test_tables_target_compiles_existing_runs_without_training(tmp_path):
    shutil.copytree(REPO / "tests" / "fixtures" / "runs", tmp_path / "results" / "full" / "runs")
    readme = tmp_path / "README.md"
    readme.write_text("# Mine\n\n<!-- locallearn:tables:begin -->\n<!-- locallearn:tables:end -->\n\nKept.\n")
    r = snakemake(tmp_path, "--cores", "1", "tables")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "train" not in job_counts(r.stdout + r.stderr)
    text = readme.read_text()
    assert text.startswith("# Mine\n\n<!-- locallearn:tables:begin -->\nFull recipes, seeds: 1;")
    assert text.endswith("<!-- locallearn:tables:end -->\n\nKept.\n")
    assert re.search(r"\| \[fmnist-mlp-backprop\]\(results/full/figures/curves/fmnist-mlp-backprop\.png\) +\| 1 ", text)
    assert "8.40 (8.37)" in text and "not run (0.75)" in text     # seeds: [1] -> seed 1 only
    assert (tmp_path / "results" / "full" / "figures" / "scatter.png").is_file()
    assert not (tmp_path / "results" / "full" / "runs" / "mnist-mlp-backprop").exists()


@pytest.mark.slow
def test_report_holds_tables_scatter_every_curve_and_runtimes(tmp_path):
    """`snakemake --report report.html` after a run: the tables, the scatter and every
    cell's learning curve and per-layer figure (categorised by dataset), with each job's
    runtime. The runs are fixtures, marked prepared so that no training job is scheduled."""
    import base64
    cells = ["fmnist-mlp-backprop", "fmnist-mlp-pred", "fmnist-mlp-predsim", "cifar100-mlp-backprop"]
    full = tmp_path / "results" / "full"
    for marker in (tmp_path / "results" / ".prepared" / "FashionMNIST.ok",
                   tmp_path / "results" / ".prepared" / "CIFAR100.ok", full / "mlflow.init.json"):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    time.sleep(0.05)
    preset = plan.make_presets(plan.load_config(), plan.load_cells(CELLS))["full"]
    for c in cells:   # runs of their rows' recipes (the trainer's rule), newer than the markers
        shutil.copytree(REPO / "tests" / "fixtures" / "runs" / c / "seed1", full / "runs" / c / "seed1")
        metrics = full / "runs" / c / "seed1" / "metrics.json"
        cfg = plan.train_config(preset.args(next(r for r in preset.rows if r["cell"] == c)) + ["--seed", "1"])
        m = json.loads(metrics.read_text())
        m.update(config=vars(cfg), config_hash=config_hash(cfg))
        metrics.write_text(json.dumps(m))
    (tmp_path / "README.md").write_text("# x\n\n<!-- locallearn:tables:begin -->\n<!-- locallearn:tables:end -->\n")
    select = "select={cells: [%s]}" % ", ".join(cells)
    r = snakemake(tmp_path, "--cores", "1", "--config", select)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "train" not in job_counts(r.stdout + r.stderr)
    r = snakemake(tmp_path, "--config", select, "--report", "report.html")
    assert r.returncode == 0, r.stderr[-3000:]
    html = (tmp_path / "report.html").read_text()
    categories = json.loads(re.search(r"var categories = (\{.*?\});\n", html).group(1))
    curves = "results/full/figures/curves/{}.png"
    assert categories["Learning curves"] == {"FashionMNIST": [curves.format(c) for c in cells[:3]],
                                             "CIFAR100": [curves.format(cells[3])]}
    layers = "results/full/figures/layers/{}.png"
    assert categories["Per-layer errors"] == {"FashionMNIST": [layers.format(c) for c in cells[:3]],
                                              "CIFAR100": [layers.format(cells[3])]}
    assert categories["Ours vs published"] == {"Other": ["results/full/figures/scatter.png"]}
    assert sorted(categories["Tables"]["Other"]) == ["results/full/tables/pending.md", "results/full/tables/summary.md",
                                                     "results/full/tables/tables.md"]
    summary = re.search(r'"results/full/tables/summary.md": \{.*?"data_uri": "data:text/markdown;[^,]*,([^"]+)"', html)
    assert base64.b64decode(summary.group(1)).decode() == (full / "tables" / "summary.md").read_text()
    runtimes = re.findall(r'\{"rule": "(\w+)", "runtime": [0-9.]+\}', html)
    assert sorted(runtimes) == sorted(["compile_tables", "scatter", "splice_readme", *["curve"] * 4, *["layers"] * 4])


def committed_clone(dest: Path) -> None:
    """What a fresh clone holds of the results: each committed run's metrics.json, and the README."""
    for m in sorted((REPO / "results" / "full" / "runs").glob("*/seed*/metrics.json")):
        (dest / m.relative_to(REPO)).parent.mkdir(parents=True)
        shutil.copy(m, dest / m.relative_to(REPO))
    shutil.copy(REPO / "README.md", dest / "README.md")


def made_files(root: Path) -> dict[str, bytes]:
    """What the tables target and `locallearn tables` write: the README, the tables, the figures."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in
            [root / "README.md", *sorted((root / "results" / "full" / "tables").rglob("*.md")),
             *sorted((root / "results" / "full" / "figures").rglob("*.png"))]}


@pytest.fixture(scope="session")
def committed_tables(tmp_path_factory):
    """A fresh clone's results (committed_clone) after one `snakemake --cores 1 tables`,
    made once per session (made_once), shared by the tests that read what it made: (its
    folder, the command's stdout, made_files as it left them)."""
    def make(root: Path) -> str:
        committed_clone(root)
        (root / "workflow").symlink_to(REPO / "workflow")      # the CLI's defaults, as in a checkout
        r = snakemake(root, "--cores", "1", "tables")
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout
    root, stdout = made_once(tmp_path_factory, "committed-tables", make)
    return root, stdout, made_files(root)


@pytest.mark.slow
def test_committed_results_regenerate_the_readme_byte_for_byte(committed_tables):
    """The README's tables, and results/full/tables/*.md, are exactly what `snakemake
    tables` makes of the committed metrics.json files (results/full/runs), and nothing else."""
    _, _, made = committed_tables
    assert made["README.md"] == (REPO / "README.md").read_bytes()
    tables_dir = Path("results") / "full" / "tables"
    for md in sorted((REPO / tables_dir).glob("*.md")):    # and the committed table files
        assert made[(tables_dir / md.name).as_posix()].decode() == md.read_text(), md.name


@pytest.mark.slow
def test_tables_target_makes_the_committed_runs_browsable(committed_tables, tmp_path):
    """A fresh clone holds only the runs' metrics.json: `snakemake --cores 1 tables`
    mirrors each into results/full's MLflow store (one FINISHED run per cell x seed, the
    whole history); running it again changes nothing."""
    from mlflow import MlflowClient
    made, stdout, _ = committed_tables
    committed = sorted((made / "results" / "full" / "runs").glob("*/seed*/metrics.json"))
    assert f"browse: mlflow ui --backend-store-uri sqlite:///{made / 'results' / 'full' / 'mlflow.db'}" in stdout
    shutil.copytree(made, tmp_path, symlinks=True, dirs_exist_ok=True)   # the target runs again in a copy
    full = tmp_path / "results" / "full"
    client = MlflowClient(f"sqlite:///{full / 'mlflow.db'}")
    exp = client.get_experiment_by_name("locallearn")
    runs = {run.info.run_name: run for run in client.search_runs([exp.experiment_id])}
    assert len(runs) == len(committed)
    for m in committed:
        doc = json.loads(m.read_text())
        run = runs[doc["run_name"]]
        assert run.info.status == "FINISHED" and run.data.metrics["test_error"] == doc["test_error"]
        assert len(client.get_metric_history(run.info.run_id, "test_error")) == doc["epochs"]
    r = snakemake(tmp_path, "--cores", "1", "tables")
    assert r.returncode == 0, r.stderr[-3000:]
    log = (full / "logs" / "tables-target.log").read_text()
    assert f"{len(committed)} finished runs (0 created, 0 updated, {len(committed)} unchanged)" in log
    assert len(client.search_runs([exp.experiment_id])) == len(committed)


def test_committed_runs_are_whole_recipes():
    """Every committed run (results/full/runs) is a finished full-recipe run of its row:
    the row's epochs of history, the final test error its last epoch's, seed and recipe
    as the workflow runs them."""
    from locallearn.recipe.cells import recipe_args
    rows = {r["cell"]: r for r in plan.load_cells(CELLS)}
    committed = sorted((REPO / "results" / "full" / "runs").glob("*/seed*/metrics.json"))
    for path in committed:
        cell, seed = path.parts[-3], int(path.parts[-2][len("seed"):])
        m = json.loads(path.read_text())
        row = rows[cell]
        assert m["epochs"] == len(m["history"]) == int(row["epochs"]), path
        assert [e["epoch"] for e in m["history"]] == list(range(1, int(row["epochs"]) + 1))
        assert m["test_error"] == m["history"][-1]["test_error"] and m["seed"] == seed
        args = recipe_args(row)
        for flag in ("--model", "--dataset", "--lr", "--dropout", "--num-hidden", "--num-layers"):
            want = args[args.index(flag) + 1]
            got = m["config"][flag[2:].replace("-", "_")]
            assert str(got) == want or float(got) == float(want), (path, flag, got, want)
        assert m["config"]["max_train_examples"] == 0 and m["config"]["max_test_examples"] == 0


def test_committed_runs_keep_their_config_hash():
    """A flag added at its default leaves every committed run's config hash alone; a new
    hash would make the trainer refuse the finished run as one of another config."""
    from locallearn.recipe.config import config_hash, parse_train_args
    committed = sorted((REPO / "results" / "full" / "runs").glob("*/seed*/metrics.json"))
    assert committed
    for path in committed:
        m = json.loads(path.read_text())
        cfg = parse_train_args([])       # every flag at its default,
        vars(cfg).update(m["config"])    # then the run's own values
        assert config_hash(cfg) == m["config_hash"], path


# --------------------------------------------------------------------------- which runs are scheduled

def _committed_run(dest: Path, cell: str = "fmnist-mlp-pred") -> Path:
    run = dest / "results" / "full" / "runs" / cell / "seed1"
    run.mkdir(parents=True)
    shutil.copy(REPO / "results" / "full" / "runs" / cell / "seed1" / "metrics.json", run / "metrics.json")
    return run


def test_finished_runs_are_never_jobs_and_a_changed_recipe_is_set_aside_first(tmp_path):
    run = _committed_run(tmp_path)
    os.utime(run / "metrics.json", (1, 1))                  # older than every script and input
    select = "select={datasets: [FashionMNIST], models: [mlp]}"
    for extra in ([], ["--forceall"], ["--rerun-triggers", "mtime", "code", "params", "input", "software-env"]):
        r = snakemake(tmp_path, "-n", *extra, "--config", select)
        assert r.returncode == 0, r.stderr + r.stdout
        assert job_counts(r.stdout)["train"] == 3 and "set_aside" not in job_counts(r.stdout)
        assert "runs/fmnist-mlp-pred/seed1/metrics.json" not in r.stdout   # no job's input or output
    # settings that do not change the numbers schedule nothing more
    r = snakemake(tmp_path, "-n", "--config", select, "train={device: cpu, gpu: 0, threads: 2}",
                  "mlflow={uri: http://elsewhere:5000}", "data_dir=/elsewhere")
    assert job_counts(r.stdout)["train"] == 3
    # a changed recipe (train.extra_args) retrains all four, the finished one moved aside first
    r = snakemake(tmp_path, "-n", "--config", select, "train={extra_args: [--precision, bf16]}")
    assert r.returncode == 0, r.stderr + r.stdout
    counts = job_counts(r.stdout)
    assert counts["train"] == 4 and counts["set_aside"] == 1
    assert re.search(r"output: results/full/runs/fmnist-mlp-pred/seed1\.replaced-\d{8}-\d{6}/replaced\.json", r.stdout)
    assert (run / "metrics.json").is_file() and not (tmp_path / "results" / "full" / "runs" / "fmnist-mlp-pred"
                                                     / "seed1.replaced").exists()


@pytest.mark.slow
def test_a_grid_without_the_quick_rows(tmp_path):
    """A custom grid (config cells) without Fashion-MNIST: `all` and `tables` work; only
    `quick`, which trains the Fashion-MNIST mlp rows by default, says what it needs."""
    mine = tmp_path / "my.tsv"
    lines = CELLS.read_text().splitlines()
    mine.write_text("\n".join(lines[:10]) + "\n")            # the header and the 9 MNIST rows
    r = snakemake(tmp_path, "-n", "--config", f"cells={mine}")
    assert r.returncode == 0, r.stderr + r.stdout
    assert job_counts(r.stdout)["train"] == 9
    (tmp_path / "README.md").write_text("# Mine\n\n<!-- locallearn:tables:begin -->\n<!-- locallearn:tables:end -->\n")
    r = snakemake(tmp_path, "--cores", "1", "tables", "--config", f"cells={mine}")
    assert r.returncode == 0, r.stderr[-3000:]
    text = (tmp_path / "README.md").read_text()
    assert "not run (0.75)" in text and "Fashion" not in text and "9 cells:" in text
    r = snakemake(tmp_path, "-n", "quick", "--config", f"cells={mine}")
    assert r.returncode != 0
    assert ("the `quick` target trains the cells of config quick.select (by default the Fashion-MNIST mlp row), "
            "but config key 'quick.select.datasets': 'FashionMNIST' matches no row") in r.stdout + r.stderr
    r = snakemake(tmp_path, "-n", "quick", "--config", f"cells={mine}", "quick={select: {datasets: [MNIST], networks: [mlp]}}")
    assert r.returncode == 0 and job_counts(r.stdout)["train"] == 4


@pytest.mark.slow
def test_locallearn_tables_writes_what_the_tables_target_writes(committed_tables, tmp_path):
    """`locallearn tables --results results/full --readme README.md`, from the
    repository root, makes the same README, tables and figures as `snakemake --cores 1
    tables`, byte for byte: both call locallearn.report.steps.refresh with the same arguments
    (the target then also mirrors the runs into MLflow). The target's side: committed_tables."""
    made = {"snakemake": committed_tables[2]}
    root = tmp_path / "cli"
    committed_clone(root)
    (root / "workflow").symlink_to(REPO / "workflow")      # the CLI's defaults, as in a checkout
    r = subprocess.run([sys.executable, "-m", "locallearn", "tables", "--results", "results/full",
                        "--readme", "README.md"], cwd=root, env=child_env(), capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    made["cli"] = made_files(root)
    assert sorted(made["cli"]) == sorted(made["snakemake"])
    for name, data in made["snakemake"].items():
        assert made["cli"][name] == data, name
    assert made["cli"]["README.md"] == (REPO / "README.md").read_bytes()


@pytest.mark.slow
def test_peers_target_outside_all(tmp_path):
    """The field's grid (issues 26, 34): `snakemake -n peers` lists its 90 cells x seeds,
    each job's command only its recipe (the data as AugLocal's train.py reads it, a
    hold-out only on the holdout rows); `all` does not include them."""
    r = snakemake(tmp_path, "-n", "-p", "peers", "--config", "seeds=[1,2]")
    assert r.returncode == 0, r.stderr + r.stdout
    counts = job_counts(r.stdout)
    assert counts["train"] == 180 and counts["prepare_data"] == 3 and counts["field"] == 1
    assert "results/peers/runs/stl10-resnet110-k55-auglocal-d5-holdout/seed2/metrics.json" in r.stdout
    assert "--method infopro" in r.stdout and "--val-examples 7325" in r.stdout and "--svhn-split train" in r.stdout
    assert "--feat-mult" not in r.stdout and "--num-hidden" not in r.stdout
    rows = plan.load_cells(REPO / "workflow" / "config" / "peers.tsv")
    assert len(rows) == 90 and all(r["published_source"] for r in rows)
    r = snakemake(tmp_path, "-n")
    assert "results/peers" not in r.stdout and job_counts(r.stdout)["train"] == 86
