"""Table compilation (exact markdown on fixture metrics.json files), the README splice,
the figures and `locallearn tables`. Fixtures: tests/fixtures/runs (full-budget runs: several
seeds, one cell missing, one outside tolerance, the CIFAR-100 #Params discrepancy, a
cell without a published number) and tests/fixtures/budget_runs (a quick-preset run)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import CELLS_TSV, REPO
from locallearn.report import figures, steps as report, tables
from locallearn.recipe.cells import read_cells
from locallearn.cli.main import main

FIXTURES = Path(__file__).parent / "fixtures"
TOL = {"default": 0.5, "FashionMNIST": 0.3, "CIFAR100": 1.0}
PNG = b"\x89PNG\r\n\x1a\n"


def _rows(*cells_or_prefixes: str) -> list[dict]:
    return [r for r in read_cells(CELLS_TSV) if any(r["cell"] == c or (c.endswith("*") and r["cell"].startswith(c[:-1]))
                                           for c in cells_or_prefixes)]


@pytest.fixture
def rows():
    return _rows("fmnist-mlp-*", "cifar100-mlp-backprop", "cifar10-vgg8b-bio-pred")


@pytest.fixture
def compiled(rows):
    runs = tables.load_runs(FIXTURES / "runs", rows, [1, 2, 3])
    return tables.compile_tables(rows, runs, expected_seeds=3, tolerance=TOL)


FMNIST = """\
### Results on Fashion-MNIST with 2 pixel jittering and horizontal flipping

| Network   | #Params   | Global loss        | Local loss 'pred'       | Local loss 'sim'   | Local loss 'predsim'   |
|:----------|:----------|:-------------------|:------------------------|:-------------------|:-----------------------|
| mlp       | 2.9M      | 8.40 ± 0.05 (8.37) | 9.10 [1/3 seeds] (8.60) | not run (9.70)     | 8.55 ± 0.05 (8.54)     |
"""

CIFAR10 = """\
### Results on CIFAR-10 with data augmentation

| Network   | #Params   | Global loss   | Local loss 'pred'      | Local loss 'sim'   | Local loss 'predsim'   |
|:----------|:----------|:--------------|:-----------------------|:-------------------|:-----------------------|
| vgg8b bio | 8.9M      | -             | 9.00 [1/3 seeds] (n/a) | -                  | -                      |
"""

CIFAR100 = """\
### Results on CIFAR-100 with data augmentation

| Network   | #Params       | Global loss               | Local loss 'pred'   | Local loss 'sim'   | Local loss 'predsim'   |
|:----------|:--------------|:--------------------------|:--------------------|:-------------------|:-----------------------|
| mlp       | 27.5M (27.3M) | 62.00 [1/3 seeds] (62.57) | -                   | -                  | -                      |
"""

SUMMARY = """\
### Summary

| Cell                   | Seeds   | Published   | Ours              | Delta   | Verdict                  | Best test epoch   | Wall time per seed   |
|:-----------------------|:--------|:------------|:------------------|:--------|:-------------------------|:------------------|:---------------------|
| fmnist-mlp-backprop    | 3       | 8.37        | 8.40 ± 0.05       | +0.03   | within tolerance (±0.3)  | 8.40 ± 0.05       | 55.0 min             |
| fmnist-mlp-pred        | 1       | 8.60        | 9.10 [1/3 seeds]  | +0.50   | outside tolerance (±0.3) | 9.10              | 10 s                 |
| fmnist-mlp-predsim     | 3       | 8.54        | 8.55 ± 0.05       | +0.01   | within tolerance (±0.3)  | 8.55 ± 0.05       | 10 s                 |
| cifar10-vgg8b-bio-pred | 1       | n/a         | 9.00 [1/3 seeds]  | -       | no published number      | 9.00              | 10 s                 |
| cifar100-mlp-backprop  | 1       | 62.57       | 62.00 [1/3 seeds] | -0.57   | within tolerance (±1)    | 45.00             | 2.50 h               |

