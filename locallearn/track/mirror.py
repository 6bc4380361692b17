"""The MLflow mirror of finished run folders: `mirror` makes a folder's run the copy of
its files, and uploads what exists (it draws nothing: a missing curve is drawn by
report/figures.py before a sync).

It ends a run logged live (track/live.py), and alone it mirrors a folder finished
elsewhere or before the store existed (`locallearn tracking sync`, `locallearn tables`,
a rerun of a finished run). A mirrored run gets the training's times (runs/runstate.py's
`run_times`: metrics.json's `started_at` and `finished_at`, or for the runs finished
before those were recorded, the commit that added their metrics.json).
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from . import mlstore
from ..credentials import take_credentials
from ..errors import TrackingError
from ..runs.runstate import CURVE, METRICS, is_number, recorded_run_name, run_times
from .records import (RUN_FILE, SUMMARY_KEYS, TAG_OUT_DIR, epoch_metrics, metric, mlflow_tags, now_ms,
                      run_of_hash, run_params, stored_run, without_credentials, write_run_file)

log = logging.getLogger("locallearn.tracking")


def sync_results(preset_dir: str | Path, uri: str, experiment: str) -> dict[str, str]:
    """`mirror` every finished run folder of a preset (layout.finished_run_folders) into
    `experiment` of the store at `uri`. Returns {run folder: "created" | "updated" | "unchanged"}."""
    from ..layout import finished_run_folders
    return {str(d.resolve()): mirror(d, uri, experiment) for d in finished_run_folders(preset_dir)}


def mirror(folder: Path, uri: str, experiment: str, client=None) -> str:
    """Make the MLflow run of a finished run folder the mirror of its files: the run is
    found again by the folder's mlflow_run.json or its config hash (a run logged live is
    continued, never doubled) or created with the training's times; then whatever it
    lacks is sent: params, the per-epoch history, tags, the summary, metrics.json and the
    learning curve (where the folder holds one: the mirror draws nothing) as artifacts,
    and the FINISHED status. Idempotent: a second call
    writes nothing. The end of a live run (RunTracker.complete) and `locallearn tracking
    sync` both come here (`client`: a live run's, already open). Returns "created",
    "updated" or "unchanged"."""
    uri = take_credentials(uri)
    folder = Path(folder).resolve()
    metrics = json.loads((folder / METRICS).read_text())
    run_name = recorded_run_name(folder, metrics)
    metrics = {**metrics, "run_name": run_name}
    tags = without_credentials(mlflow_tags(metrics))
    start_ms, end_ms = run_times(metrics, folder / METRICS)
    client = client or mlstore.client(uri)
    exp_id = mlstore.experiment_id(client, uri, experiment)

    def find_or_create():
        run = stored_run(client, folder, exp_id) or run_of_hash(client, exp_id, metrics.get("config_hash"))
        if run is None:
            run = client.create_run(exp_id, run_name=run_name, tags={**tags, TAG_OUT_DIR: str(folder)},
                                    start_time=start_ms)
            created = True
        else:
            created = False
        run_file = folder / RUN_FILE
        if not run_file.is_file() or json.loads(run_file.read_text()).get("run_id") != run.info.run_id:
            write_run_file(folder, uri, exp_id, run.info.run_id)
        return run, created

    run, created = mlstore.call(uri, f"find the run of {folder}", find_or_create)
    run_id = run.info.run_id
    writes = 0
    params = {k: v for k, v in run_params(metrics.get("config") or {}).items() if k not in run.data.params}
    if params:
        from mlflow.entities import Param
        mlstore.call(uri, "log the params", lambda: client.log_batch(
            run_id, params=[Param(k, v) for k, v in params.items()]))
        writes += len(params)
    last = int(run.data.metrics.get("epoch", 0))
    history = sorted(metrics.get("history") or [], key=lambda h: h["epoch"])
    for entry in history:
        if entry["epoch"] > last:
            # stamped across the training's span, so MLflow's relative-time axis is the training's
            when = (start_ms + (end_ms - start_ms) * entry["epoch"] // len(history)) if start_ms else now_ms()
            batch = epoch_metrics(entry, when)
            mlstore.call(uri, f"log epoch {entry['epoch']}", lambda: client.log_batch(run_id, metrics=batch))
            writes += 1
    curve = folder / CURVE   # drawn by the trainer, or before a sync (report/figures.py)
    artifacts = [folder / METRICS] + ([curve] if curve.is_file() else [])
    writes += _log_finished_run(client, uri, run, metrics, artifacts)
    if run.info.status != "FINISHED":
        mlstore.call(uri, "finish the run", lambda: client.set_terminated(run_id, "FINISHED", end_time=end_ms))
        writes += 1
    return "created" if created else "updated" if writes else "unchanged"


def _log_finished_run(client, uri: str, run, metrics: dict, artifacts) -> int:
    """Bring a run up to its finished metrics.json: the tags it implies, the summary
    metrics and the artifacts, each only where the run differs. Returns how many things
    were written (0: the run already was the mirror of `metrics`)."""
    run_id = run.info.run_id
    writes = 0
    if "config" in metrics:
        tags = {k: v for k, v in mlflow_tags(metrics).items() if run.data.tags.get(k) != v}
        if tags:
            from mlflow.entities import RunTag
            mlstore.call(uri, "tag the run", lambda: client.log_batch(
                run_id, tags=[RunTag(k, v) for k, v in tags.items()]))
            writes += len(tags)
    now = now_ms()
    summary = [metric(name, metrics[key], now, 0) for key, name in SUMMARY_KEYS.items()
               if is_number(metrics.get(key)) and run.data.metrics.get(name) != float(metrics[key])]
    if summary:
        mlstore.call(uri, "log the summary", lambda: client.log_batch(run_id, metrics=summary))
        writes += len(summary)
    for path in map(Path, artifacts):
        if not path.is_file():
            log.warning("locallearn: warning: artifact %s does not exist; not uploaded", path)
        elif mlstore.upload(client, uri, run, path):
            writes += 1
    return writes


def mirror_finished(cfg, out_dir: Path) -> None:
    """A run found finished (not trained again): its MLflow run brought up to date."""
    uri = mlstore.resolve_uri(cfg.mlflow_uri)
    if uri is not None:
        kept_if_store_fails(lambda: mirror(Path(out_dir), uri, cfg.mlflow_experiment))


def kept_if_store_fails(send) -> None:
    """Send a finished run to MLflow; a store that fails is one warning, never an error."""
    try:
        send()
    except TrackingError as e:
        print(f"locallearn: warning: {e} (metrics.json is kept; rerun the same command to sync MLflow)",
              file=sys.stderr)
