"""MLflow tracking for `locallearn train`: one MLflow run per output folder.

metrics.json is the source of truth; MLflow is its browsable mirror. Everything here is
shaped by three facts of how the grid runs:

- Jobs are killed and rerun. The run id lives in DIR/mlflow_run.json, so a resume or a
  rerun continues the same run; the last epoch already logged is read back from the
  store, so re-sending the whole history never duplicates a step.
- Many jobs share one store. With SQLite, concurrent writers get "database is locked"
  and concurrent first-time creation corrupts the schema migration: writes are retried
  with backoff, and the database is created under a file lock.
- A tracking server can be down. Opening a run fails within seconds with a message
  naming the URI (MLflow's own default retries would take minutes); once training has
  started, an outage only delays logging: the next call catches up from the history.

What a run carries: the recipe as params (config.NON_RECIPE left out), the grid's tags,
MLflow's own tags (run name, source, git commit, user) and the environment as `env.*`
tags, all derived by `mlflow_tags` from what metrics.json holds, so a run logged live and
the same run mirrored by `sync_results` (`locallearn tracking sync`) carry the same.

A run's times are the training's: a live run is created when training starts and ended
when it finishes; a synced run gets metrics.json's `started_at` and `finished_at`. Runs
finished before metrics.json recorded them (the committed Fashion-MNIST row) end at the
commit that added their metrics.json (`git log --diff-filter=A`) and start `wall_seconds`
before it (`run_times`). Experiments are tagged as model training (EXPERIMENT_KIND), not
as GenAI work.

Stores move: a SQLite store keeps its artifacts as `mlflow-artifacts:` URIs, proxied by
`mlflow ui --artifacts-destination <preset>/mlartifacts` and written here straight into
that folder, so no absolute path is stored anywhere in the database.

mlflow is imported lazily: with tracking off the trainer never pays for the import.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import random
import re
import subprocess
import time
import warnings
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

from .atomic import atomic_write, atomic_write_json, atomic_write_text
from .config import NON_RECIPE
from .credentials import redact_uri, take_credentials
from .errors import ConfigError, TrackingError
from .faults import fault
from .runstate import is_number

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
ARTIFACTS = ("metrics.json", "curve.png")   # a run folder's files mirrored as artifacts
PROXY_SCHEME = "mlflow-artifacts"
# MLflow 3's experiment type: "custom_model_development" is "Machine learning" (runs,
# models), as opposed to "genai_development" (traces). The UI reads it only where its
# GenAI / Model training switch is off; MLflow 3.17 has the switch on, and it opens on
# GenAI unless told otherwise (browse_url). The tag still names the experiment's kind.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}

# Per-epoch scalars of a metrics.json history entry, logged under the same names.
# "epoch" is logged too: its latest value is how a reopened run knows where it stopped.
EPOCH_KEYS = ("epoch", "train_error", "test_error", "train_loss", "train_loss_scaled",
              "test_loss", "local_loss", "lr", "epoch_seconds", "images_per_second", "val_error", "val_loss")
# metrics.json keys logged once at the end ("test_error" as final_test_error: its
# per-epoch series already owns every step).
SUMMARY_KEYS = {"test_error": "final_test_error", "train_error": "final_train_error",
                "params_backprop": "params_backprop", "params_total": "params_total",
                "wall_seconds": "wall_seconds", "peak_memory_bytes": "peak_memory_bytes",
                # the three reported errors (selection.py) and the heads' cost (runcost.py)
                "best_test_error": "best_test_error", "best_test_epoch": "best_test_epoch",
                "val_selected_test_error": "val_selected_test_error", "val_selected_epoch": "val_selected_epoch",
                "head_params": "head_params", "head_macs": "head_macs",
                "backbone_params": "backbone_params", "backbone_macs": "backbone_macs"}

MAX_PARAM_LENGTH = 6000   # MLflow 3 rejects longer param values
MAX_TAG_LENGTH = 8000     # ... and longer tag values
PROBE_DEADLINE_S = 15     # how long an unreachable server is tried before giving up
RETRY_DEADLINE_S = 120    # how long a locked SQLite database is waited for

# MLflow's defaults retry an unreachable server for minutes (7 retries, 120 s timeout):
# these bound a call during an outage to ~10 s (refused) or ~90 s (no answer at all).
# A user's own settings win.
_MLFLOW_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_LOGGING_LEVEL": "WARNING",                 # no INFO lines about migrations
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # no "🏃 View run" lines in job logs
    "MLFLOW_DISABLE_TELEMETRY": "true",                # cluster nodes are often offline
}

log = logging.getLogger("locallearn.tracking")


def resolve_uri(flag: str | None) -> str | None:
    """The tracking URI: the flag, else $MLFLOW_TRACKING_URI, else None (tracking off).
    An empty flag turns tracking off even where the variable is set. User-info in the URI
    becomes MLflow's credential variables (credentials.py): what is returned may be
    recorded anywhere."""
    if flag is not None:
        return take_credentials(flag) or None
    return take_credentials(os.environ.get("MLFLOW_TRACKING_URI")) or None


def ensure_experiment(uri: str, name: str) -> str:
    """Create the experiment if it is missing and return its id. Safe to call from many
    processes at once: a lost creation race just reads the winner's experiment."""
    return _experiment_id(_client(uri), uri, name)