6 cells: 5 finished (3 within tolerance, 1 outside, 0 budget runs, 1 without a published number); 1 not yet run, shown as "not run" in the tables above.
"""


def test_dataset_tables_exact(compiled):
    # several seeds (mean ± std), a partial cell, a missing cell (never 0), the #Params
    # discrepancy of CIFAR-100's mlp (27.5M true, 27.3M published), no published number
    assert compiled["FashionMNIST"] == FMNIST
    assert compiled["CIFAR10"] == CIFAR10
    assert compiled["CIFAR100"] == CIFAR100


def test_summary_exact(compiled):
    # wall time: the mean over seeds (3000, 3600, 3300 s -> 55.0 min), hours past one;
    # best test epoch from each run's history (cifar100's: 90, 45, 62 -> 45.00)
    assert compiled["summary"] == SUMMARY


def test_block_order_and_links(rows):
    runs = tables.load_runs(FIXTURES / "runs", rows, [1, 2, 3])
    out = tables.compile_tables(rows, runs, expected_seeds=3, tolerance=TOL, intro="Intro.",
                                figure_prefix="figs/curves/", scatter="figs/scatter.png")
    block = out["tables"]
    assert block.startswith("Intro.\n\n" + tables.NOTE + "\n\n![ours vs published](figs/scatter.png)\n\n")
    # datasets in cells.tsv order, then the summary
    idx = [block.index(s) for s in ("Fashion-MNIST", "CIFAR-10 ", "CIFAR-100", "### Summary")]
    assert idx == sorted(idx)
    assert "[fmnist-mlp-pred](figs/curves/fmnist-mlp-pred.png)" in block
    assert "fmnist-mlp-sim" not in out["summary"]   # not run: counted, listed in "pending", no row
    assert "`fmnist-mlp-sim`" in out["pending"] and "fmnist-mlp-pred`" not in out["pending"]
    assert block.endswith('1 not yet run, shown as "not run" in the tables above.\n')


def test_summary_links_each_finished_cell_to_its_figures(rows):
    runs = tables.load_runs(FIXTURES / "runs", rows, [1, 2, 3])
    out = tables.compile_tables(rows, runs, expected_seeds=3, tolerance=TOL, figure_prefix="f/curves/",
                                layers_prefix="f/layers/", pending_link="t/pending.md")
    assert "| [fmnist-mlp-pred](f/curves/fmnist-mlp-pred.png) " in out["summary"]
    assert "| [layers](f/layers/fmnist-mlp-pred.png) " in out["summary"]
    assert "Per layer" in out["summary"] and "([the list](t/pending.md))" in out["summary"]


def test_kmnist_published_on_older_files_is_footnoted_and_the_rerun_decides():
    """The paper's Kuzushiji-MNIST numbers predate the dataset's 2019-02 update: each is
    marked, the table says so, and for vgg8b + cutout predsim the authors' own 0.89 on
    the current files is shown beside 0.99 and is what the verdict compares with."""
    rows = _rows("kmnist-*")
    run = {"test_error": 0.95, "epochs": 100, "config": {"epochs": 100}}
    out = tables.compile_tables(rows, {"kmnist-vgg8b-cutout-predsim": [run]}, tolerance=TOL)
    assert "| not run (5.99†) " in out["KuzushijiMNIST"]
    assert "0.95 (0.99† / 0.89 current)" in out["KuzushijiMNIST"]
    assert "\n† Published on the Kuzushiji-MNIST files from before their 2019-02 update" in out["KuzushijiMNIST"]
    assert "| 0.99† / 0.89 current | 0.95   | +0.06   | within tolerance (±0.5) |" in out["summary"]
    worse = {"test_error": 1.45, "epochs": 100, "config": {"epochs": 100}}   # within 0.5 of 0.99, not of 0.89
    out = tables.compile_tables(rows, {"kmnist-vgg8b-cutout-predsim": [worse]}, tolerance=TOL)
    assert "| +0.56   | outside tolerance (±0.5) |" in out["summary"]
    # the tolerance is two-sided (±): far below the published number is outside it too;
    # 0.30 is 0.59 below 0.89
    better = {"test_error": 0.30, "epochs": 100, "config": {"epochs": 100}}
    out = tables.compile_tables(rows, {"kmnist-vgg8b-cutout-predsim": [better]}, tolerance=TOL)
    assert "| -0.59   | outside tolerance (±0.5) |" in out["summary"]
    assert "†" not in tables.compile_tables(_rows("mnist-*"), {}, tolerance=TOL)["MNIST"]


def test_nothing_run_shows_not_run_never_zero():
    rows = _rows("mnist-*")
    out = tables.compile_tables(rows, {}, tolerance=TOL, scatter="s.png")
    assert "0.00" not in out["tables"] and "![" not in out["tables"]
    assert "| mlp            | 2.9M      | not run (0.75) | not run (0.68)" in out["MNIST"]
    assert "| vgg8b + cutout | 7.3M      | -              | -" in out["MNIST"]
    assert "No cell has finished yet." in out["summary"]
    assert "9 cells: 0 finished (0 within tolerance, 0 outside, 0 budget runs, 0 without a published number); " \
           "9 not yet run" in out["summary"]


def test_budget_runs_state_their_budget():
    rows = _rows("fmnist-mlp-*")
    runs = tables.load_runs(FIXTURES / "budget_runs", rows, [1])
    out = tables.compile_tables(rows, runs, expected_seeds=1, tolerance=TOL)
    assert "| mlp       | 2.9M      | 45.50 [2/200 ep, 512 train ex, 512 test ex] (8.37) | not run (8.60)" \
        in out["FashionMNIST"]
    assert ("| fmnist-mlp-backprop | 1       | 8.37        | 45.50 [2/200 ep, 512 train ex, 512 test ex] "
            "| +37.13  | budget run (not compared) |") in out["summary"]


def test_runs_not_in_float32_say_their_precision():
    """A cell trained with --precision bf16 or tf32 says so in every table (issue 18);
    float32 runs (the paper's precision, and runs written before the flag) say nothing."""
    rows = _rows("fmnist-mlp-*")
    run = {"test_error": 8.5, "epochs": 200, "config": {"epochs": 200, "precision": "bf16"}}
    fp32 = {"test_error": 8.4, "epochs": 200, "config": {"epochs": 200}}
    out = tables.compile_tables(rows, {"fmnist-mlp-predsim": [run], "fmnist-mlp-backprop": [fp32]},
                                expected_seeds=1, tolerance=TOL)
    assert "| 8.50 [bf16] (8.54)" in out["FashionMNIST"] and "| 8.40 (8.37)" in out["FashionMNIST"]
    assert "| fmnist-mlp-predsim  | 1       | 8.54        | 8.50 [bf16] |" in out["summary"]


def test_load_runs_discovers_seeds_and_reports_bad_json(tmp_path, rows):
    runs = tables.load_runs(FIXTURES / "runs", rows, None)
    assert [m["seed"] for m in runs["fmnist-mlp-backprop"]] == [1, 2, 3]
    assert "fmnist-mlp-sim" not in runs
    assert [m["seed"] for m in tables.load_runs(FIXTURES / "runs", rows, [2])["fmnist-mlp-backprop"]] == [2]
    bad = tmp_path / "fmnist-mlp-sim" / "seed1" / "metrics.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(tables.TablesError, match="fmnist-mlp-sim/seed1/metrics.json"):
        tables.load_runs(tmp_path, rows, [1])


README = """# Title

Text before, with a marker-like line: <!-- locallearn:tables -->

<!-- locallearn:tables:begin -->
old tables
<!-- locallearn:tables:end -->

## After
Text after.
"""


def test_splice_replaces_only_between_markers():
    out = report.splice_text(README, "NEW\nBLOCK\n")
    before, after = README.split(report.BEGIN)[0], README.split(report.END)[1]
    assert out == before + report.BEGIN + "\nNEW\nBLOCK\n" + report.END + after
    assert report.splice_text(out, "NEW\nBLOCK\n") == out          # idempotent


def test_splice_file_writes_only_on_change(tmp_path):
    p = tmp_path / "README.md"
    p.write_text(README)
    assert report.splice_file(p, "A") is True
    first = p.read_text()
    os.utime(p, (1_000_000_000, 1_000_000_000))
    assert report.splice_file(p, "A") is False                  # same content: not written
    assert p.stat().st_mtime == 1_000_000_000 and p.read_text() == first
    assert report.splice_file(p, "B") is True
    assert p.read_text() == first.replace("\nA\n", "\nB\n")


def test_splice_errors_and_template(tmp_path):
    with pytest.raises(report.ReadmeError, match="expected one"):
        report.splice_text("no markers here", "x")
    with pytest.raises(report.ReadmeError, match="expected one"):
        report.splice_text(README + report.BEGIN, "x")
    with pytest.raises(report.ReadmeError, match="comes before"):
        report.splice_text(f"{report.END}\n{report.BEGIN}\n", "x")
    with pytest.raises(report.ReadmeError, match="no such file"):
        report.splice_file(tmp_path / "missing.md", "x")
    p = tmp_path / "quick" / "README.md"
    assert report.splice_file(p, "T", report.template("Quick", "Body.")) is True
    assert p.read_text() == f"# Quick\n\nBody.\n\n{report.BEGIN}\nT\n{report.END}\n"


def test_figures_write_pngs(tmp_path, rows):
    runs = tables.load_runs(FIXTURES / "runs", rows, [1, 2, 3])
    curves = {f"seed {m['seed']}": m["history"] for m in runs["fmnist-mlp-backprop"]}
    p = figures.plot_curves(curves, tmp_path / "a" / "curve.png", "fmnist-mlp-backprop", published=8.37)
    assert p.read_bytes()[:8] == PNG
    assert figures.plot_curves({"empty": []}, tmp_path / "empty.png", "x").read_bytes()[:8] == PNG
    pts = tables.scatter_points(rows, runs)
    assert {p["cell"] for p in pts} == {"fmnist-mlp-backprop", "fmnist-mlp-pred", "fmnist-mlp-predsim",
                                        "cifar100-mlp-backprop"}          # the bio cell has no published number
    assert figures.plot_scatter(pts, tmp_path / "s.png").read_bytes()[:8] == PNG
    assert figures.plot_scatter([], tmp_path / "none.png").read_bytes()[:8] == PNG
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".*.png"))


