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
  bench      time epochs of a recipe: fused engine vs the reference engine with a PIL DataLoader
  data       data prepare DATASET... [--data-dir D] [--download] [--source DIR]
  tracking   tracking init --uri URI --experiment NAME (create the MLflow experiment once);
             tracking sync RESULTS (mirror a preset's finished runs into its MLflow store)
  tables     tables, figures and README from the metrics.json files that exist (= `snakemake tables`)

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
    from .config import parse_train_args
    from .train import run
    run(parse_train_args(argv))
    return 0


def describe(cfg) -> dict:
    from .datasets import SPECS
    from .models import build_model, describe_layers
    spec = SPECS[cfg.dataset]
    model = build_model(cfg, spec.channels, spec.size, spec.num_classes)
    backprop, total = model.count_params()
    return {"model": cfg.model, "dataset": cfg.dataset,
            "input_shape": [spec.channels, spec.size, spec.size], "num_classes": spec.num_classes,
            "params_backprop": backprop, "params_total": total, "params_heads": total - backprop,
            "layers": describe_layers(model)}


def cmd_describe(argv: list[str]) -> int:
    from .config import build_parser, validate
    cfg = validate(build_parser("locallearn describe", DESCRIBE).parse_args(argv))
    print(json.dumps(describe(cfg), indent=1))
    return 0


def cmd_data(argv: list[str]) -> int:
    from pathlib import Path

    from .datasets import SPECS, prepare, resolve_data_dir
    from .helpformat import HelpFormatter
    p = argparse.ArgumentParser(
        prog="locallearn data", formatter_class=HelpFormatter,
        description="prepare: make datasets ready in the data dir (import from --source, or download, "
                    "then verify checksums), before parallel jobs read them.")
    p.add_argument("action", choices=["prepare"])
    p.add_argument("datasets", nargs="+", help=", ".join(SPECS))
    p.add_argument("--data-dir", default=None, help="dataset folder (default: $LOCALLEARN_DATA or ./data)")
    p.add_argument("--download", action="store_true", help="fetch from the internet when missing")
    p.add_argument("--source", default=None, help="folder holding the original archive files")
    a = p.parse_args(argv)
    data_dir = resolve_data_dir(a.data_dir)
    for name in a.datasets:
        if name not in SPECS:
            raise ConfigError(f"data prepare: unknown dataset {name!r} (known: {', '.join(SPECS)})")
        prepare(name, data_dir, download=a.download, source=Path(a.source) if a.source else None)
        print(f"{name}: ready in {data_dir}")
    return 0


def cmd_tracking(argv: list[str]) -> int:
    from .tracking import cli_init, cli_sync
    actions = {"init": cli_init, "sync": cli_sync}
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


def cmd_tables(argv: list[str]) -> int:
    """`locallearn tables`: compile the tables from whatever metrics.json exist (no
    training), draw the figures and splice the tables into a README: what `snakemake
    --cores 1 tables` does (report.refresh), without Snakemake."""
    from pathlib import Path

    import yaml

    from .cells import read_cells
    from .report import refresh, runs
    from .tables import intro

    d = TABLES_DEFAULTS
    from .helpformat import HelpFormatter

    p = argparse.ArgumentParser(prog="locallearn tables", description=cmd_tables.__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--results", default=d["results"],
                   help="a preset's results folder: reads runs/, writes tables/ and figures/")
    p.add_argument("--cells", default=d["cells"], help="the grid")
    p.add_argument("--workflow-config", default=d["workflow_config"], metavar="YAML",
                   help="where `seeds` and `tolerance` are read")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds to read (default: `seeds` of --workflow-config)")
    p.add_argument("--tolerance", action="append", default=[], metavar="[DATASET=]PP",
                   help="verdict tolerance in percentage points, over those of --workflow-config")
    p.add_argument("--readme", default=None, help="README to splice the tables into (markers required)")
    p.add_argument("--only-run", action="store_true", help="tables of the cells that have run only")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    args = p.parse_args(argv)
    for flag, path in (("--cells", args.cells), ("--workflow-config", args.workflow_config)):
        if not Path(path).is_file():
            raise ConfigError(f"{flag}: no such file {path} (run from the repository root, or name it)")
    with open(args.workflow_config) as f:
        settings = yaml.safe_load(f) or {}
    tolerance = dict(settings.get("tolerance") or {})
    for item in args.tolerance:
        key, sep, value = item.partition("=")
        try:
            tolerance[key if sep else "default"] = float(value if sep else key)
        except ValueError:
            raise ConfigError(f"--tolerance: expected NUMBER or DATASET=NUMBER, got {item!r}") from None
    tolerance.setdefault("default", 0.5)
    seeds = args.seeds or settings.get("seeds") or [1]
    rows = read_cells(args.cells)
    if args.only_run:
        found = runs(rows, args.results, seeds)
        rows = [r for r in rows if r["cell"] in found]
    source = f"`{args.workflow_config}`" + (" and --tolerance" if args.tolerance else "")
    tables = refresh(rows, args.results, seeds=seeds, tolerance=tolerance, intro=intro(seeds, source),
                     readme_path=args.readme, draw=not args.no_figures)
    print(f"wrote {Path(args.results) / 'tables'}/ ({len(tables)} files)"
          + (f" and spliced {args.readme}" if args.readme else ""))
    return 0


def cmd_bench(argv: list[str]) -> int:
    from .bench import cli_bench
    return cli_bench(argv)


class Terminated(KeyboardInterrupt):
    """SIGTERM (SLURM's time limit or preemption, snakemake's Ctrl-C, `kill`): unwound like
    Ctrl-C, so the trainer marks its MLflow run FAILED and the last checkpoint stays."""


def _on_sigterm(signum, frame):
    raise Terminated("terminated by SIGTERM")


COMMANDS = {"train": cmd_train, "describe": cmd_describe, "bench": cmd_bench, "data": cmd_data,
            "tracking": cmd_tracking, "tables": cmd_tables}


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
