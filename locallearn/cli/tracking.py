"""`locallearn tracking init|sync`: the MLflow store the runs log to, and the mirror of a
preset's finished runs into it (also the last step of `locallearn tables`)."""
from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError

def tracking_init(argv: list[str]) -> int:
    """`locallearn tracking init`: create the store and the experiment once, before the
    jobs start, so they never race to create either."""
    from ..track import mlstore
    from ..atomic import atomic_write_json
    from ..recipe.config import HelpFormatter
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
    from ..credentials import take_credentials
    from ..recipe.config import HelpFormatter
    from ..layout import default_store, runs_dir
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
    from ..report.figures import draw_missing_curves
    from ..track import mlstore
    from ..track.mirror import sync_results
    draw_missing_curves(results)
    done = sync_results(results, uri, experiment)
    counts = {a: sum(v == a for v in done.values()) for a in ("created", "updated", "unchanged")}
    print(f"MLflow experiment {experiment!r} at {uri}: {len(done)} finished runs "
          f"({', '.join(f'{n} {a}' for a, n in counts.items())})")
    print(mlstore.browse_hint(uri, experiment))


# Every action of `locallearn tracking`: what runs it, and its line in the help.
TRACKING_ACTIONS = {
    "init": (tracking_init, "create the MLflow store and experiment once, before parallel jobs start"),
    "sync": (tracking_sync, "mirror a preset's finished run folders into its store, idempotently"),
}


def cmd_tracking(argv: list[str]) -> int:
    from .dispatch import pick, word_parser
    p = word_parser("locallearn tracking", "The MLflow store the runs log to.",
                    {a: text for a, (_, text) in TRACKING_ACTIONS.items()}, "action",
                    epilog="locallearn tracking ACTION --help: its flags.")
    action = pick(p, argv)
    return TRACKING_ACTIONS[action][0](argv[1:])


def mirror_results(results: str, uri: str | None, experiment: str) -> None:
    """The finished runs, browsable in MLflow (a fresh clone has only their metrics.json).
    A store that is down only warns: the tables are made."""
    from ..track import mlstore
    from ..errors import TrackingError
    from ..layout import default_store
    uri = mlstore.resolve_uri(uri) or default_store(results)
    try:
        sync_and_print(results, uri, experiment)
    except TrackingError as e:
        print(f"locallearn: warning: MLflow not synced: {e}", file=sys.stderr)