def test_scatter_labels_every_cell_against_its_tolerance(rows):
    """The ours-vs-published figure names each cell on its own row (table order), gives
    both numbers beside it, shades each cell's tolerance band and has readable ticks."""
    runs = tables.load_runs(FIXTURES / "runs", rows, [1, 2, 3])
    pts = tables.scatter_points(rows, runs, {"default": 0.5, "CIFAR100": 1.0})
    assert [p["tolerance"] for p in pts] == [1.0 if p["dataset"] == "CIFAR100" else 0.5 for p in pts]
    fig = figures.scatter_figure(pts, "t")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [p["cell"] for p in pts]
    right = [t.get_text() for t in ax.child_axes[0].get_yticklabels()]
    assert right == [f"{p['ours']:.2f}" + (f" ± {p['std']:.2f}" if p["std"] else "") + f" vs {p['published']:.2f}"
                     for p in pts]
    bands = [c for c in ax.collections if c.get_label().startswith("tolerance")]
    assert {c.get_label() for c in bands} == {"tolerance ±0.5", "tolerance ±1"}
    xticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert len(xticks) >= 5 and "0" in xticks
    multi = next(p for p in pts if len(p["errors"]) > 1)     # every seed drawn
    assert any(len(line.get_xdata()) == len(multi["errors"]) for line in ax.lines)


