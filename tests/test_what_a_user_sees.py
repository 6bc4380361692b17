"""What a user sees while a run trains and when a workflow ends (issue 36): lines that
name their run, a progress bar on the terminal only, a heartbeat elsewhere, the end of a
workflow run, one cell by name, and the tables as data (summary.csv, summary.tex)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import REPO, child_env, needs_fmnist
from locallearn.recipe.config import config_hash
from locallearn.report import steps, tables
from locallearn.workflow import plan


def recipe(tmp_path, *extra: str) -> list[str]:
    return ["--model", "mlp", "--dataset", "FashionMNIST", "--num-layers", "1", "--num-hidden", "32",
            "--epochs", "2", "--max-train-examples", "2000", "--max-test-examples", "200", "--batch-size", "50",
            "--threads", "1", "--device", "cpu", "--data-dir", str(tmp_path / "data"),
            "--mlflow-uri", "", "--out", str(tmp_path / "run"), "--run-name", "fmnist-demo-s1", *extra]


def train(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "locallearn", "train", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=child_env(CUDA_VISIBLE_DEVICES=""), **kw)


@needs_fmnist
def test_every_line_names_its_run_and_a_heartbeat_beats_where_there_is_no_terminal(tmp_path):
    r = train(recipe(tmp_path, "--heartbeat", "0.01", "--backprop"))
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("[fmnist-demo-s1] ") for ln in lines), lines[:5]
    beats = [ln for ln in lines if "batch " in ln]
    assert beats and re.search(r"epoch 1/2: batch \d+/40, \d+ img/s, epoch ETA \S+, run ETA \S+$", beats[0])
    epochs = [ln for ln in lines if re.search(r"\d\d:\d\d:\d\d epoch \d/2 ", ln)]
    assert len(epochs) == 2 and "run ETA" in epochs[0] and "run ETA" not in epochs[1]
    assert not any(" local " in ln for ln in epochs)          # global backprop has no local loss
    assert "# 20" not in r.stdout                             # the attempt's header: train.log only
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.startswith("# 20") and "locallearn train --model mlp" in log.splitlines()[0]
    assert sum("batch " in ln for ln in log.splitlines()) == len(beats)


@needs_fmnist
def test_a_progress_bar_on_a_terminal_never_reaches_train_log(tmp_path):
    """Under a pseudo-terminal the bar shows (tqdm's refreshes end in carriage returns);
    train.log and --job-log get the run's lines only."""
    import pty
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "locallearn", "train",
                             *recipe(tmp_path, "--job-log", str(tmp_path / "job.log"))],
                            cwd=REPO, stdin=secondary, stdout=secondary, stderr=secondary,
                            env=child_env(CUDA_VISIBLE_DEVICES=""))
    os.close(secondary)
    screen = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    assert proc.wait(timeout=300) == 0, screen[-2000:]
    assert b"it/s]" in screen or b"s/it]" in screen                      # the bar, on the terminal
    for name in ("run/train.log", "job.log"):
        text = (tmp_path / name).read_bytes()
        assert b"\r" not in text and b"it/s" not in text and b"epoch 2/2" in text, name
    assert len((tmp_path / "run" / "train.log").read_bytes()) < 2000


def test_a_negative_heartbeat_is_refused():
    r = subprocess.run([sys.executable, "-m", "locallearn", "train", "--heartbeat", "-1"], cwd=REPO,
                       capture_output=True, text=True, env=child_env())
    assert r.returncode != 0 and "--heartbeat: must be a number of seconds >= 0, got -1.0" in r.stderr


def fixture_grid():
    row = {"cell": "c-pred", "dataset": "MNIST", "network": "mlp", "loss": "pred", "published_error": "1.50",
           "epochs": "2", "published_params": ""}
    other = dict(row, cell="c-sim", loss="sim", published_error="1.00")
    waiting = dict(row, cell="c-predsim", loss="predsim", published_error="1.20")
    return [row, other, waiting]


def write_run(results, cell, seed, error):
    folder = results / "runs" / cell / f"seed{seed}"
    folder.mkdir(parents=True)
    m = {"test_error": error, "epochs": 2, "seed": seed, "params_backprop": 1000, "params_total": 1500,
         "head_params": 500, "peak_memory_bytes": 2**20, "wall_seconds": 10.0,
         "history": [{"epoch": 1, "test_error": error + 1, "epoch_seconds": 1.0},
                     {"epoch": 2, "test_error": error, "epoch_seconds": 2.0}]}
    (folder / "metrics.json").write_text(json.dumps(m))


def test_summary_csv_read_back_equals_the_markdown_tables_numbers(tmp_path):
    results = tmp_path / "results" / "full"
    write_run(results, "c-pred", 1, 1.4)
    write_run(results, "c-pred", 2, 1.8)
    write_run(results, "c-sim", 1, 2.0)
    steps.compile_tables(fixture_grid(), results, seeds=[1, 2], tolerance={"default": 0.5}, intro="",
                         readme_path=None, figures_drawn=False)
    frame = pd.read_csv(results / "tables" / "summary.csv")
    summary = (results / "tables" / "summary.md").read_text()
    assert list(frame["cell"]) == ["c-pred", "c-sim", "c-predsim"] and tuple(frame.columns) == tables.SUMMARY_COLUMNS
    for r in frame[frame["seeds"] > 0].itertuples():
        line = next(ln for ln in summary.splitlines() if ln.startswith(f"| {r.cell} "))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2] == f"{r.published:.2f}" and cells[3].split()[0] == f"{r.ours:.2f}"
        assert cells[4] == f"{r.delta:+.2f}" and cells[5] == r.verdict
    pred = frame.set_index("cell").loc["c-pred"]
    assert (pred["seeds"], pred["ours"], pred["last_epoch"], pred["best_test_epoch"]) == (2, 1.6, 1.6, 1.6)
    assert pred["ours_std"] == pytest.approx(0.2828427, abs=1e-6) and pred["head_params"] == 500
    assert pd.isna(frame.set_index("cell").loc["c-predsim", "ours"])
    assert frame.set_index("cell").loc["c-predsim", "verdict"] == "not yet run"
    tex = (results / "tables" / "summary.tex").read_text()
    assert "\\toprule" in tex and "c-pred" in tex and "1.60 ± 0.28" in tex and "c-predsim" not in tex


