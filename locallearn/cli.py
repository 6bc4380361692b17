"""`locallearn <command>`: train, describe, bench, data prepare, tracking init, tables.

Errors a user can fix (LocallearnError) print as one line and exit non-zero; pass
--debug for the traceback.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys

from . import __version__
from .errors import ConfigError, LocallearnError

USAGE = f"""usage: locallearn <command> [flags]      (locallearn <command> --help: its flags)

locallearn {__version__}: training neural networks with local error signals.

commands:
  train      train one run (the reference's train.py flags, plus --out, --data-dir, ...)
  describe   print a run's network as JSON (parameter counts, decoder pooling) without training
  bench      time epochs of a recipe: fused engine vs the reference engine with a PIL DataLoader;
             bench --grid: time every distinct network x loss of cells.tsv (the grid's cost)
  data       data prepare DATASET... [--data-dir D] [--download] [--source DIR]
  tracking   tracking init --uri URI --experiment NAME (create the MLflow experiment once);
             tracking sync RESULTS (mirror a preset's finished runs into its MLflow store)
  tables     tables, figures, README and MLflow mirror from the metrics.json files that exist
             (= `snakemake --cores 1 tables`)
  report     report curve|layers|scatter|tables|readme|all: one step of that (the workflow's rules)

  --version  print the version and exit
"""

DESCRIBE = """Print the network a `locallearn train` command with these flags would build, as
JSON (input shape, classes, parameter counts, each layer and its decoder pooling),
without loading data or training."""

TRACKING_USAGE = """usage: locallearn tracking ACTION [flags]

The MLflow store the runs log to.

actions:
  init   create the store and the experiment once, before parallel jobs start
         (locallearn tracking init --help)
  sync   mirror a preset's finished run folders into its store, idempotently
         (locallearn tracking sync --help)
"""


def cmd_train(argv: list[str]) -> int:
    from .recipe.config import parse_train_args
    from .report.figures import draw_run_curve
    from .train.train import run, set_aside_only
    cfg = parse_train_args(argv)
    if cfg.set_aside_to:
        set_aside_only(cfg, argv)
    else:
        run(cfg, argv, draw_curve=draw_run_curve)   # the trainer draws no figure of its own
    return 0


def describe(cfg) -> dict:
    from .recipe.specs import SPECS
    from .nets.models import build_model, describe_layers
    spec = SPECS[cfg.dataset]
    model = build_model(cfg, spec.channels, spec.size, spec.num_classes)
    backprop, total = model.count_params()
    return {"model": cfg.model, "dataset": cfg.dataset,
            "input_shape": [spec.channels, spec.size, spec.size], "num_classes": spec.num_classes,
            "params_backprop": backprop, "params_total": total, "params_heads": total - backprop,
            "layers": describe_layers(model)}


def cmd_describe(argv: list[str]) -> int:
    from .recipe.config import build_parser, validate
    cfg = validate(build_parser("locallearn describe", DESCRIBE).parse_args(argv))
    print(json.dumps(describe(cfg), indent=1))
    return 0


def cmd_data(argv: list[str]) -> int:
    from pathlib import Path

    from .data.datafetch import prepare
    from .recipe.specs import SPECS
    from .layout import resolve_data_dir
    from .recipe.config import HelpFormatter
    p = argparse.ArgumentParser(
        prog="locallearn data", formatter_class=HelpFormatter,
        description="prepare: make datasets ready in the data dir (import from --source, or download, "
                    "then verify checksums), before parallel jobs read them.")
    p.add_argument("action", choices=["prepare"])
    p.add_argument("datasets", nargs="+", help=", ".join(SPECS))
    p.add_argument("--data-dir", default=None, help="dataset folder (default: $LOCALLEARN_DATA or ./data)")
    p.add_argument("--download", action="store_true", help="fetch from the internet when missing")
    p.add_argument("--source", default=None, help="folder holding the original archive files")
    p.add_argument("--record", default=None, metavar="FILE",
                   help="when all are ready, write what was prepared where to FILE (JSON; the workflow's mark)")
    a = p.parse_args(argv)
    data_dir = resolve_data_dir(a.data_dir)
    for name in a.datasets:
        if name not in SPECS:
            raise ConfigError(f"data prepare: unknown dataset {name!r} (known: {', '.join(SPECS)})")
        prepare(name, data_dir, download=a.download, source=Path(a.source) if a.source else None)
        print(f"{name}: ready in {data_dir}")
    if a.record:
        from .atomic import atomic_write_json
        atomic_write_json(a.record, {"datasets": a.datasets, "data_dir": str(data_dir)})
    return 0


def tracking_init(argv: list[str]) -> int:
    """`locallearn tracking init`: create the store and the experiment once, before the
    jobs start, so they never race to create either."""
    from .track import mlstore
    from .atomic import atomic_write_json
    from .recipe.config import HelpFormatter
    p = argparse.ArgumentParser(prog="locallearn tracking init", formatter_class=HelpFormatter,
                                description="Create the MLflow store and experiment once, before "
                                            "parallel jobs start, so they never race to create either.")
    p.add_argument("--uri", default=None, help="tracking URI (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--experiment", default="locallearn", help="experiment name")
    p.add_argument("--record", default=None, metavar="FILE",
                   help="write the (credential-free) URI and experiment to FILE (JSON; the workflow's mark)")
    args = p.parse_args(argv)
    uri = mlstore.resolve_uri(args.uri)
    if uri is None:
        raise ConfigError("--uri: no tracking URI given and MLFLOW_TRACKING_URI is not set")
    exp_id = mlstore.ensure_experiment(uri, args.experiment)
    print(f"MLflow experiment {args.experiment!r} (id {exp_id}) ready at {uri}")
    if args.record:
        atomic_write_json(args.record, {"uri": uri, "experiment": args.experiment, "experiment_id": exp_id})
    return 0


def tracking_sync(argv: list[str]) -> int:
    """`locallearn tracking sync RESULTS`: mirror a preset's finished runs into MLflow."""
    from .credentials import take_credentials
    from .recipe.config import HelpFormatter
    from .layout import default_store, runs_dir
    p = argparse.ArgumentParser(prog="locallearn tracking sync", formatter_class=HelpFormatter,
                                description="Mirror every finished run folder of a preset (runs/*/seed*/"
                                            "metrics.json) into its MLflow store: one run per cell x seed, "
                                            "a run logged live continued, nothing written twice.")
    p.add_argument("results", help="a preset's results folder (holds runs/), e.g. results/full")
    p.add_argument("--uri", default=None, help="tracking URI (default: sqlite:///RESULTS/mlflow.db)")
    p.add_argument("--experiment", default="locallearn", help="experiment name")
    args = p.parse_args(argv)
    if not runs_dir(args.results).is_dir():
        raise ConfigError(f"{args.results}: no runs/ folder (expected a preset's results folder, e.g. results/full)")
    uri = take_credentials(args.uri) or default_store(args.results)
    sync_and_print(args.results, uri, args.experiment)
    return 0


def sync_and_print(results: str, uri: str, experiment: str) -> None:
    """Mirror the preset's finished runs into the store (tracking.sync_results), their
    missing curves drawn first (the mirror uploads what exists); say what changed and how
    to browse it."""
    from .report.figures import draw_missing_curves
    from .track import mlstore
    from .track.tracking import sync_results
    draw_missing_curves(results)
    done = sync_results(results, uri, experiment)
    counts = {a: sum(v == a for v in done.values()) for a in ("created", "updated", "unchanged")}
    print(f"MLflow experiment {experiment!r} at {uri}: {len(done)} finished runs "
          f"({', '.join(f'{n} {a}' for a, n in counts.items())})")
    print(mlstore.browse_hint(uri, experiment))


def cmd_tracking(argv: list[str]) -> int:
    actions = {"init": tracking_init, "sync": tracking_sync}
    if argv[:1] and argv[0] in actions:
        return actions[argv[0]](argv[1:])
    if argv[:1] in (["-h"], ["--help"]):
        print(TRACKING_USAGE)
        return 0
    raise ConfigError("usage: locallearn tracking init|sync ... (see locallearn tracking --help)")


# `locallearn tables` defaults: the workflow's own files, taken from the working
# directory (the repository root); the package itself never reads workflow/.
TABLES_DEFAULTS = {"results": "results/full", "cells": "workflow/config/cells.tsv",
                   "workflow_config": "workflow/config/config.yaml"}
TOLERANCE_SOURCE = "`workflow/config/config.yaml`"
REPORT_STEPS = ("curve", "layers", "scatter", "field", "tables", "readme", "all")


def report_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The flags of every reporting step: which rows, seeds, tolerances, where."""
    from .recipe.config import HelpFormatter
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

    from .report import report
    from .recipe.cells import read_cells
    from .report.tables import intro
    if not Path(a.cells).is_file():
        raise ConfigError(f"--cells: no such file {a.cells} (run from the repository root, or name it)")
    rows = read_cells(a.cells)
    if a.only is not None:
        unknown = sorted(set(a.only) - {r["cell"] for r in rows})
        if unknown:
            raise ConfigError(f"--only: {', '.join(unknown)} not in {a.cells}")
        rows = [r for r in rows if r["cell"] in a.only]
    if a.on_dataset:
        from .recipe.cells import moved_to
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


def mirror_results(results: str, uri: str | None, experiment: str) -> None:
    """The finished runs, browsable in MLflow (a fresh clone has only their metrics.json).
    A store that is down only warns: the tables are made."""
    from .track import mlstore
    from .errors import TrackingError
    from .layout import default_store
    uri = mlstore.resolve_uri(uri) or default_store(results)
    try:
        sync_and_print(results, uri, experiment)
    except TrackingError as e:
        print(f"locallearn: warning: MLflow not synced: {e}", file=sys.stderr)


def cmd_report(argv: list[str]) -> int:
    """`locallearn report STEP`: one step of a preset's report from the metrics.json
    files that exist (what the workflow's reporting rules run)."""
    if not argv or argv[0] not in REPORT_STEPS:
        if argv[:1] in (["-h"], ["--help"]):
            print(f"usage: locallearn report {{{','.join(REPORT_STEPS)}}} [flags]   (locallearn report STEP --help)")
            return 0
        raise ConfigError(f"usage: locallearn report {{{','.join(REPORT_STEPS)}}} [flags]")
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
        from .recipe.cells import read_cells
        from .report.report import runs
        if Path(a.cells).is_file():
            a.only = list(runs(read_cells(a.cells), a.results, a.seeds))
    report_step("all", a)
    return 0


def cmd_bench(argv: list[str]) -> int:
    """`bench` compares training paths of one recipe (bench/bench.py); `bench --grid` measures
    the grid's cost (bench/gridbench.py), with flags of its own."""
    which = argparse.ArgumentParser(add_help=False)
    which.add_argument("--grid", action="store_true")
    known, rest = which.parse_known_args(argv)
    if known.grid:
        from .bench.gridbench import cli_grid_bench
        return cli_grid_bench(rest)
    from .bench.bench import cli_bench
    return cli_bench(rest)


class Terminated(KeyboardInterrupt):
    """SIGTERM (SLURM's time limit or preemption, snakemake's Ctrl-C, `kill`): unwound like
    Ctrl-C, so the trainer marks its MLflow run FAILED and the last checkpoint stays."""


def _on_sigterm(signum, frame):
    raise Terminated("terminated by SIGTERM")


COMMANDS = {"train": cmd_train, "describe": cmd_describe, "bench": cmd_bench, "data": cmd_data,
            "tracking": cmd_tracking, "tables": cmd_tables, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--version"]:
        print(f"locallearn {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    debug = "--debug" in argv
    try:
        old_handler = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        old_handler = None
    try:
        return COMMANDS[argv[0]](argv[1:])
    except LocallearnError as e:
        if debug:
            raise
        print(f"locallearn: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"locallearn: {how}; rerun the same command to resume from the last checkpoint",
              file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