def tables_cli(*args: str) -> int:
    """`locallearn tables ...` with the workflow's files named (the defaults are relative
    to the working directory, the repository root)."""
    return main(["tables", "--cells", str(CELLS_TSV),
                 "--workflow-config", str(REPO / "workflow" / "config" / "config.yaml"), *args])


@pytest.mark.slow
def test_cli_tables_refresh(tmp_path, capsys):
    results = tmp_path / "results" / "full"
    shutil.copytree(FIXTURES / "runs", results / "runs")
    readme_path = tmp_path / "README.md"
    readme_path.write_text(README)
    assert tables_cli("--results", str(results), "--readme", str(readme_path), "--seeds", "1", "2", "3") == 0
    text = readme_path.read_text()
    assert text.startswith(README.split(report.BEGIN)[0]) and text.endswith(README.split(report.END)[1])
    assert "not run (0.75)" in text                          # the whole grid, MNIST not run
    assert "8.40 ± 0.05 (8.37)" in text
    assert "(results/full/figures/curves/fmnist-mlp-backprop.png)" in text     # relative to the README
    assert "![ours vs published](results/full/figures/scatter.png)" in text
    # tolerance from --workflow-config (FashionMNIST: 0.3)
    assert "outside tolerance (±0.3)" in text
    assert (results / "tables" / "summary.md").is_file() and (results / "tables" / "fashionmnist.md").is_file()
    assert (results / "figures" / "curves" / "fmnist-mlp-predsim.png").read_bytes()[:8] == PNG
    assert not (results / "figures" / "curves" / "fmnist-mlp-sim.png").exists()
    # a second refresh of the same runs leaves the README as it is (not even rewritten)
    os.utime(readme_path, (1_000_000_000, 1_000_000_000))
    assert tables_cli("--results", str(results), "--readme", str(readme_path), "--seeds", "1", "2", "3") == 0
    assert readme_path.read_text() == text and readme_path.stat().st_mtime == 1_000_000_000