def test_the_end_of_a_run_says_where_everything_is_and_which_runs_failed(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)   # the preset's own store (CI may set one)
    config = plan.load_config(overrides={"results_dir": str(tmp_path / "results")})
    presets = plan.make_presets(config, plan.load_cells(plan.cells_path(config)))
    q = presets["quick"]
    results = tmp_path / "results" / "quick"
    (results / "tables").mkdir(parents=True)
    (results / "tables" / "summary.csv").write_text(
        "cell,verdict\na,within tolerance (±0.3)\nb,budget run (not compared)\nc,budget run (not compared)\n"
        "d,not yet run\n")
    text = plan.end_of_run(config, presets, plan.requested_presets(["--cores", "2", "quick"]), time.time(), ok=True)
    assert "locallearn: quick preset done." in text
    assert f"tables: {results / 'tables' / 'tables.md'}" in text and f"README: {q.readme}" in text
    assert f"mlflow ui --backend-store-uri sqlite:///{results.resolve() / 'mlflow.db'}" in text
    assert "then open http://127.0.0.1:5000" in text and f"report: snakemake --report {results / 'report.html'} quick" in text
    assert "verdicts: 1 within tolerance, 0 outside, 2 budget runs, 0 holdout runs, 0 without a published number, " \
           "1 not yet run" in text
    # a failed job: its log written in this invocation, no metrics.json
    started = time.time() - 1
    cell = q.rows[0]["cell"]
    log = results / "logs" / "train" / cell / "seed1.log"
    log.parent.mkdir(parents=True)
    log.write_text("locallearn: error: something\n")
    text = plan.end_of_run(config, presets, ["quick"], started, ok=False)
    assert f"locallearn: 1 run(s) of the quick preset failed:\n  {cell} seed 1: {log}" in text
    assert "Rerunning the same command resumes them" in text
    assert plan.end_of_run(config, presets, ["quick"], time.time() + 10, ok=False) == ""   # an older log: not this run's
    assert plan.requested_presets(["-n"]) == ["full"] and plan.requested_presets(["peers", "infopro_quick"]) == \
        ["peers", "infopro-quick"]


def test_a_retried_job_gets_more_time_and_memory():
    config = plan.load_config()
    presets = plan.make_presets(config, plan.load_cells(plan.cells_path(config)))
    row = presets["full"].rows[0]
    assert plan.mem_mb(row, config, 2) == 2 * plan.mem_mb(row, config) == 2 * config["train"]["mem_mb"]["default"]
    assert plan.runtime_minutes(row, config, presets["full"], 3) == 3 * plan.runtime_minutes(row, config,
                                                                                           presets["full"])


@needs_fmnist
@pytest.mark.slow
def test_one_cell_by_name_is_the_workflows_run(tmp_path):
    """`locallearn train --cell` trains the quick preset's row as its train rule would: the
    same folder, config hash and MLflow run name; the workflow then counts it finished."""
    from conftest import snakemake
    budget = tmp_path / "budget.yaml"
    budget.write_text(f"results_dir: {tmp_path / 'results'}\ndata_dir: {tmp_path / 'data'}\n"
                      "quick: {epochs: 1, max_train_examples: 500, max_test_examples: 100, "
                      "select: {cells: [fmnist-mlp-predsim]}}\n")
    r = train(["--cell", "fmnist-mlp-predsim", "--preset", "quick", "--configfile", str(budget)])
    assert r.returncode == 0, r.stderr[-2000:]
    config = plan.load_config(overrides={"results_dir": str(tmp_path / "results"), "data_dir": str(tmp_path / "data"),
                                         "quick": {"epochs": 1, "max_train_examples": 500, "max_test_examples": 100,
                                                   "select": {"cells": ["fmnist-mlp-predsim"]}}})
    p = plan.make_presets(config, plan.load_cells(plan.cells_path(config)))["quick"]
    m = json.loads((tmp_path / "results" / "quick" / "runs" / "fmnist-mlp-predsim" / "seed1" / "metrics.json").read_text())
    row = p.rows[0]
    assert m["config_hash"] == config_hash(plan.train_config(p.args(row) + ["--seed", "1"]))
    assert m["run_name"] == "fmnist-mlp-predsim-s1" and m["config"]["mlflow_experiment"] == p.experiment
    assert r.stdout.startswith("locallearn train --model mlp --dataset FashionMNIST")
    assert p.state(row, 1) == "finished"
    dry = snakemake(tmp_path, "-n", "quick", "--configfile", str(budget))
    assert dry.returncode == 0 and "rule train:" not in dry.stdout, dry.stdout[-2000:]
