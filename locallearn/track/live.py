"""MLflow logging of a run while it trains: one MLflow run per run folder.

The run loop opens the folder's run (open_run) before its first epoch, logs each epoch as
it is checkpointed (RunTracker.log_history), and at the end hands the finished folder to
the mirror (track/mirror.py), which sends whatever the run lacks.

- Jobs are killed and rerun. The run id lives in DIR/mlflow_run.json, so a resume or a
  rerun continues the same run; the last epoch already logged is read back from the
  store, so re-sending the whole history never duplicates a step.
- A store that fails once training has started only delays logging: the next call
  catches up from the history (store plumbing and retries: track/mlstore.py).

A live run is created when training starts, so its times are the training's.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path

from . import mlstore
from ..credentials import take_credentials
from ..faults import fault
from ..host.environment import git_revision
from ..methods import registry
from ..recipe.config import config_hash
from ..errors import TrackingError
from .mirror import kept_if_store_fails, mirror
from .records import (MAX_TAG_LENGTH, TAG_ERROR, TAG_OUT_DIR, epoch_metrics, mlflow_tags, now_ms,
                      param_strings, run_params, stored_run, tagged_run, without_credentials,
                      write_run_file)

log = logging.getLogger("locallearn.tracking")


class RunTracker:
    """The MLflow run of one output folder. Opened with uri None it does nothing, so the
    trainer calls it unconditionally."""

    def __init__(self, client=None, uri: str | None = None, run_id: str | None = None,
                 last_epoch: int = 0, monitor=None, out_dir: Path | None = None, experiment: str = ""):
        self._client = client
        self._uri = uri
        self._out, self._experiment = out_dir, experiment
        self._run_id = run_id
        self._last_epoch = last_epoch   # None: unknown after a failed write, re-read it
        self._warned = False
        self._monitor = monitor         # MLflow's system metrics sampler, when switched on

    @property
    def run_id(self) -> str | None:
        return self._run_id

    @classmethod
    def open(cls, out_dir: Path, uri: str | None, experiment: str, run_name: str,
             tags: dict[str, str], params: dict, environment: dict | None = None,
             system_metrics: bool | None = None) -> "RunTracker":
        """Continue the folder's run (status back to RUNNING) or create it. Raises
        TrackingError when the store cannot be reached, before any training starts.
        `params`: the run's config (only the recipe is logged); `environment`: what
        environment.describe gave, as metrics.json will hold it; `system_metrics`: sample
        CPU, memory, disk, network (and GPU) into `system/*` metrics while the run is open
        (None: MLflow's own switch, $MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING)."""
        if uri is None:
            return cls()
        uri = take_credentials(uri)
        tags, params = without_credentials(tags), without_credentials(params)
        out_dir = Path(out_dir).resolve()
        client = mlstore.client(uri)
        exp_id = mlstore.experiment_id(client, uri, experiment)
        record = {"config": params, "tags": tags, "run_name": run_name, "environment": environment}
        tags = {**mlflow_tags(record), TAG_OUT_DIR: str(out_dir)}
        params = run_params(params)

        def open_run():
            run = stored_run(client, out_dir, exp_id) or tagged_run(client, exp_id, tags)
            if run is None:
                run = client.create_run(exp_id, run_name=run_name, tags=tags)
            write_run_file(out_dir, uri, exp_id, run.info.run_id)
            return run

        run = mlstore.call(uri, "open the run", open_run)
        run_id = run.info.run_id
        new_params = {k: v for k, v in param_strings(params).items()
                      if k not in run.data.params}  # a rerun's extra flags may differ: keep the first
        mlstore.call(uri, "start the run", lambda: _log_run_start(client, run_id, run_name, tags, new_params))
        monitor = (_start_system_metrics(uri, run_id, (environment or {}).get("device"))
                   if _system_metrics_on(system_metrics) else None)
        return cls(client, uri, run_id, int(run.data.metrics.get("epoch", 0)), monitor, out_dir, experiment)

    def log_history(self, history: list[dict]) -> None:
        """Log every epoch of `history` (metrics.json's list) not yet in the run, one
        batch per epoch so an epoch is stored whole or not at all. A store that fails
        now only warns: training goes on and the next call sends what is missing."""
        if self._client is None:
            return
        try:
            self._sync(history)
        except TrackingError as e:
            if not self._warned:
                log.warning("locallearn: warning: %s; training goes on, the missing epochs "
                            "are sent at the next epoch", e)
                self._warned = True

    def complete(self) -> None:
        """End the run of a folder whose metrics.json is written: `mirror` sends whatever
        the run lacks (epochs, summary, artifacts) and marks it FINISHED. Raises
        TrackingError if the store cannot take it (rerunning the same command finishes it)."""
        if self._client is None:
            return
        self._stop_monitor()
        mirror(self._out, self._uri, self._experiment, self._client)

    def fail(self, error: str | None) -> None:
        """Mark the run FAILED with the error as a tag; never raises, so the trainer's own
        error is the one the user sees."""
        if self._client is None:
            return
        self._stop_monitor()
        try:
            self._fail(error)
        except TrackingError as e:
            log.warning("locallearn: warning: could not mark the MLflow run FAILED: %s", e)

    def _stop_monitor(self) -> None:
        if self._monitor is not None:   # its last samples are flushed while the run is open
            self._monitor.finish()
            self._monitor = None

    def _sync(self, history: list[dict]) -> None:
        client, run_id = self._client, self._run_id
        if self._last_epoch is None:
            run = mlstore.call(self._uri, "read the run", lambda: client.get_run(run_id))
            self._last_epoch = int(run.data.metrics.get("epoch", 0))
        for entry in sorted(history, key=lambda h: h["epoch"]):
            if entry["epoch"] <= self._last_epoch:
                continue
            batch = epoch_metrics(entry, now_ms())
            fault("kill-mlflow-epoch", entry["epoch"])
            try:
                # the same Metric objects on every retry: a write that landed but was
                # reported failed is deduplicated by the store, not doubled
                mlstore.call(self._uri, f"log epoch {entry['epoch']}",
                      lambda: client.log_batch(run_id, metrics=batch))
            except TrackingError:
                self._last_epoch = None
                raise
            self._last_epoch = entry["epoch"]
            self._warned = False

    def _fail(self, error: str | None) -> None:
        client, run_id = self._client, self._run_id
        reason = str(error or "").strip().split("\n", 1)[0][:MAX_TAG_LENGTH]
        if reason:
            mlstore.call(self._uri, "tag the error", lambda: client.set_tag(run_id, TAG_ERROR, reason))
        mlstore.call(self._uri, "mark the run FAILED", lambda: client.set_terminated(run_id, "FAILED"))


# --- the run loop's calls -------------------------------------------------------------

def run_tags(cfg) -> dict[str, str]:
    """The tags a run of `cfg` carries (its --tag flags, and what identifies the run)."""
    tags = dict(t.split("=", 1) for t in cfg.tag)
    tags.update(dataset=cfg.dataset, model=cfg.model, seed=str(cfg.seed), config_hash=config_hash(cfg),
                loss="backprop" if cfg.backprop else cfg.loss_sup if cfg.method == "paper" else cfg.method,
                git_revision=git_revision() or "unknown")
    source = registry.source_of(cfg.method)   # a plugin's method: which package, which version
    if source:
        tags.update(method_distribution=source["distribution"], method_version=str(source["version"]))
    return tags


def open_run(cfg, out_dir: Path, run_name: str, environment: dict | None) -> RunTracker:
    """The MLflow run of a run folder about to train (a no-op tracker with tracking off);
    `environment` (environment.describe) becomes its env.* tags."""
    return RunTracker.open(out_dir, mlstore.resolve_uri(cfg.mlflow_uri), cfg.mlflow_experiment, run_name,
                           run_tags(cfg), vars(cfg), environment,
                           system_metrics=cfg.mlflow_system_metrics or None)


def complete_run(tracker: RunTracker) -> None:
    """End a finished run's MLflow run. metrics.json is already safe: a store that fails
    now is reported, not fatal, and the next run of the same command repairs the run."""
    kept_if_store_fails(tracker.complete)


def _system_metrics_on(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING
    return bool(MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get())


def _has_pynvml() -> bool:
    """Whether nvidia-ml-py (the `gpu` extra), which MLflow's GPU sampler needs, imports."""
    try:
        importlib.import_module("pynvml")
    except ImportError:
        return False
    return True


def _start_system_metrics(uri: str, run_id: str, device: str | None = None):
    """MLflow's psutil sampler (and its GPU one where NVML answers) on a thread, logging
    `system/*` metrics every $MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL s (default 10), one
    step per sample, continuing a resumed run's steps. A sampler that cannot start only warns;
    so does a run on a CUDA `device` without pynvml (MLflow says so only below WARNING)."""
    if str(device or "").startswith("cuda") and not _has_pynvml():
        log.warning("locallearn: warning: no GPU system metrics: nvidia-ml-py is not installed "
                    "(pip install nvidia-ml-py, or the locallearn[gpu] extra)")
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        monitor = SystemMetricsMonitor(run_id, resume_logging=True, tracking_uri=uri)
        monitor.start()
        return monitor
    except Exception as e:  # noqa: BLE001 - watching the machine must never stop training
        log.warning("locallearn: warning: MLflow system metrics are off: %s", mlstore.reason(e))
        return None


def _log_run_start(client, run_id: str, run_name: str, tags: dict, params: dict) -> None:
    from mlflow.entities import Param, RunTag

    client.update_run(run_id, status="RUNNING", name=run_name)
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()],
                     tags=[RunTag(k, v[:MAX_TAG_LENGTH]) for k, v in tags.items()])
