"""The MLflow store: reaching it, creating it and its experiments, calling it, where it
keeps artifacts, and how to browse it. What a run carries is track/records.py;
logging it live, track/live.py; mirroring a finished folder, track/mirror.py.

Shaped by how the grid uses a store:
- Many jobs share one store. With SQLite, concurrent writers get "database is locked"
  and concurrent first-time creation corrupts the schema migration: every call is
  retried with backoff (`call`), and the database is created under a file lock.
- A job can be killed at any moment, also while it creates the store. MLflow's schema
  migrations rebuild tables, which SQLite does not roll back when a process dies: a new
  database is therefore built beside its path and renamed into place whole
  (`_create_sqlite_whole`).
- A tracking server can be down. Reaching it fails within seconds with a message
  naming the URI (MLflow's own default retries would take minutes).
- Stores move: a SQLite store keeps its artifacts as `mlflow-artifacts:` URIs, proxied
  by `mlflow ui --artifacts-destination <preset>/mlartifacts` and written here straight
  into that folder, so no absolute path is stored anywhere in the database.

mlflow is imported lazily: with tracking off the trainer never pays for the import.
"""
from __future__ import annotations

import fcntl
import importlib
import logging
import os
import random
import time
import warnings
from contextlib import closing, contextmanager
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

from ..atomic import atomic_write
from ..credentials import redact_uri, take_credentials
from ..errors import TrackingError

PROXY_SCHEME = "mlflow-artifacts"
# MLflow 3's experiment type: "custom_model_development" is "Machine learning" (runs,
# models), as opposed to "genai_development" (traces). The UI reads it only where its
# GenAI / Model training switch is off; MLflow 3.17 has the switch on, and it opens on
# GenAI unless told otherwise (browse_url). The tag still names the experiment's kind.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
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
    return experiment_id(client(uri), uri, name)


def client(uri: str):
    """An MlflowClient for `uri` whose store is known to answer. HTTP: probe the server;
    SQLite: create the database (and its folder) once, under a lock."""
    _quiet_mlflow()
    from mlflow import MlflowClient

    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        _probe_server(uri)
    with _sqlite_init_lock(uri):
        _create_sqlite_whole(uri)
        try:
            client = call(uri, "open the store", lambda: MlflowClient(tracking_uri=uri))
            call(uri, "read the store", lambda: client.search_experiments(max_results=1))
        except TrackingError as e:
            raise _half_migrated(uri, str(e)) or e from None
    return client


def _create_sqlite_whole(uri: str) -> None:
    """Create a missing SQLite store so that it appears whole or not at all: MLflow's
    migrations run on `<db>.creating`, which is renamed onto the database's path once
    they are done. Some 50 migrations build the schema, several by copying a table into
    `_alembic_tmp_<table>` and renaming it back; a process killed mid-way leaves a file
    that no later run can open ("table _alembic_tmp_... already exists"). Called under
    `_sqlite_init_lock`, so a leftover side file is one a killed process left."""
    from mlflow import MlflowClient

    db = sqlite_path(uri)
    if db is None or (db.exists() and db.stat().st_size > 0):
        return
    side = db.with_name(db.name + ".creating")
    for leftover in (side, side.with_name(side.name + "-journal")):
        leftover.unlink(missing_ok=True)
    side_uri = "sqlite:///" + str(side) + (uri[uri.index("?"):] if "?" in uri else "")
    side_client = call(uri, "create the store", lambda: MlflowClient(tracking_uri=side_uri))
    call(uri, "create the store", lambda: side_client.search_experiments(max_results=1))
    os.replace(side, db)


# What MLflow says when it reruns a migration over the half of it that a killed process
# left (a rebuilt table's copy, a column already added).
REMIGRATION_ERRORS = ("table _alembic_tmp_", "duplicate column name")


def _half_migrated(uri: str, error: str) -> TrackingError | None:
    """The one-line error for a SQLite store that a process killed during MLflow's schema
    migration left behind (made before stores were created whole, or by an interrupted
    `mlflow db upgrade`), None for any other store or `error`."""
    import sqlite3

    db = sqlite_path(uri)
    if db is None or not db.is_file():
        return None
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            left = [n for (n,) in con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE '\\_alembic\\_tmp\\_%' ESCAPE '\\'")]
            try:
                runs = f"it holds {con.execute('SELECT count(*) FROM runs').fetchone()[0]} runs"
            except sqlite3.Error:
                runs = "it holds no runs"
    except sqlite3.Error:
        return None
    if not left and not any(sign in error for sign in REMIGRATION_ERRORS):
        return None
    what = f"leftover table {left[0]}" if left else error.split("could not open the store: ")[-1][:120]
    return TrackingError(
        f"MLflow store {redact_uri(uri)}: {db} was left half-migrated by a process killed during "
        f"MLflow's schema migration ({what}; {runs}) and cannot be opened. "
        f"Move it aside and rerun: each run logs itself again from its folder, and `locallearn "
        f"tracking sync RESULTS` brings back finished runs without training them again")


def _quiet_mlflow() -> None:
    """Keep job logs to the trainer's lines: MLflow logs migrations at INFO, and every
    SQLite lock conflict (which call retries) as an ERROR with a traceback."""
    for key, value in _MLFLOW_ENV.items():
        os.environ.setdefault(key, value)
    importlib.import_module("mlflow")   # configures MLflow's loggers from the environment

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


def sqlite_path(uri: str) -> Path | None:
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
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        lock = open(db.with_name(db.name + ".lock"), "a")
    except (OSError, ValueError) as e:   # a folder, not a file (sqlite:////), or not writable
        raise TrackingError(f"MLflow store {redact_uri(uri)}: cannot create its database file {db} "
                            f"({reason(e)})") from None
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
    return f"{PROXY_SCHEME}:/{quote(experiment, safe='')}" if sqlite_path(uri) else None


def artifact_destination(uri: str) -> Path | None:
    """The folder that holds a SQLite store's artifacts (what `mlflow ui
    --artifacts-destination` must be given), else None."""
    db = sqlite_path(uri)
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


def experiment_id(client, uri: str, name: str) -> str:
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
        return call(uri, f"create experiment {name!r}", get_or_create)


def upload(client, uri: str, run, path: Path) -> bool:
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
    stored = call(uri, "list the artifacts", lambda: client.list_artifacts(run_id))
    if any(a.path == path.name and a.file_size == path.stat().st_size for a in stored):
        return False
    call(uri, f"upload {path.name}", lambda: client.log_artifact(run_id, str(path)))
    return True


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


def _transient(exc: Exception) -> bool:
    """Errors that pass if tried again: SQLite lock conflicts (raw, or wrapped by MLflow
    as TEMPORARILY_UNAVAILABLE, which a server also answers with HTTP 503)."""
    return ("database is locked" in str(exc)
            or getattr(exc, "error_code", None) == "TEMPORARILY_UNAVAILABLE")


def call(uri: str, what: str, fn):
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
            raise TrackingError(f"MLflow store {redact_uri(uri)}: could not {what}: {reason(e)}") from e


def reason(exc: BaseException) -> str:
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