def cli_init(argv: list[str]) -> int:
    """`locallearn tracking init`: create the store and the experiment once, before the
    jobs start, so they never race to create either."""
    from .helpformat import HelpFormatter
    p = argparse.ArgumentParser(prog="locallearn tracking init", formatter_class=HelpFormatter,
                                description="Create the MLflow store and experiment once, before "
                                            "parallel jobs start, so they never race to create either.")
    p.add_argument("--uri", default=None, help="tracking URI (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--experiment", default="locallearn", help="experiment name")
    p.add_argument("--record", default=None, metavar="FILE",
                   help="write the (credential-free) URI and experiment to FILE (JSON; the workflow's mark)")
    args = p.parse_args(argv)
    uri = take_credentials(resolve_uri(args.uri))
    if uri is None:
        raise ConfigError("--uri: no tracking URI given and MLFLOW_TRACKING_URI is not set")
    exp_id = ensure_experiment(uri, args.experiment)
    print(f"MLflow experiment {args.experiment!r} (id {exp_id}) ready at {uri}")
    if args.record:
        atomic_write_json(args.record, {"uri": uri, "experiment": args.experiment, "experiment_id": exp_id})
    return 0


class RunTracker:
    """The MLflow run of one output folder. Opened with uri None it does nothing, so the
    trainer calls it unconditionally."""

    def __init__(self, client=None, uri: str | None = None, run_id: str | None = None,
                 last_epoch: int = 0, monitor=None):
        self._client = client
        self._uri = uri
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
        client = _client(uri)
        exp_id = _experiment_id(client, uri, experiment)
        record = {"config": params, "tags": tags, "run_name": run_name, "environment": environment}
        tags = {**mlflow_tags(record), TAG_OUT_DIR: str(out_dir)}
        params = run_params(params)

        def open_run():
            run = _stored_run(client, out_dir, exp_id) or _tagged_run(client, exp_id, tags)
            if run is None:
                run = client.create_run(exp_id, run_name=run_name, tags=tags)
            _write_run_file(out_dir, uri, exp_id, run.info.run_id)
            return run

        run = _call(uri, "open the run", open_run)
        run_id = run.info.run_id
        new_params = {k: v for k, v in _param_strings(params).items()
                      if k not in run.data.params}  # a rerun's extra flags may differ: keep the first
        _call(uri, "start the run", lambda: _log_run_start(client, run_id, run_name, tags, new_params))
        monitor = _start_system_metrics(uri, run_id) if _system_metrics_on(system_metrics) else None
        return cls(client, uri, run_id, int(run.data.metrics.get("epoch", 0)), monitor)

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

    def finish(self, status: str, metrics: dict | None = None, artifacts: list[Path] = ()) -> None:
        """End the run. FINISHED: send any missing epochs, the summary metrics and the
        artifacts, then the status; raises TrackingError if the store cannot take them
        (rerunning the same command finishes the job). FAILED: status and the error tag,
        never raising, so the trainer's own error is the one the user sees."""
        if self._client is None:
            return
        if self._monitor is not None:   # its last samples are flushed while the run is open
            self._monitor.finish()
            self._monitor = None
        metrics = metrics or {}
        if status == "FAILED":
            try:
                self._fail(metrics.get("error"))
            except TrackingError as e:
                log.warning("locallearn: warning: could not mark the MLflow run FAILED: %s", e)
            return
        if status != "FINISHED":
            raise ValueError(f"status must be FINISHED or FAILED, got {status!r}")
        if "history" in metrics:
            self._sync(metrics["history"])
        client, run_id = self._client, self._run_id
        run = _call(self._uri, "read the run", lambda: client.get_run(run_id))
        _log_finished_run(client, self._uri, run, metrics, artifacts)
        _call(self._uri, "finish the run", lambda: client.set_terminated(run_id, "FINISHED"))

    def _sync(self, history: list[dict]) -> None:
        client, run_id = self._client, self._run_id
        if self._last_epoch is None:
            run = _call(self._uri, "read the run", lambda: client.get_run(run_id))
            self._last_epoch = int(run.data.metrics.get("epoch", 0))
        for entry in sorted(history, key=lambda h: h["epoch"]):
            if entry["epoch"] <= self._last_epoch:
                continue
            batch = _epoch_metrics(entry, _now_ms())
            fault("kill-mlflow-epoch", entry["epoch"])
            try:
                # the same Metric objects on every retry: a write that landed but was
                # reported failed is deduplicated by the store, not doubled
                _call(self._uri, f"log epoch {entry['epoch']}",
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
            _call(self._uri, "tag the error", lambda: client.set_tag(run_id, TAG_ERROR, reason))
        _call(self._uri, "mark the run FAILED", lambda: client.set_terminated(run_id, "FAILED"))


# --- the store ---------------------------------------------------------------------

def _client(uri: str):
    """An MlflowClient for `uri` whose store is known to answer. HTTP: probe the server;
    SQLite: create the database (and its folder) once, under a lock."""
    _quiet_mlflow()
    from mlflow import MlflowClient

    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        _probe_server(uri)
    with _sqlite_init_lock(uri):
        # the client builds its store at once: for a new SQLite file, the migrations
        client = _call(uri, "open the store", lambda: MlflowClient(tracking_uri=uri))
        _call(uri, "read the store", lambda: client.search_experiments(max_results=1))
    return client


def _quiet_mlflow() -> None:
    """Keep job logs to the trainer's lines: MLflow logs migrations at INFO, and every
    SQLite lock conflict (which _call retries) as an ERROR with a traceback."""
    for key, value in _MLFLOW_ENV.items():
        os.environ.setdefault(key, value)
    import mlflow  # noqa: F401  (configures MLflow's loggers from the environment)

    # again, for a process that imported mlflow before us
    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def _probe_server(uri: str) -> None:
    """Fail within PROBE_DEADLINE_S when nothing answers at `uri`. Any HTTP answer counts
    as reachable; what it means is left to the MLflow call that follows."""
    import requests

    url = uri.rstrip("/") + "/health"
    start = time.monotonic()
    deadline = start + PROBE_DEADLINE_S
    delay = 1.0
    while True:
        try:
            requests.get(url, timeout=(3, 5))
            return
        except requests.RequestException as e:
            reason = type(e).__name__
        if time.monotonic() + delay >= deadline:
            raise TrackingError(
                f"MLflow tracking server {redact_uri(uri)} is not reachable ({reason}, tried for "
                f"{time.monotonic() - start:.0f} s): "
                "start it (mlflow server ...), fix --mlflow-uri / MLFLOW_TRACKING_URI, "
                "or run without tracking (--mlflow-uri '')")
        time.sleep(delay)
        delay *= 2


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (None for other stores and in-memory)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path).resolve() if path and path != ":memory:" else None


