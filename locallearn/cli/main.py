"""`locallearn <command>`: train, describe, bench, data prepare, tracking, tables, report.

Errors a user can fix (LocallearnError) print as one line and exit non-zero; pass
--debug for the traceback.
"""
from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys

from .. import __version__
from ..errors import ConfigError, LocallearnError
from .dispatch import pick, word_parser
from .report import REPORT_STEPS, cmd_report, cmd_tables
from .tracking import TRACKING_ACTIONS, cmd_tracking

DESCRIBE = """Print the network a `locallearn train` command with these flags would build, as
JSON (input shape, classes, parameter counts, each layer and its decoder pooling),
without loading data or training."""


def cmd_train(argv: list[str]) -> int:
    from ..recipe.config import parse_train_args
    from ..report.figures import draw_run_curve
    from ..train.trainer import run, set_aside_only
    argv = cell_argv(argv)
    cfg = parse_train_args(argv)
    if cfg.set_aside_to:
        set_aside_only(cfg, argv)
    else:
        run(cfg, argv, draw_curve=draw_run_curve)   # the trainer draws no figure of its own
    return 0


def cell_argv(argv: list[str]) -> list[str]:
    """`locallearn train --cell NAME [--seed K] [--preset NAME] [--configfile FILE] [flag ...]`:
    the workflow's command for that run (its recipe, folder, MLflow store and run name:
    plan.Preset.job_args, from the workflow's own config and presets), then any other
    flags given (where and how it runs: --device, --threads ...). Without --cell, `argv`."""
    if "--cell" not in argv and not any(a.startswith("--cell=") for a in argv):
        return argv
    from ..recipe.config import config_hash, parse_train_args
    from ..workflow import plan
    p = argparse.ArgumentParser(prog="locallearn train --cell", add_help=False)
    p.add_argument("--cell", required=True)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--preset", default="full", choices=plan.PRESETS)
    p.add_argument("--configfile", default=None)
    known, rest = p.parse_known_args(argv)
    try:
        overrides = None
        if known.configfile:
            import yaml
            with open(known.configfile) as f:
                overrides = yaml.safe_load(f) or {}
        config = plan.load_config(overrides=overrides)
        rows = plan.load_cells(plan.cells_path(config))
        preset = plan.make_presets(config, rows)[known.preset]
        stages = plan.pipeline_stages(config, rows).get(known.cell, 1)
        seed = preset.seeds[0] if known.seed is None else known.seed
        job = preset.job_args(config, known.cell, seed, stages)
    except (plan.PlanError, OSError) as e:
        raise ConfigError(f"locallearn train --cell: {e}") from None
    if rest and config_hash(parse_train_args(job + rest)) != config_hash(parse_train_args(job)):
        raise ConfigError(f"locallearn train --cell {known.cell}: {' '.join(rest)} would change the cell's recipe "
                          "(its config hash): give only flags of where and how it runs, or train without --cell")
    print(f"locallearn train {shlex.join(job + rest)}", flush=True)
    return job + rest


def cmd_describe(argv: list[str]) -> int:
    from ..nets.models import describe
    from ..recipe.config import build_parser, validate
    cfg = validate(build_parser("locallearn describe", DESCRIBE).parse_args(argv))
    print(json.dumps(describe(cfg), indent=1))
    return 0


def cmd_data(argv: list[str]) -> int:
    from pathlib import Path

    from ..data.datafetch import prepare
    from ..recipe.specs import SPECS
    from ..layout import resolve_data_dir
    from ..recipe.config import HelpFormatter
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
        from ..atomic import atomic_write_json
        atomic_write_json(a.record, {"datasets": a.datasets, "data_dir": str(data_dir)})
    return 0


def cmd_bench(argv: list[str]) -> int:
    """`bench` compares training paths of one recipe (bench/paths.py); `bench --grid` measures
    the grid's cost (bench/gridbench.py), with flags of its own."""
    which = argparse.ArgumentParser(add_help=False)
    which.add_argument("--grid", action="store_true")
    known, rest = which.parse_known_args(argv)
    if known.grid:
        from ..bench.gridbench import cli_grid_bench
        return cli_grid_bench(rest)
    from ..bench.paths import cli_bench
    return cli_bench(rest)


class Terminated(KeyboardInterrupt):
    """SIGTERM (SLURM's time limit or preemption, snakemake's Ctrl-C, `kill`): unwound like
    Ctrl-C, so the trainer marks its MLflow run FAILED and the last checkpoint stays."""


def _on_sigterm(signum, frame):
    raise Terminated("terminated by SIGTERM")


# Every command: what runs it, and its line in `locallearn --help`.
COMMANDS = {
    "train": (cmd_train, "train one run (the reference's train.py flags, plus --out, --data-dir, ...)"),
    "describe": (cmd_describe, "print a run's network as JSON (parameter counts, decoder pooling) without "
                               "training"),
    "bench": (cmd_bench, "time epochs of a recipe: fused engine vs the reference engine with a PIL "
                         "DataLoader; bench --grid: time every distinct network x loss of cells.tsv (the "
                         "grid's cost)"),
    "data": (cmd_data, "data prepare DATASET... [--data-dir D] [--download] [--source DIR]"),
    "tracking": (cmd_tracking, f"tracking {'|'.join(TRACKING_ACTIONS)}: the MLflow store the runs log to, "
                               "and the mirror of a preset's finished runs into it"),
    "tables": (cmd_tables, "tables, figures, README and MLflow mirror from the metrics.json files that exist "
                           "(= `snakemake --cores 1 tables`)"),
    "report": (cmd_report, f"report {'|'.join(REPORT_STEPS)}: one step of the tables (the workflow's "
                           "reporting rules)"),
}


def top_parser():
    p = word_parser("locallearn", f"locallearn {__version__}: training neural networks with local error signals.",
                    {name: text for name, (_, text) in COMMANDS.items()}, "command",
                    epilog="locallearn COMMAND --help: its flags. An error a user can fix prints as one line; "
                           "--debug shows its traceback.")
    p.add_argument("--version", action="version", version=f"locallearn {__version__}",
                   help="print the version and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    top = top_parser()
    if not argv:
        top.print_help()
        return 2
    try:
        command = pick(top, argv)
    except SystemExit as e:   # --help, --version
        return e.code
    except LocallearnError as e:
        print(f"locallearn: error: {e}", file=sys.stderr)
        return e.exit_code
    debug = "--debug" in argv
    try:
        old_handler = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        old_handler = None
    try:
        return COMMANDS[command][0](argv[1:])
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