def test_cli_tables_tolerance_flag(tmp_path, capsys):
    results = tmp_path / "full"
    shutil.copytree(FIXTURES / "runs", results / "runs")
    assert tables_cli("--results", str(results), "--seeds", "1", "2", "3", "--tolerance", "FashionMNIST=1",
                      "--only-run", "--no-figures") == 0
    summary = (results / "tables" / "summary.md").read_text()
    assert "outside" not in summary.split("|\n\n")[0] and "within tolerance (±1)" in summary
    assert "mnist-mlp-backprop " not in summary.replace("fmnist", "")   # --only-run: the cells that ran
    assert tables_cli("--results", str(results), "--tolerance", "MNIST=abc") == 2
    assert "locallearn: error: --tolerance: expected NUMBER or DATASET=NUMBER, got 'MNIST=abc'" in capsys.readouterr().err
    assert main(["tables", "--cells", str(tmp_path / "nope.tsv")]) == 2
    assert f"--cells: no such file {tmp_path / 'nope.tsv'}" in capsys.readouterr().err


@pytest.mark.parametrize("cell, local, note", [
    ("fmnist-mlp-pred", "local error (training batches)", None),
    ("fmnist-mlp-predsim", "local error (training batches)", None),
    ("fmnist-mlp-sim", "local loss (right axis)", "sim: no local classifier"),
    ("fmnist-mlp-backprop", None, "backprop: no local losses"),
])
def test_layers_figure_says_which_line_is_which(cell, local, note):
    """The per-layer figure of each committed run: one line per hidden layer (its local
    error, or for sim its local loss), the output's training and test error, and where
    a loss has no local classifier, a title that says so."""
    import json
    row = _rows(cell)[0]
    run = json.loads((REPO / "results" / "full" / "runs" / cell / "seed1" / "metrics.json").read_text())
    fig = figures.layers_figure(run, row)
    axes = fig.get_axes()
    labels = [line.get_label() for ax in axes for line in ax.get_lines()]
    assert labels[:2] == ["output: training error (dropout on)", "output: test error"]
    layers = [lab for lab in labels if lab.startswith("hidden layer")]
    if local is None:
        assert layers == []
    else:
        assert layers == [f"hidden layer {k}: {local}" for k in (1, 2, 3)]
        first = next(line for ax in axes for line in ax.get_lines() if line.get_label() == layers[0])
        key = "error" if "error" in local else "loss"
        assert list(first.get_ydata()) == [h["local"][0][key] for h in run["history"]]
    title = axes[0].get_title()
    assert (note in title) if note else ("\n" not in title)


