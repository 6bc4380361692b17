"""`locallearn report STEP` and `locallearn tables`: tables, figures and the README's splice
from the metrics.json files that exist (the workflow's reporting rules run these)."""
from __future__ import annotations

import argparse

from ..errors import ConfigError
from .tracking import mirror_results

# `locallearn tables` defaults: the workflow's own files, taken from the working
# directory (the repository root); the package itself never reads workflow/.
TABLES_DEFAULTS = {"results": "results/full", "cells": "workflow/config/cells.tsv",
                   "workflow_config": "workflow/config/config.yaml"}
TOLERANCE_SOURCE = "`workflow/config/config.yaml`"
# Every step of `locallearn report` (the workflow's reporting rules), and its line in the help.
REPORT_STEPS = {
    "curve": "figures/curves/CELL.png: every finished seed of one cell",
    "layers": "figures/layers/CELL.png: the layers of the cell's first finished seed",
    "scatter": "figures/scatter.png: ours against published, every cell that has run",
    "field": "figures/field.png: error against cost, every finished cell (and those of --field-also)",
    "tables": "tables/: the tables of the grid's cells",
    "readme": "splice tables/tables.md into --readme",
    "all": "all of them, and the MLflow mirror (= locallearn tables, with these flags)",
}


def report_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The flags of every reporting step: which rows, seeds, tolerances, where."""
    from ..recipe.config import HelpFormatter
    d = TABLES_DEFAULTS
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    p.add_argument("--results", default=d["results"],
                   help="a preset's results folder: reads runs/, writes tables/ and figures/")
    p.add_argument("--cells", default=d["cells"], help="the grid")
    p.add_argument("--only", nargs="+", default=None, metavar="CELL", help="these cells of the grid only")
    p.add_argument("--on-dataset", nargs=2, default=None, metavar=("DATASET", "PREFIX"),
                   help="the grid's rows (after --only, which names them as the grid does) moved onto "
                        "DATASET, their cells named PREFIX-... (the peers-quick preset; cells.moved_to)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds to read")
    p.add_argument("--tolerance", nargs="+", default=[], metavar="[DATASET=]PP",
                   help="verdict tolerance in percentage points: a default, and per dataset")
    p.add_argument("--tolerance-source", default=TOLERANCE_SOURCE, metavar="TEXT",
                   help="where the tables say the tolerances come from")
    p.add_argument("--epochs", type=int, default=None, help="a budget preset's epochs (the tables say so)")
    p.add_argument("--max-train-examples", type=int, default=0, help="a budget preset's training examples")
    p.add_argument("--max-test-examples", type=int, default=0, help="a budget preset's test examples")
    p.add_argument("--readme", default=None, help="README to splice the tables into (markers required)")
    p.add_argument("--readme-title", default=None,
                   help="make a missing --readme with this title (and --readme-body) around the markers")
    p.add_argument("--readme-body", default="", help="the text under --readme-title")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--field-also", nargs=2, action="append", default=[], metavar=("RESULTS", "CELLS"),
                   help="step field: also the finished cells of this grid (its results folder and cells "
                        "file), e.g. the paper's beside the field's")
    p.add_argument("--mlflow-uri", default=None,
                   help="MLflow store to mirror the finished runs into (step all; default: "
                        "$MLFLOW_TRACKING_URI, else sqlite:///RESULTS/mlflow.db)")
    p.add_argument("--mlflow-experiment", default="locallearn", help="its experiment")
    p.add_argument("--no-sync", action="store_true", help="step all: leave MLflow alone")
    return p


def tolerances(items: list[str], base: dict | None = None) -> dict[str, float]:
    tol = dict(base or {})
    for item in items:
        key, sep, value = item.partition("=")
        try:
            tol[key if sep else "default"] = float(value if sep else key)
        except ValueError:
            raise ConfigError(f"--tolerance: expected NUMBER or DATASET=NUMBER, got {item!r}") from None
    tol.setdefault("default", 0.5)
    return tol


def report_step(step: str, a: argparse.Namespace, cell: str | None = None) -> None:
    """One reporting step (the workflow's rules curve, scatter, compile_tables,
    splice_readme), or all of them and the MLflow mirror (`tables` rule, `locallearn tables`)."""
    from pathlib import Path

    from ..report import steps as report
    from ..recipe.cells import read_cells
    from ..report.tables import intro
    if not Path(a.cells).is_file():
        raise ConfigError(f"--cells: no such file {a.cells} (run from the repository root, or name it)")
    rows = read_cells(a.cells)
    if a.only is not None:
        unknown = sorted(set(a.only) - {r["cell"] for r in rows})
        if unknown:
            raise ConfigError(f"--only: {', '.join(unknown)} not in {a.cells}")
        rows = [r for r in rows if r["cell"] in a.only]
    if a.on_dataset:
        from ..recipe.cells import moved_to
        rows = [moved_to(r, *a.on_dataset) for r in rows]
    seeds, tol = a.seeds or [1], tolerances(a.tolerance)
    text = intro(seeds, a.tolerance_source, epochs=a.epochs, max_train_examples=a.max_train_examples,
                 max_test_examples=a.max_test_examples)
    template = report.template(a.readme_title, a.readme_body) if a.readme_title else None
    if step in ("curve", "layers"):
        row = next((r for r in rows if r["cell"] == cell), None)
        if row is None:
            raise ConfigError(f"report {step}: no cell {cell!r} in {a.cells}")
        draw = report.draw_curve if step == "curve" else report.draw_layers
        print(f"drew {draw(row, a.results, seeds)}")
    elif step == "scatter":
        print(f"drew {report.draw_scatter(rows, a.results, seeds, tol)}")
    elif step == "field":
        grids = [(rows, a.results)] + [(read_cells(cells), results) for results, cells in a.field_also]
        print(f"drew {report.draw_field(grids, seeds, a.results)}")
    elif step == "tables":
        report.compile_tables(rows, a.results, seeds=seeds, tolerance=tol, intro=text, readme_path=a.readme)
        print(f"wrote {Path(a.results) / 'tables'}/")
    elif step == "readme":
        if not a.readme:
            raise ConfigError("report readme: --readme FILE is needed")
        changed = report.splice_file(a.readme, (Path(a.results) / "tables" / "tables.md").read_text(), template)
        print(f"{a.readme}: {'updated' if changed else 'unchanged'}")
    else:
        out = report.refresh(rows, a.results, seeds=seeds, tolerance=tol, intro=text, readme_path=a.readme,
                             readme_template=template, draw=not a.no_figures)
        print(f"wrote {Path(a.results) / 'tables'}/ ({len(out)} files)"
              + (f" and spliced {a.readme}" if a.readme else ""))
        if not a.no_sync:
            mirror_results(a.results, a.mlflow_uri, a.mlflow_experiment)


def cmd_report(argv: list[str]) -> int:
    """`locallearn report STEP`: one step of a preset's report from the metrics.json
    files that exist (what the workflow's reporting rules run)."""
    from .dispatch import pick, word_parser
    steps = word_parser("locallearn report", cmd_report.__doc__, REPORT_STEPS, "step",
                        epilog="locallearn report STEP --help: its flags (the same for every step; curve "
                               "and layers take a CELL).")
    pick(steps, argv)
    step = argv[0]
    p = report_parser(f"locallearn report {step}", cmd_report.__doc__)
    if step in ("curve", "layers"):
        p.add_argument("cell", help="the cell whose learning curves (curve) or per-layer errors (layers) are drawn")
    a = p.parse_args(argv[1:])
    report_step(step, a, getattr(a, "cell", None))
    return 0


def cmd_tables(argv: list[str]) -> int:
    """`locallearn tables`: the tables from whatever metrics.json exist (no training),
    the figures, the README's tables and the MLflow mirror: the same steps as `snakemake
    --cores 1 tables` (`locallearn report all`), with seeds and tolerances read from
    --workflow-config."""
    from pathlib import Path

    import yaml
    p = report_parser("locallearn tables", cmd_tables.__doc__)
    p.add_argument("--workflow-config", default=TABLES_DEFAULTS["workflow_config"], metavar="YAML",
                   help="where `seeds`, `tolerance`, `readme` and `mlflow` are read")
    p.add_argument("--only-run", action="store_true", help="tables of the cells that have run only")
    a = p.parse_args(argv)
    if not Path(a.workflow_config).is_file():
        raise ConfigError(f"--workflow-config: no such file {a.workflow_config} (run from the repository root, "
                          "or name it)")
    with open(a.workflow_config) as f:
        settings = yaml.safe_load(f) or {}
    a.tolerance = [f"{k}={v}" for k, v in (settings.get("tolerance") or {}).items()] + a.tolerance
    a.seeds = a.seeds or settings.get("seeds") or [1]
    mlflow = settings.get("mlflow") or {}
    a.mlflow_experiment = mlflow.get("experiment") or a.mlflow_experiment
    a.mlflow_uri = a.mlflow_uri or mlflow.get("uri")
    if a.only_run:
        from ..recipe.cells import read_cells
        from ..report.steps import runs
        if Path(a.cells).is_file():
            a.only = list(runs(read_cells(a.cells), a.results, a.seeds))
    report_step("all", a)
    return 0