@contextmanager
def _sqlite_init_lock(uri: str):
    """Serialise store initialisation between processes. Two processes creating the same
    SQLite file run the schema migrations at once and break them ("duplicate column",
    alembic version mismatches), which no retry repairs."""
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        lock = open(db.with_name(db.name + ".lock"), "a")
    except (OSError, ValueError) as e:   # a folder, not a file (sqlite:////), or not writable
        raise TrackingError(f"MLflow store {redact_uri(uri)}: cannot create its database file {db} "
                            f"({_reason(e)})") from None
    with lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")   # alembic warns about unnamed constraints while migrating
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps artifacts. SQLite: `mlflow-artifacts:/<experiment>`,
    a location relative to the folder `mlartifacts` beside the database (MLflow's default
    would be an absolute file:// path into ./mlruns of whatever the CWD is): the store
    keeps working when the folder moves, served by `mlflow ui --artifacts-destination`.
    Servers and other databases: their own default (the server's artifact root)."""
    return f"{PROXY_SCHEME}:/{quote(experiment, safe='')}" if _sqlite_path(uri) else None


def artifact_destination(uri: str) -> Path | None:
    """The folder that holds a SQLite store's artifacts (what `mlflow ui
    --artifacts-destination` must be given), else None."""
    db = _sqlite_path(uri)
    return db.parent / "mlartifacts" if db else None


def local_artifact_dir(uri: str, artifact_uri: str) -> Path | None:
    """The folder of a run's artifacts when this process can write it directly: a
    file:// location (stores made before locations were proxied), or a proxied one of a
    SQLite store (no server translates it here). None: go through the store's API."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    dest = artifact_destination(uri)
    if parsed.scheme == PROXY_SCHEME and dest is not None:
        return dest / unquote(parsed.path).lstrip("/")
    return None


def _experiment_id(client, uri: str, name: str) -> str:
    from mlflow.exceptions import MlflowException

    def get_or_create():
        exp = client.get_experiment_by_name(name)
        if exp is None:
            try:
                return client.create_experiment(name, artifact_location=_artifact_location(uri, name),
                                                tags=EXPERIMENT_KIND)
            except MlflowException as e:
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp = client.get_experiment_by_name(name)   # another process won the race
        if exp.lifecycle_stage == "deleted":
            raise TrackingError(
                f"MLflow experiment {name!r} in {redact_uri(uri)} is deleted: restore it "
                f"(mlflow experiments restore --experiment-id {exp.experiment_id}) "
                "or choose another --mlflow-experiment")
        for key, value in EXPERIMENT_KIND.items():   # made before the tag existed; a kind set by hand stays
            if key not in exp.tags:
                client.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id

    with _sqlite_init_lock(uri):
        return _call(uri, f"create experiment {name!r}", get_or_create)


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
            _call(uri, "tag the run", lambda: client.log_batch(
                run_id, tags=[RunTag(k, v) for k, v in tags.items()]))
            writes += len(tags)
    now = _now_ms()
    summary = [_metric(name, metrics[key], now, 0) for key, name in SUMMARY_KEYS.items()
               if is_number(metrics.get(key)) and run.data.metrics.get(name) != float(metrics[key])]
    if summary:
        _call(uri, "log the summary", lambda: client.log_batch(run_id, metrics=summary))
        writes += len(summary)
    for path in map(Path, artifacts):
        if not path.is_file():
            log.warning("locallearn: warning: artifact %s does not exist; not uploaded", path)
        elif _upload(client, uri, run, path):
            writes += 1
    return writes


def _upload(client, uri: str, run, path: Path) -> bool:
    """Put `path` among the run's artifacts unless the same file is there. True if written."""
    local = local_artifact_dir(uri, run.info.artifact_uri)
    if local is not None:
        dest = local / path.name
        if dest.is_file() and dest.read_bytes() == path.read_bytes():
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = path.read_bytes()
        atomic_write(dest, lambda tmp: Path(tmp).write_bytes(data))
        return True
    run_id = run.info.run_id
    stored = _call(uri, "list the artifacts", lambda: client.list_artifacts(run_id))
    if any(a.path == path.name and a.file_size == path.stat().st_size for a in stored):
        return False
    _call(uri, f"upload {path.name}", lambda: client.log_artifact(run_id, str(path)))
    return True


def _system_metrics_on(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING
    return bool(MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get())


def _start_system_metrics(uri: str, run_id: str):
    """MLflow's psutil sampler (and its GPU one where NVML answers) on a thread, logging
    `system/*` metrics every $MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL s (default 10), one
    step per sample, continuing a resumed run's steps. A sampler that cannot start only warns."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        monitor = SystemMetricsMonitor(run_id, resume_logging=True, tracking_uri=uri)
        monitor.start()
        return monitor
    except Exception as e:  # noqa: BLE001 - watching the machine must never stop training
        log.warning("locallearn: warning: MLflow system metrics are off: %s", _reason(e))
        return None


# --- mirroring finished run folders -------------------------------------------------

def sync_results(preset_dir: str | Path, uri: str, experiment: str) -> dict[str, str]:
    """Mirror every finished run folder (<preset_dir>/runs/<cell>/seed<k>/metrics.json)
    into `experiment` of the store at `uri`: one run per folder, found again by the
    folder's mlflow_run.json or its config hash (a run logged live is continued, never
    doubled), with the whole per-epoch history, params, tags, and metrics.json and the
    learning curve as artifacts. Idempotent: a second call writes nothing.
    Returns {run folder: "created" | "updated" | "unchanged"}."""
    uri = take_credentials(uri)
    runs_dir = Path(preset_dir) / "runs"
    folders = sorted(p.parent for p in runs_dir.glob("*/seed*/metrics.json")
                     if re.fullmatch(r"seed\d+", p.parent.name))
    if not folders:
        return {}
    client = _client(uri)
    exp_id = _experiment_id(client, uri, experiment)
    return {str(d): _sync_folder(client, uri, exp_id, d) for d in folders}


def _sync_folder(client, uri: str, exp_id: str, folder: Path) -> str:
    folder = folder.resolve()
    metrics = json.loads((folder / "metrics.json").read_text())
    run_name = metrics.get("run_name") or f"{folder.parent.name}-s{metrics.get('seed', folder.name)}"
    metrics = {**metrics, "run_name": run_name}
    tags = _without_credentials(mlflow_tags(metrics))

    start_ms, end_ms = run_times(metrics, folder / "metrics.json")

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

    run, created = _call(uri, f"find the run of {folder}", find_or_create)
    run_id = run.info.run_id
    writes = 0
    params = {k: v for k, v in run_params(metrics.get("config") or {}).items() if k not in run.data.params}
    if params:
        from mlflow.entities import Param
        _call(uri, "log the params", lambda: client.log_batch(
            run_id, params=[Param(k, v) for k, v in params.items()]))
        writes += len(params)
    last = int(run.data.metrics.get("epoch", 0))
    history = sorted(metrics.get("history") or [], key=lambda h: h["epoch"])
    for entry in history:
        if entry["epoch"] > last:
            # stamped across the training's span, so MLflow's relative-time axis is the training's
            when = (start_ms + (end_ms - start_ms) * entry["epoch"] // len(history)) if start_ms else _now_ms()
            batch = _epoch_metrics(entry, when)
            _call(uri, f"log epoch {entry['epoch']}", lambda: client.log_batch(run_id, metrics=batch))
            writes += 1
    curve = folder / "curve.png"
    if not curve.is_file():   # not committed: drawn as the trainer draws it
        from .figures import plot_curves
        plot_curves({f"seed {metrics.get('seed', '?')}": metrics.get("history") or []}, curve, title=run_name)
    writes += _log_finished_run(client, uri, run, metrics, [folder / a for a in ARTIFACTS])
    if run.info.status != "FINISHED":
        _call(uri, "finish the run", lambda: client.set_terminated(run_id, "FINISHED", end_time=end_ms))
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


def browse_hint(uri: str, experiment: str) -> str:
    """How to look at the store: the `mlflow ui` command (for a SQLite store) and the URL
    of the experiment's runs table."""
    exp_id = ensure_experiment(uri, experiment)
    dest = artifact_destination(uri)
    if dest is None:   # a server: its own address
        return f"browse: {browse_url(redact_uri(uri), exp_id)}"
    return (f"browse: mlflow ui --backend-store-uri {uri} --artifacts-destination {dest}\n"
            f"        then open {browse_url('http://127.0.0.1:5000', exp_id)}")


def browse_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table in the MLflow UI at `base`. MLflow 3.17 opens an
    experiment on its GenAI overview unless the UI's GenAI / Model training switch (kept
    in the browser) says otherwise; `workflowType=machine_learning` sets it."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def _run_of_hash(client, exp_id: str, chash: str | None):
    """The oldest active run of this config hash (the recipe and seed) in the experiment."""
    if not chash:
        return None
    found = client.search_runs([exp_id], filter_string=f"tags.`{TAG_CONFIG_HASH}` = '{chash}'",
                               max_results=1, order_by=["attributes.start_time ASC"])
    return found[0] if found else None


def cli_sync(argv: list[str]) -> int:
    """`locallearn tracking sync RESULTS`: mirror a preset's finished runs into MLflow."""
    from .helpformat import HelpFormatter
    p = argparse.ArgumentParser(prog="locallearn tracking sync", formatter_class=HelpFormatter,
                                description="Mirror every finished run folder of a preset (runs/*/seed*/"
                                            "metrics.json) into its MLflow store: one run per cell x seed, "
                                            "a run logged live continued, nothing written twice.")
    p.add_argument("results", help="a preset's results folder (holds runs/), e.g. results/full")
    p.add_argument("--uri", default=None, help="tracking URI (default: sqlite:///RESULTS/mlflow.db)")
    p.add_argument("--experiment", default="locallearn", help="experiment name")
    args = p.parse_args(argv)
    results = Path(args.results)
    if not (results / "runs").is_dir():
        raise ConfigError(f"{results}: no runs/ folder (expected a preset's results folder, e.g. results/full)")
    uri = take_credentials(args.uri) or "sqlite:///" + str((results / "mlflow.db").resolve())
    done = sync_results(results, uri, args.experiment)
    counts = {a: sum(v == a for v in done.values()) for a in ("created", "updated", "unchanged")}
    print(f"MLflow experiment {args.experiment!r} at {uri}: {len(done)} finished runs "
          f"({', '.join(f'{n} {a}' for a, n in counts.items())})")
    print(browse_hint(uri, args.experiment))
    return 0


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


def _transient(exc: Exception) -> bool:
    """Errors that pass if tried again: SQLite lock conflicts (raw, or wrapped by MLflow
    as TEMPORARILY_UNAVAILABLE, which a server also answers with HTTP 503)."""
    return ("database is locked" in str(exc)
            or getattr(exc, "error_code", None) == "TEMPORARILY_UNAVAILABLE")


def _call(uri: str, what: str, fn):
    """Run one store operation: transient errors are retried with jittered exponential
    backoff for up to RETRY_DEADLINE_S; anything else becomes a TrackingError naming the
    store and the operation."""
    deadline = time.monotonic() + RETRY_DEADLINE_S
    delay = 0.05
    while True:
        try:
            return fn()
        except TrackingError:
            raise
        except Exception as e:  # noqa: BLE001 - any store failure is reported the same way
            if _transient(e) and time.monotonic() + delay < deadline:
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 2.0)
                continue
            raise TrackingError(f"MLflow store {redact_uri(uri)}: could not {what}: {_reason(e)}") from e


def _reason(exc: BaseException) -> str:
    """One line: the error, cut short, and its root cause, which MLflow's long
    messages bury at the end (e.g. "ConnectionRefusedError: Connection refused")."""
    def short(e: BaseException, n: int) -> str:
        text = " ".join(str(e).split()) or type(e).__name__
        return text if len(text) <= n else text[:n - 3] + "..."

    root = exc
    while (root.__cause__ or root.__context__) is not None:
        root = root.__cause__ or root.__context__
    if root is exc:
        return short(exc, 300)
    return f"{short(exc, 160)} (cause: {type(root).__name__}: {short(root, 120)})"