def test_field_grid_compares_its_best_test_epoch_and_shows_all_three_errors():
    """A row of the peers grid (published_epoch best): its entry and verdict use our best
    test epoch; the summary shows the last epoch's and the validation-selected errors."""
    row = {"cell": "cifar10-resnet32-k16-dgl", "dataset": "CIFAR10", "network": "ResNet-32 (K=16)",
           "loss": "dgl", "column": "DGL", "published_epoch": "best", "published_error": "14.00",
           "published_params": "", "epochs": "3"}
    history = [{"epoch": 1, "test_error": 30.0, "val_error": 29.0, "epoch_seconds": 2.0},
               {"epoch": 2, "test_error": 14.5, "val_error": 21.0, "epoch_seconds": 4.0},
               {"epoch": 3, "test_error": 16.0, "val_error": 20.0, "epoch_seconds": 3.0}]
    run = {"test_error": 16.0, "history": history, "params_backprop": 466906, "params_total": 1305200,
           "head_params": 838294, "peak_memory_bytes": 3 * 2**20}
    out = tables.compile_tables([row], {"cifar10-resnet32-k16-dgl": [run]}, tolerance=0.5)
    assert "| ResNet-32 (K=16) | 0.5M      | 14.50 (14.00) |" in out["CIFAR10"]   # best epoch 2: 14.50
    assert "| Network          | #Params   | DGL           |" in out["CIFAR10"]
    summary = out["summary"]
    assert "| Last epoch   | Validation-selected   |" in summary
    # delta 14.50 - 14.00; last 16.00; validation picks epoch 3 (val 20.0): test 16.00
    assert "| +0.50   | within tolerance (±0.5) | 16.00        | 16.00                 |" in summary
    assert "| cifar10-resnet32-k16-dgl | 14.50  | 466,906           | 838,294       | -                     " \
           "| 3 MiB         | 3.0         |" in out["cost"]
    assert out["tables"].index("### Cost") < out["tables"].index("### Summary")
    assert tables.NOTE_BEST in out["tables"]


def test_field_points_one_per_finished_cell_with_its_compared_error_and_cost():
    rows = [{"cell": "a-bp", "dataset": "CIFAR10", "network": "ResNet-32 (K=16)", "loss": "backprop",
             "column": "BP", "published_epoch": "best", "epochs": "2"},
            {"cell": "a-dgl", "dataset": "CIFAR10", "network": "ResNet-32 (K=16)", "loss": "dgl",
             "column": "DGL", "published_epoch": "best", "epochs": "2"}]
    history = [{"epoch": 1, "test_error": 12.0}, {"epoch": 2, "test_error": 13.0}]
    run = {"test_error": 13.0, "history": history, "peak_memory_bytes": 512 * 2**20,
           "backbone_macs": 1000, "head_macs": 24}
    points = tables.field_points(rows, {"a-bp": [run]})
    assert points == [{"cell": "a-bp", "method": "BP", "network": "ResNet-32 (K=16)", "dataset": "CIFAR10",
                       "error": 12.0, "error_name": "best test epoch", "memory_mib": 512.0, "macs": 1024,
                       "budget": None}]


