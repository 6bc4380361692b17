"""MLflow run logging: one MLflow run per run folder, kept a mirror of its files.

metrics.json is the source of truth; MLflow is its browsable mirror. Two ways in:
- live: the run loop opens the folder's run (open_run) before its first epoch, logs each
  epoch as it is checkpointed (RunTracker.log_history), and at the end hands the
  finished folder to `mirror`, which sends whatever the run lacks;
- later: `mirror` alone, for a folder finished elsewhere or before the store existed
  (`locallearn tracking sync`, `locallearn tables`, a rerun of a finished run).
So a run logged live and the same run mirrored later carry the same params, tags,
metrics and artifacts.

- Jobs are killed and rerun. The run id lives in DIR/mlflow_run.json, so a resume or a
  rerun continues the same run; the last epoch already logged is read back from the
  store, so re-sending the whole history never duplicates a step.
- A store that fails once training has started only delays logging: the next call
  catches up from the history (store plumbing and retries: track/mlstore.py).

What a run carries: the recipe as params (config.NON_RECIPE left out), the grid's tags,
MLflow's own tags (run name, source, git commit, user) and the environment as `env.*`
tags, all derived by `mlflow_tags` from what metrics.json holds.

A run's times are the training's: a live run is created when training starts; a
mirrored run gets metrics.json's `started_at` and `finished_at`. Runs finished before
metrics.json recorded them (the committed Fashion-MNIST row) end at the commit that
added their metrics.json (`git log --diff-filter=A`) and start `wall_seconds` before it
(`run_times`).
"""
from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from . import mlstore
from ..atomic import atomic_write_text
from ..recipe.config import NON_RECIPE, config_hash
from ..credentials import redact_uri, take_credentials
from ..host.environment import git_revision
from ..errors import TrackingError
from ..faults import fault
from ..runs.runstate import CURVE, METRICS, is_number, recorded_run_name

RUN_FILE = "mlflow_run.json"
TAG_OUT_DIR = "locallearn.out_dir"
TAG_CONFIG_HASH = "config_hash"   # the trainer's tag; matched when a lost run file is recovered
TAG_ERROR = "locallearn.error"
TAG_GIT_REVISION = "git_revision"  # the trainer's tag, logged as MLflow's own (below)
TAG_GIT_COMMIT = "mlflow.source.git.commit"
SOURCE_TAGS = {"mlflow.source.name": "locallearn train", "mlflow.source.type": "LOCAL"}
# metrics.json "environment" keys (environment.describe) logged as env.<key> tags
ENV_KEYS = ("python", "torch", "torchvision", "cuda", "cudnn", "device", "device_name",
            "cpu_model", "threads", "precision")

log = logging.getLogger("locallearn.tracking")

# Per-epoch scalars of a metrics.json history entry, logged under the same names.
# "epoch" is logged too: its latest value is how a reopened run knows where it stopped.
EPOCH_KEYS = ("epoch", "train_error", "test_error", "train_loss", "train_loss_scaled",
              "test_loss", "local_loss", "lr", "epoch_seconds", "images_per_second", "val_error", "val_loss")
# metrics.json keys logged once at the end ("test_error" as final_test_error: its
# per-epoch series already owns every step).
SUMMARY_KEYS = {"test_error": "final_test_error", "train_error": "final_train_error",
                "params_backprop": "params_backprop", "params_total": "params_total",
                "wall_seconds": "wall_seconds", "peak_memory_bytes": "peak_memory_bytes",
                # the three reported errors (runs/selection.py) and the heads' cost (recipe/cost.py)
                "best_test_error": "best_test_error", "best_test_epoch": "best_test_epoch",
                "val_selected_test_error": "val_selected_test_error", "val_selected_epoch": "val_selected_epoch",
                "head_params": "head_params", "head_macs": "head_macs",
                "backbone_params": "backbone_params", "backbone_macs": "backbone_macs"}