def test_each_protocol_has_its_row_its_error_and_its_verdict():
    """A grid with a `protocol` column (issue 34): the whole row's entry and verdict use the
    best test epoch; the holdout row's the epoch its held-out part selects, shown beside
    the published number and never compared with it."""
    base = {"dataset": "CIFAR10", "network": "ResNet-32 (K=16)", "loss": "dgl", "column": "DGL",
            "published_epoch": "best", "published_error": "14.00", "epochs": "3",
            "extra_flags": "--local-modules 16"}
    rows = [dict(base, cell="c-dgl", protocol="whole"), dict(base, cell="c-dgl-holdout", protocol="holdout")]
    history = [{"epoch": 1, "test_error": 30.0, "val_error": 29.0}, {"epoch": 2, "test_error": 14.4, "val_error": 21.0},
               {"epoch": 3, "test_error": 16.0, "val_error": 20.0}]
    whole = {"test_error": 16.0, "history": [{k: v for k, v in h.items() if k != "val_error"} for h in history]}
    holdout = {"test_error": 16.0, "history": history}
    out = tables.compile_tables(rows, {"c-dgl": [whole], "c-dgl-holdout": [holdout]}, tolerance=0.5)
    table = out["CIFAR10"]
    assert "| Network          | Protocol                      | #Params   | DGL           |" in table
    assert "| ResNet-32 (K=16) | whole (best test epoch)       | -         | 14.40 (14.00) |" in table
    assert "| ResNet-32 (K=16) | holdout (validation-selected) | -         | 16.00 (14.00) |" in table
    assert "Results on CIFAR10 (training split, augmentation and normalisation as each row's flags" in table
    summary = out["summary"]
    assert "| c-dgl         | whole (best test epoch)       | 1       | 14.00       | 14.40  | +0.40   " \
           "| within tolerance (±0.5)    |" in summary
    assert "| c-dgl-holdout | holdout (validation-selected) | 1       | 14.00       | 16.00  | +2.00   " \
           "| holdout run (not compared) |" in summary
    assert "2 cells: 2 finished (1 within tolerance, 0 outside, 0 budget runs, 1 holdout runs, " in summary
    assert tables.NOTE_PROTOCOLS in out["tables"]
    # the paper's grid, without the column, keeps its tables as they were
    plain = tables.compile_tables([dict(base, cell="c-dgl", extra_flags="")], {"c-dgl": [whole]})
    assert "Protocol" not in plain["tables"] and "holdout runs" not in plain["summary"]


def test_a_published_mean_over_trials_widens_the_bound_by_both_spreads():
    """InfoPro's Table 2 (issue 35): the verdict's bound is max(tolerance, 2 sqrt(s_pub^2 /
    n_pub + s_ours^2 / n)), said with how many of our seeds ran; by hand below."""
    row = {"cell": "c-ip", "dataset": "CIFAR10", "network": "ResNet-32 (K=16)", "loss": "infopro",
           "column": "InfoPro (Softmax)", "published_epoch": "best", "published_error": "14.23",
           "published_std": "0.42", "published_trials": "5", "epochs": "2"}

    def run(best):
        return {"test_error": best + 1, "history": [{"epoch": 1, "test_error": best}, {"epoch": 2, "test_error": best + 1}]}
    # three seeds: mean 15.00, std 1.00; bound 2 sqrt(0.42^2/5 + 1/3) = 1.2143; delta +0.77: within
    out = tables.compile_tables([row], {"c-ip": [run(14.0), run(15.0), run(16.0)]}, expected_seeds=5, tolerance=0.5)
    assert "| 14.23 ± 0.42 | 15.00 ± 1.00 [3/5 seeds] | +0.77   | within tolerance (±1.21; 3 of 5 seeds) |" \
        in out["summary"]
    assert tables.verdict_bound(0.5, 0.42, 5, 1.0, 3) == pytest.approx(2 * (0.42 ** 2 / 5 + 1 / 3) ** 0.5)
    # one seed: its spread is taken as the published one: 2 sqrt(0.42^2/5 + 0.42^2) = 0.9202; +1.27: outside
    out = tables.compile_tables([row], {"c-ip": [run(15.5)]}, expected_seeds=5, tolerance=0.5)
    assert "outside tolerance (±0.92; 1 of 5 seeds)" in out["summary"]
    # the configured tolerance is the floor
    assert "within tolerance (±2.00; 1 of 5 seeds)" in tables.compile_tables(
        [row], {"c-ip": [run(15.5)]}, expected_seeds=5, tolerance=2.0)["summary"]