MAX_PARAM_LENGTH = 6000   # MLflow 3 rejects longer param values
MAX_TAG_LENGTH = 8000     # ... and longer tag values


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
        tags, params = _without_credentials(tags), _without_credentials(params)
        out_dir = Path(out_dir).resolve()
        client = mlstore.client(uri)
        exp_id = mlstore.experiment_id(client, uri, experiment)
        record = {"config": params, "tags": tags, "run_name": run_name, "environment": environment}
        tags = {**mlflow_tags(record), TAG_OUT_DIR: str(out_dir)}
        params = run_params(params)

        def open_run():
            run = _stored_run(client, out_dir, exp_id) or _tagged_run(client, exp_id, tags)
            if run is None:
                run = client.create_run(exp_id, run_name=run_name, tags=tags)
            _write_run_file(out_dir, uri, exp_id, run.info.run_id)
            return run

        run = mlstore.call(uri, "open the run", open_run)
        run_id = run.info.run_id
        new_params = {k: v for k, v in _param_strings(params).items()
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
            batch = _epoch_metrics(entry, _now_ms())
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


# --- the store ---------------------------------------------------------------------


# --- the run loop's calls ------------------------------------------------------------

def run_tags(cfg) -> dict[str, str]:
    """The tags a run of `cfg` carries (its --tag flags, and what identifies the run)."""
    tags = dict(t.split("=", 1) for t in cfg.tag)
    tags.update(dataset=cfg.dataset, model=cfg.model, seed=str(cfg.seed), config_hash=config_hash(cfg),
                loss="backprop" if cfg.backprop else cfg.loss_sup,
                git_revision=git_revision() or "unknown")
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
    _kept_if_store_fails(tracker.complete)


def mirror_finished(cfg, out_dir: Path) -> None:
    """A run found finished (not trained again): its MLflow run brought up to date."""
    uri = mlstore.resolve_uri(cfg.mlflow_uri)
    if uri is not None:
        _kept_if_store_fails(lambda: mirror(Path(out_dir), uri, cfg.mlflow_experiment))


def _kept_if_store_fails(send) -> None:
    """Send a finished run to MLflow; a store that fails is one warning, never an error."""
    try:
        send()
    except TrackingError as e:
        print(f"locallearn: warning: {e} (metrics.json is kept; rerun the same command to sync MLflow)",
              file=sys.stderr)


# --- finding the folder's run ---------------------------------------------------------

def _stored_run(client, out_dir: Path, exp_id: str):
    """The run named in DIR/mlflow_run.json, if it still exists, is active and belongs to
    this experiment (a new experiment or store gets its own run)."""
    from mlflow.exceptions import MlflowException

    try:
        run_id = json.loads((out_dir / RUN_FILE).read_text())["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if run.info.experiment_id != exp_id or run.info.lifecycle_stage != "active":
        return None
    return run


def _tagged_run(client, exp_id: str, tags: dict[str, str]):
    """The oldest active run tagged with this folder (and config hash): the run file was
    lost, e.g. killed between creating the run and writing the file. The folder is
    compared here, not in the filter, because a path may contain any quote character."""
    filt = f"tags.`{TAG_CONFIG_HASH}` = '{tags[TAG_CONFIG_HASH]}'" if TAG_CONFIG_HASH in tags else ""
    token = None
    while True:
        page = client.search_runs([exp_id], filter_string=filt, max_results=1000,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        for run in page:
            if run.data.tags.get(TAG_OUT_DIR) == tags[TAG_OUT_DIR]:
                return run
        token = page.token
        if not token:
            return None


def _write_run_file(out_dir: Path, uri: str, exp_id: str, run_id: str) -> None:
    """Atomic (write, then rename): a kill leaves the old file or the new one, never half."""
    atomic_write_text(out_dir / RUN_FILE, json.dumps(
        {"run_id": run_id, "experiment_id": exp_id, "tracking_uri": redact_uri(uri)}, indent=1) + "\n")


def _log_run_start(client, run_id: str, run_name: str, tags: dict, params: dict) -> None:
    from mlflow.entities import Param, RunTag

    client.update_run(run_id, status="RUNNING", name=run_name)
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()],
                     tags=[RunTag(k, v[:MAX_TAG_LENGTH]) for k, v in tags.items()])


# --- what a run carries ---------------------------------------------------------------

def run_params(config: dict) -> dict[str, str]:
    """A run's params: its recipe, every flag that decides its numbers (the flags of
    config.NON_RECIPE, where and how a run is watched, are left out)."""
    return _param_strings({k: v for k, v in config.items() if k not in NON_RECIPE})


def mlflow_tags(record: dict) -> dict[str, str]:
    """A run's tags from a metrics.json-shaped record (keys used: tags, run_name,
    git_revision, versions, device, environment, config): the grid's tags, MLflow's own
    (mlflow.runName, mlflow.source.*, mlflow.source.git.commit, mlflow.user) and the
    environment as env.<key>. The "environment" record (environment.describe) wins;
    older metrics.json files fall back on their versions, device and config (threads,
    precision; device only once resolved, never "auto")."""
    config = record.get("config") or {}
    env: dict = {"precision": config.get("precision"), "threads": config.get("threads") or None}
    if config.get("no_cuda"):
        env["device"] = "cpu"
    elif config.get("device") not in (None, "auto", "cuda"):
        env["device"] = config["device"]
    env.update({k: v for k, v in (record.get("versions") or {}).items() if k in ENV_KEYS})
    if record.get("device"):
        env["device"] = record["device"]
    env.update(record.get("environment") or {})

    tags = {str(k): str(v) for k, v in (record.get("tags") or {}).items()}
    commit = tags.pop(TAG_GIT_REVISION, None) or record.get("git_revision")
    if commit and commit != "unknown":
        tags[TAG_GIT_COMMIT] = str(commit)
    if record.get("run_name"):
        tags["mlflow.runName"] = str(record["run_name"])
    tags.update(SOURCE_TAGS)
    if env.get("user"):
        tags["mlflow.user"] = str(env["user"])
    tags.update({f"env.{k}": str(env[k]) for k in ENV_KEYS if env.get(k) not in (None, "")})
    return {k: v[:MAX_TAG_LENGTH] for k, v in tags.items()}


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
    now = _now_ms()
    summary = [_metric(name, metrics[key], now, 0) for key, name in SUMMARY_KEYS.items()
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


# --- mirroring finished run folders -------------------------------------------------

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
    tags = _without_credentials(mlflow_tags(metrics))
    start_ms, end_ms = run_times(metrics, folder / METRICS)
    client = client or mlstore.client(uri)
    exp_id = mlstore.experiment_id(client, uri, experiment)

    def find_or_create():
        run = _stored_run(client, folder, exp_id) or _run_of_hash(client, exp_id, metrics.get("config_hash"))
        if run is None:
            run = client.create_run(exp_id, run_name=run_name, tags={**tags, TAG_OUT_DIR: str(folder)},
                                    start_time=start_ms)
            created = True
        else:
            created = False
        run_file = folder / RUN_FILE
        if not run_file.is_file() or json.loads(run_file.read_text()).get("run_id") != run.info.run_id:
            _write_run_file(folder, uri, exp_id, run.info.run_id)
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
            when = (start_ms + (end_ms - start_ms) * entry["epoch"] // len(history)) if start_ms else _now_ms()
            batch = _epoch_metrics(entry, when)
            mlstore.call(uri, f"log epoch {entry['epoch']}", lambda: client.log_batch(run_id, metrics=batch))
            writes += 1
    curve = folder / CURVE   # drawn by the trainer, or before a sync (report/figures.py)
    artifacts = [folder / METRICS] + ([curve] if curve.is_file() else [])
    writes += _log_finished_run(client, uri, run, metrics, artifacts)
    if run.info.status != "FINISHED":
        mlstore.call(uri, "finish the run", lambda: client.set_terminated(run_id, "FINISHED", end_time=end_ms))
        writes += 1
    return "created" if created else "updated" if writes else "unchanged"


def run_times(metrics: dict, path: Path) -> tuple[int | None, int | None]:
    """(start, end) of a finished run in ms since the epoch: metrics.json's `started_at`
    and `finished_at`; for a metrics.json older than those fields, the end is the time
    of the git commit that added the file and the start `wall_seconds` before it.
    (None, None) where neither is known (MLflow then uses the time of the sync)."""
    end = _iso_ms(metrics.get("finished_at")) or _added_in_git_ms(path)
    if end is None:
        return None, None
    start = _iso_ms(metrics.get("started_at"))
    if start is None and is_number(metrics.get("wall_seconds")):
        start = end - int(round(float(metrics["wall_seconds"]) * 1000))
    return (start if start is not None else end), end


def _iso_ms(text) -> int | None:
    try:
        return int(datetime.fromisoformat(str(text)).timestamp() * 1000) if text else None
    except ValueError:
        return None


def _added_in_git_ms(path: Path) -> int | None:
    """The committer time of the commit that added `path` (the newest such), or None
    outside a git checkout or for a file not committed."""
    try:
        out = subprocess.run(["git", "log", "--diff-filter=A", "--format=%cI", "--", path.name],
                             cwd=path.parent, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split() if out.returncode == 0 else []
    return _iso_ms(lines[0]) if lines else None


def _run_of_hash(client, exp_id: str, chash: str | None):
    """The oldest active run of this config hash (the recipe and seed) in the experiment."""
    if not chash:
        return None
    found = client.search_runs([exp_id], filter_string=f"tags.`{TAG_CONFIG_HASH}` = '{chash}'",
                               max_results=1, order_by=["attributes.start_time ASC"])
    return found[0] if found else None


# --- values ---------------------------------------------------------------------------

def _without_credentials(values: dict) -> dict:
    """Params and tags as they may be stored: any URI among them without user-info."""
    return {k: redact_uri(v) if isinstance(v, str) else v for k, v in values.items()}


def _param_strings(params: dict) -> dict[str, str]:
    """Flags as MLflow params: lists joined with spaces, everything a string, values over
    MLflow's limit cut with a visible marker."""
    out = {}
    for key, value in params.items():
        if isinstance(value, (list, tuple)):
            value = " ".join(map(str, value))
        value = str(value)
        if len(value) > MAX_PARAM_LENGTH:
            value = value[:MAX_PARAM_LENGTH - 14] + "...[truncated]"
        out[str(key)] = value
    return out


def _epoch_metrics(entry: dict, timestamp: int) -> list:
    step = int(entry["epoch"])
    out = [_metric(k, entry[k], timestamp, step) for k in EPOCH_KEYS if is_number(entry.get(k))]
    for layer in entry.get("local") or ():
        k = layer["layer"]
        for src, name in (("loss", f"local_loss_layer{k}"), ("error", f"local_error_layer{k}")):
            if is_number(layer.get(src)):
                out.append(_metric(name, layer[src], timestamp, step))
    return out


def _metric(key: str, value, timestamp: int, step: int):
    from mlflow.entities import Metric

    return Metric(key, float(value), timestamp, step)


def _now_ms() -> int:
    return int(time.time() * 1000)


