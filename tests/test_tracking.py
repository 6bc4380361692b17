"""locallearn.track (live logging, the mirror, what a run carries) against real MLflow stores: a SQLite file and a `mlflow server`.

No torch (but for environment.describe): histories are synthetic, shaped like
metrics.json's, except where the committed runs (results/full/runs) are mirrored."""
import json
import multiprocessing
import shutil
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import REPO, free_port
from locallearn.track import live, mirror, records
from locallearn.errors import ConfigError, TrackingError
from locallearn.track import mlstore
from locallearn.cli.tracking import tracking_init as cli_init
from locallearn.track.mlstore import ensure_experiment, resolve_uri
from locallearn.track.live import RunTracker
from locallearn.report.figures import draw_missing_curves

EXPERIMENT = "test-exp"
# every per-epoch key of a synthetic history, as logged (layer 1 has no error: skipped)
EPOCH_METRICS = ["epoch", "train_error", "test_error", "train_loss", "train_loss_scaled",
                 "test_loss", "local_loss", "lr", "epoch_seconds", "images_per_second",
                 "local_loss_layer0", "local_error_layer0", "local_loss_layer1"]


def make_history(epochs: int, seed: int = 0) -> list[dict]:
    return [{"epoch": e, "lr": 5e-4 * 0.25 ** (e // 10),
             "train_error": 50.0 / e + seed, "test_error": 60.0 / e + seed,
             "train_loss": 1.0 / e, "train_loss_scaled": 0.99 / e, "test_loss": 1.1 / e,
             "local_loss": 2.0 / e,
             "local": [{"layer": 0, "loss": 1.0 / e, "error": 40.0 / e},
                       {"layer": 1, "loss": 1.0 / e, "error": None}],
             "epoch_seconds": 0.5, "images_per_second": 1000.0 + e}
            for e in range(1, epochs + 1)]


def metrics_doc(history: list[dict]) -> dict:
    return {"test_error": history[-1]["test_error"], "train_error": history[-1]["train_error"],
            "epochs": len(history), "history": history, "params_backprop": 1234,
            "params_total": 2345, "wall_seconds": 12.5}


def write_metrics(out_dir: Path, doc: dict) -> None:
    """A finished run folder's metrics.json, as the trainer writes it before it completes the run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(doc))


def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"


def open_tracker(out_dir: Path, uri: str, name: str = "cell-a", config_hash: str = "ab12cd34ef56"):
    return RunTracker.open(out_dir, uri, EXPERIMENT, name,
                           {"cell": name, "seed": "1", "config_hash": config_hash},
                           {"lr": 5e-4, "lr_decay_milestones": [50, 100, 150], "backprop": False,
                            "long": "x" * 7000})


def train(out_dir: Path, uri: str, history: list[dict], name: str = "cell-a") -> str:
    """What the trainer does: open, log after every epoch, write metrics.json, finish."""
    tracker = open_tracker(out_dir, uri, name)
    for e in range(1, len(history) + 1):
        tracker.log_history(history[:e])
    doc = metrics_doc(history)
    (out_dir / "metrics.json").write_text(json.dumps(doc))
    (out_dir / "curve.png").write_bytes(b"\x89PNG fake")
    tracker.complete()
    return tracker.run_id


def assert_steps(client: MlflowClient, run_id: str, epochs: int) -> None:
    for key in EPOCH_METRICS:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == list(range(1, epochs + 1)), (key, steps)


def runs(uri: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([exp.experiment_id])


def test_resolve_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_uri(None) is None
    assert resolve_uri("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://h:5000")
    assert resolve_uri(None) == "http://h:5000"
    assert resolve_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert resolve_uri("") is None   # explicit off beats the environment


def test_open_log_finish(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # nothing may land in the CWD (MLflow's default ./mlruns)
    uri = sqlite_uri(tmp_path)
    out = tmp_path / "runs" / "a"
    history = make_history(5)
    run_id = train(out, uri, history)

    df = runs(uri)
    assert len(df) == 1
    run = df[0]
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.info.run_name == "cell-a"
    assert run.data.metrics["test_error"] == history[-1]["test_error"]
    assert run.data.metrics["final_test_error"] == history[-1]["test_error"]
    assert run.data.metrics["params_backprop"] == 1234
    assert run.data.params["lr_decay_milestones"] == "50 100 150"
    assert run.data.params["backprop"] == "False"
    assert len(run.data.params["long"]) == records.MAX_PARAM_LENGTH
    assert run.data.tags["cell"] == "cell-a"
    assert run.data.tags[records.TAG_OUT_DIR] == str(out.resolve())
    client = MlflowClient(uri)
    assert_steps(client, run_id, 5)
    # artifacts: proxied (no absolute path in the database), kept beside it
    assert run.info.artifact_uri == f"mlflow-artifacts:/{EXPERIMENT}/{run_id}/artifacts"
    stored = tmp_path / "results" / "mlartifacts" / EXPERIMENT / run_id / "artifacts"
    assert sorted(p.name for p in stored.iterdir()) == ["curve.png", "metrics.json"]
    assert (stored / "metrics.json").read_bytes() == (out / "metrics.json").read_bytes()
    assert json.loads((out / "mlflow_run.json").read_text())["run_id"] == run_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "runs"]


def test_resume_continues_the_run(tmp_path):
    uri = sqlite_uri(tmp_path)
    out = tmp_path / "run"
    history = make_history(8)
    first = open_tracker(out, uri)
    for e in range(1, 4):
        first.log_history(history[:e])
    # killed here; the rerun re-sends its whole history after every epoch
    second = open_tracker(out, uri)
    assert second.run_id == first.run_id
    assert MlflowClient(uri).get_run(first.run_id).info.status == "RUNNING"
    run_id = train(out, uri, history)
    assert run_id == first.run_id
    # and a rerun of the finished job adds nothing
    assert train(out, uri, history) == run_id

    client = MlflowClient(uri)
    assert len(runs(uri)) == 1
    assert client.get_run(run_id).info.status == "FINISHED"
    assert_steps(client, run_id, 8)
    assert len(client.get_metric_history(run_id, "final_test_error")) == 1


def test_lost_run_file_is_found_by_tag(tmp_path):
    uri = sqlite_uri(tmp_path)
    out = tmp_path / "run"
    history = make_history(4)
    tracker = open_tracker(out, uri)
    tracker.log_history(history[:2])
    (out / "mlflow_run.json").unlink()
    other = open_tracker(tmp_path / "other", uri, name="cell-b")   # another folder: its own run
    assert other.run_id != tracker.run_id
    assert train(out, uri, history) == tracker.run_id
    assert len(runs(uri)) == 2
    assert_steps(MlflowClient(uri), tracker.run_id, 4)


def test_failed_run_is_marked(tmp_path):
    uri = sqlite_uri(tmp_path)
    tracker = open_tracker(tmp_path / "run", uri)
    tracker.log_history(make_history(2))
    tracker.fail("loss is NaN at epoch 3 (run)\nsecond line")
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[records.TAG_ERROR] == "loss is NaN at epoch 3 (run)"


def broken_store(*args, **kwargs):
    raise RuntimeError("disk I/O error")


def test_store_outage_mid_run_only_delays_logging(tmp_path, caplog):
    uri = sqlite_uri(tmp_path)
    history = make_history(6)
    tracker = open_tracker(tmp_path / "run", uri)
    tracker.log_history(history[:2])
    client = tracker._client
    real_log_batch = client.log_batch

    def landed_but_reported_lost(*args, **kwargs):   # worst case: the write did happen
        real_log_batch(*args, **kwargs)
        raise ConnectionError("server went away")

    client.log_batch = landed_but_reported_lost
    tracker.log_history(history[:3])                  # warns, does not raise
    tracker.log_history(history[:4])
    assert sum("training goes on" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(TrackingError, match="server went away"):
        write_metrics(tmp_path / "run", metrics_doc(history[:4]))
        tracker.complete()
    client.log_batch = real_log_batch
    tracker.log_history(history)                      # back: catches up, nothing doubled
    assert_steps(MlflowClient(uri), tracker.run_id, 6)

    client.set_terminated = broken_store
    tracker.fail("boom")       # the trainer's error stays the one shown


def test_locked_database_is_retried(monkeypatch):
    monkeypatch.setattr(mlstore.time, "sleep", lambda s: None)
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert mlstore.call("sqlite:///x.db", "log", flaky) == "ok" and len(attempts) == 3
    with pytest.raises(TrackingError, match=r"sqlite:///x.db: could not log: disk I/O error"):
        mlstore.call("sqlite:///x.db", "log", broken_store)


def test_tracking_off_is_a_no_op(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = RunTracker.open(tmp_path / "run", None, EXPERIMENT, "x", {}, {"lr": 1})
    tracker.log_history(make_history(3))
    tracker.complete()
    tracker.fail("boom")
    assert tracker.run_id is None
    assert list(tmp_path.iterdir()) == []


def test_cli_init(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = sqlite_uri(tmp_path)
    assert cli_init(["--uri", uri, "--experiment", EXPERIMENT]) == 0
    exp_id = ensure_experiment(uri, EXPERIMENT)
    assert f"(id {exp_id})" in capsys.readouterr().out
    assert ensure_experiment(uri, EXPERIMENT) == exp_id
    with pytest.raises(ConfigError, match="--uri"):
        cli_init(["--experiment", EXPERIMENT])


@pytest.mark.slow
def test_unreachable_server_fails_fast(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(TrackingError) as err:
        open_tracker(tmp_path / "run", uri)
    assert time.monotonic() - start < 30
    assert uri in str(err.value) and "mlflow server" in str(err.value)
    assert not (tmp_path / "run").exists()


# --- concurrency: separate processes, like Snakemake jobs ---------------------------------

def _job(args) -> str:
    out, uri, name, epochs = args
    return train(Path(out), uri, make_history(epochs, seed=int(name[-1])), name)


def run_jobs(uri: str, tmp_path: Path, n: int, epochs: int) -> None:
    """n processes train at once against a store nobody initialised beforehand. Each is
    forked from a clean server process that has only imported mlflow: as independent as
    spawned ones (own client, engine and connections), without paying the ~1.5 CPU-s
    import n times on a 2-core CI machine."""
    jobs = [(str(tmp_path / f"run{i}"), uri, f"cell-{i}", epochs) for i in range(n)]
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["mlflow", "locallearn.track.live"])
    with ctx.Pool(n) as pool:
        run_ids = pool.map(_job, jobs)
    assert len(set(run_ids)) == n
    found = runs(uri)
    assert sorted(r.info.run_id for r in found) == sorted(run_ids)
    client = MlflowClient(uri)
    for run in found:
        assert run.info.status == "FINISHED"
        assert_steps(client, run.info.run_id, epochs)


@pytest.mark.slow
def test_concurrent_sqlite(tmp_path):
    run_jobs(sqlite_uri(tmp_path), tmp_path, n=8, epochs=20)


# A process killed in the middle of MLflow's schema migration: SIGKILL right after the
# first `CREATE TABLE _alembic_tmp_<table>` (a table rebuild), which SQLite keeps.
KILLED_MID_MIGRATION = """
import os, signal, sys
from sqlalchemy import event
from sqlalchemy.engine import Engine

@event.listens_for(Engine, "after_cursor_execute")
def die(conn, cursor, statement, *args):
    if statement.lstrip().upper().startswith("CREATE TABLE _ALEMBIC_TMP_"):
        os.kill(os.getpid(), signal.SIGKILL)

uri = sys.argv[2]
if sys.argv[1] == "locallearn":
    from locallearn.track import mlstore
    mlstore.client(uri)
else:
    from mlflow import MlflowClient
    MlflowClient(tracking_uri=uri).search_experiments()
"""


def killed_mid_migration(how: str, uri: str) -> None:
    r = subprocess.run([sys.executable, "-c", KILLED_MID_MIGRATION, how, uri], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, (r.returncode, r.stderr[-2000:])


@pytest.mark.slow
def test_a_store_killed_while_being_created_is_created_again(tmp_path):
    """The store appears whole or not at all: a kill mid-migration leaves no database
    (only the side file), and the next run creates it and logs."""
    uri = sqlite_uri(tmp_path)
    db = mlstore.sqlite_path(uri)
    killed_mid_migration("locallearn", uri)
    assert not db.exists() and db.with_name(db.name + ".creating").exists()
    run_id = train(tmp_path / "run", uri, make_history(3), "cell-0")
    assert [r.info.run_id for r in runs(uri)] == [run_id]
    assert not db.with_name(db.name + ".creating").exists()


def test_a_store_broken_by_a_killed_migration_gets_one_clear_line(tmp_path):
    """A store that MLflow itself left half-migrated (before stores were created whole):
    one line naming the file, the leftover table and the way out, before any training."""
    uri = sqlite_uri(tmp_path)
    killed_mid_migration("mlflow", uri)
    with pytest.raises(TrackingError) as e:
        mlstore.client(uri)
    msg = str(e.value)
    assert "\n" not in msg and "half-migrated" in msg and "leftover table _alembic_tmp_" in msg, msg
    assert str(mlstore.sqlite_path(uri)) in msg and "Move it aside" in msg, msg


@contextmanager
def mlflow_ui(tmp_path: Path, backend: str, artifacts: Path):
    """`mlflow ui` (what the README tells users to browse a store with) on `backend`,
    serving `artifacts`, on a free port."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", backend,
         "--serve-artifacts", "--artifacts-destination", str(artifacts)],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    try:
        import requests
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{uri}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow ui did not start:\n{(tmp_path / 'server.log').read_text()}")
            time.sleep(0.3)
        yield uri
    finally:
        os.killpg(proc.pid, 15)   # the server's own process group: it and its workers
        proc.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_concurrent_server(mlflow_server, tmp_path):
    """Four jobs at once against the session's server (their experiment new to it)."""
    uri = mlflow_server
    run_jobs(uri, tmp_path, n=4, epochs=10)
    run_id = runs(uri)[0].info.run_id
    assert {a.path for a in MlflowClient(uri).list_artifacts(run_id)} == {"metrics.json", "curve.png"}
    served = (mlflow_server.folder / "artifacts").rglob("metrics.json")   # uploaded to the server's folder
    assert [p for p in served if run_id in p.parts]


# --------------------------------------------------------------------------- what a run carries

def test_params_are_the_recipe_and_tags_explain_the_run(tmp_path):
    """Params: the recipe only (no output folder, URI, debug or progress flags). Tags:
    MLflow's own (git commit, run name, source, user) and the environment, from the
    record environment.describe makes; the device resolved, never "auto"."""
    from locallearn.host.environment import describe
    uri = sqlite_uri(tmp_path)
    env = describe("cpu", threads=2, precision="fp32")
    config = {"lr": 5e-4, "seed": 1, "device": "auto", "threads": 2, "precision": "fp32",
              "out": str(tmp_path / "run"), "mlflow_uri": uri, "debug": False, "progress_bar": False,
              "run_name": "cell-a", "tag": ["cell=cell-a"], "data_dir": "data"}
    tags = {"cell": "cell-a", "config_hash": "ab12", "git_revision": "0123abcd" * 5}
    tracker = RunTracker.open(tmp_path / "run", uri, EXPERIMENT, "cell-a", tags, config, environment=env)
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.data.params == {"lr": "0.0005", "seed": "1", "precision": "fp32"}
    t = run.data.tags
    assert t["mlflow.source.git.commit"] == "0123abcd" * 5 and "git_revision" not in t
    assert t["mlflow.runName"] == "cell-a" and t["mlflow.source.name"] == "locallearn train"
    assert t["mlflow.source.type"] == "LOCAL" and t["mlflow.user"] == env["user"]
    assert t["env.device"] == "cpu" and t["env.threads"] == "2" and t["env.precision"] == "fp32"
    assert t["env.cpu_model"] == env["cpu_model"] == t["env.device_name"] and t["env.cpu_model"]
    assert t["env.torch"] == env["torch"] and t["env.python"] == env["python"] and t["env.cuda"]
    # finishing with metrics.json (device resolved there) gives the same tags
    doc = {**metrics_doc(make_history(2)), "config": config, "tags": tags, "run_name": "cell-a",
           "device": "cpu", "environment": env}
    write_metrics(tmp_path / "run", doc)
    tracker.complete()
    again = MlflowClient(uri).get_run(tracker.run_id).data.tags
    assert {k: v for k, v in again.items() if k != records.TAG_OUT_DIR} == \
        {k: v for k, v in t.items() if k != records.TAG_OUT_DIR}


def test_tags_of_a_metrics_json_without_environment():
    """Runs written before metrics.json held "environment": versions, the resolved device
    and the config's threads and precision; "auto" is never a device."""
    doc = {"config": {"device": "auto", "threads": 2, "precision": "fp32"},
           "versions": {"python": "3.11.7", "torch": "2.14.1", "locallearn": "0.1.0"},
           "git_revision": "abc", "run_name": "r", "tags": {"cell": "c", "git_revision": "abc"}}
    tags = records.mlflow_tags(doc)
    assert "env.device" not in tags and tags["env.threads"] == "2" and tags["env.torch"] == "2.14.1"
    assert tags["mlflow.source.git.commit"] == "abc" and tags["cell"] == "c"
    assert records.mlflow_tags({**doc, "device": "cuda:0"})["env.device"] == "cuda:0"


@pytest.mark.slow
def test_system_metrics_when_switched_on(tmp_path, monkeypatch, caplog):
    """MLflow's psutil sampler logs system/* metrics while the run is open (CPU here; the
    run says it is on CUDA without nvidia-ml-py, and gets the one line that says so)."""
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    uri = sqlite_uri(tmp_path)
    off = RunTracker.open(tmp_path / "off", uri, EXPERIMENT, "off", {"config_hash": "a"}, {})
    monkeypatch.setitem(sys.modules, "pynvml", None)   # nvidia-ml-py absent: a CUDA run says so
    on = RunTracker.open(tmp_path / "on", uri, EXPERIMENT, "on", {"config_hash": "b"}, {},
                         environment={"device": "cuda:0"}, system_metrics=True)
    time.sleep(3.5)
    for tracker in (on, off):
        write_metrics(tracker._out, {"test_error": 1.0, "history": []})
        tracker.complete()
    client = MlflowClient(uri)
    logged = client.get_run(on.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in logged and "system/system_memory_usage_megabytes" in logged
    assert len(client.get_metric_history(on.run_id, "system/cpu_utilization_percentage")) >= 2
    assert not any(k.startswith("system/") for k in client.get_run(off.run_id).data.metrics)
    assert [r.getMessage() for r in caplog.records if "nvidia-ml-py" in r.getMessage()] == [NO_NVML]


NO_NVML = ("locallearn: warning: no GPU system metrics: nvidia-ml-py is not installed "
           "(pip install nvidia-ml-py, or the locallearn[gpu] extra)")


@pytest.mark.parametrize("device, pynvml, said", [("cuda:0", None, True), ("cuda", None, True),
                                                  ("cpu", None, False), ("cuda:0", "module", False)])
def test_gpu_metrics_without_nvidia_ml_py(monkeypatch, caplog, device, pynvml, said):
    """--mlflow-system-metrics on CUDA without pynvml (nvidia-ml-py, the `gpu` extra): one
    warning line, which MLflow itself gives only below WARNING; none on the CPU or with it.
    MLflow's sampler is a stand-in: no store, no thread."""
    import types
    from mlflow.system_metrics import system_metrics_monitor

    class Monitor:
        def __init__(self, run_id, **kw):
            pass

        def start(self):
            pass

    monkeypatch.setattr(system_metrics_monitor, "SystemMetricsMonitor", Monitor)
    monkeypatch.setitem(sys.modules, "pynvml", types.ModuleType("pynvml") if pynvml else None)
    assert isinstance(live._start_system_metrics("sqlite:///unused.db", "r1", device), Monitor)
    assert [r.getMessage() for r in caplog.records] == ([NO_NVML] if said else [])


# --------------------------------------------------------------------------- sync

COMMITTED = REPO / "results" / "full" / "runs"


def store_dump(uri: str) -> dict:
    """Everything a browser sees of the experiment: runs, params, tags, every metric
    step, artifacts (by folder)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("locallearn")
    out = {}
    for run in client.search_runs([exp.experiment_id]):
        rid = run.info.run_id
        out[rid] = {"status": run.info.status, "end": run.info.end_time, "params": run.data.params,
                    "tags": run.data.tags, "artifact_uri": run.info.artifact_uri,
                    "history": {k: [(m.step, m.value, m.timestamp) for m in client.get_metric_history(rid, k)]
                                for k in run.data.metrics}}
    return out


@pytest.mark.slow
def test_sync_mirrors_the_committed_runs_idempotently(tmp_path):
    """`locallearn tracking sync results/full` on a copy of the committed runs: one
    FINISHED run per cell x seed with the whole history, the recipe, the tags and both
    artifacts; a second sync changes nothing at all."""
    from locallearn.cli.main import main
    shutil.copytree(COMMITTED, tmp_path / "full" / "runs")
    folders = sorted(p.parent for p in (tmp_path / "full" / "runs").glob("*/seed*/metrics.json"))
    assert len(folders) >= 4
    assert main(["tracking", "sync", str(tmp_path / "full")]) == 0
    uri = f"sqlite:///{tmp_path / 'full' / 'mlflow.db'}"
    first = store_dump(uri)
    assert len(first) == len(folders)
    by_name = {r["tags"]["mlflow.runName"]: r for r in first.values()}
    for folder in folders:
        m = json.loads((folder / "metrics.json").read_text())
        run = by_name[m["run_name"]]
        assert run["status"] == "FINISHED" and run["artifact_uri"].startswith("mlflow-artifacts:/locallearn/")
        assert [v for _, v, _ in sorted(run["history"]["test_error"])] == [h["test_error"] for h in m["history"]]
        for layer in m["history"][-1]["local"]:   # per-layer local losses (none under backprop)
            key = f"local_loss_layer{layer['layer']}"
            assert [s for s, _, _ in sorted(run["history"][key])] == list(range(1, m["epochs"] + 1))
        assert run["history"]["final_test_error"][0][1] == m["test_error"]
        assert run["params"]["lr"] == str(m["config"]["lr"]) and run["params"]["seed"] == str(m["seed"])
        assert not {"out", "mlflow_uri", "debug", "progress_bar", "threads", "device"} & set(run["params"])
        t = run["tags"]
        assert t["mlflow.source.git.commit"] == m["git_revision"] and t["cell"] == folder.parent.name
        assert t["env.device"] == m["device"] and t["env.threads"] == str(m["config"]["threads"])
        assert t["env.precision"] == m["config"]["precision"] and t["env.torch"] == m["versions"]["torch"]   # committed before "environment"
        rid = json.loads((folder / "mlflow_run.json").read_text())["run_id"]
        stored = tmp_path / "full" / "mlartifacts" / "locallearn" / rid / "artifacts"
        assert (stored / "metrics.json").read_bytes() == (folder / "metrics.json").read_bytes()
        assert (stored / "curve.png").read_bytes()[:4] == b"\x89PNG"
    done = mirror.sync_results(tmp_path / "full", uri, "locallearn")
    assert set(done.values()) == {"unchanged"}
    assert store_dump(uri) == first


def test_sync_continues_a_run_logged_live(tmp_path):
    """A folder whose run was logged live is found again (by its run file, or by its
    config hash when the run file is lost), completed, never doubled."""
    uri = f"sqlite:///{tmp_path / 'full' / 'mlflow.db'}"
    out = tmp_path / "full" / "runs" / "cell-a" / "seed1"
    tracker = RunTracker.open(out, uri, "locallearn", "cell-a-s1",
                              {"cell": "cell-a", "config_hash": "ab12cd34ef56"}, {"lr": 5e-4})
    history = make_history(6)
    tracker.log_history(history[:3])   # killed after epoch 3; metrics.json written later
    doc = {**metrics_doc(history), "seed": 1, "run_name": "cell-a-s1", "config_hash": "ab12cd34ef56",
           "config": {"lr": 5e-4, "seed": 1, "threads": 1, "precision": "fp32"},
           "tags": {"cell": "cell-a", "config_hash": "ab12cd34ef56"}}
    (out / "metrics.json").write_text(json.dumps(doc))
    assert mirror.sync_results(tmp_path / "full", uri, "locallearn") == {str(out.resolve()): "updated"}
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("locallearn").experiment_id])
    assert run.info.run_id == tracker.run_id and run.info.status == "FINISHED"
    assert_steps(client, run.info.run_id, 6)
    (out / "mlflow_run.json").unlink()
    assert mirror.sync_results(tmp_path / "full", uri, "locallearn") == {str(out.resolve()): "unchanged"}
    assert len(client.search_runs([run.info.experiment_id])) == 1


@pytest.mark.slow
def test_a_synced_store_works_after_the_folder_moves(tmp_path):
    """Sync, move the whole preset folder, serve it with `mlflow ui`: runs, metrics and
    artifacts all there (no absolute path was stored)."""
    src = tmp_path / "clone" / "results" / "full"
    shutil.copytree(COMMITTED, src / "runs")
    draw_missing_curves(src)   # as `locallearn tracking sync` does: the mirror draws nothing
    assert mirror.sync_results(src, f"sqlite:///{src / 'mlflow.db'}", "locallearn")
    moved = tmp_path / "elsewhere" / "clone"
    moved.parent.mkdir()
    shutil.move(tmp_path / "clone", moved)
    full = moved / "results" / "full"
    assert "file://" not in (full / "mlflow.db").read_bytes().decode("latin-1")   # no artifact path
    with mlflow_ui(tmp_path, f"sqlite:///{full / 'mlflow.db'}", full / "mlartifacts") as http:
        client = MlflowClient(http)
        runs = client.search_runs([client.get_experiment_by_name("locallearn").experiment_id])
        assert len(runs) == len(list(full.glob("runs/*/seed*/metrics.json")))
        run = runs[0]
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"metrics.json", "curve.png"}
        got = Path(client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path)))
        cell, seed = run.data.tags["cell"], run.data.tags["seed"]
        assert got.read_bytes() == (full / "runs" / cell / f"seed{seed}" / "metrics.json").read_bytes()
        assert len(client.get_metric_history(run.info.run_id, "test_error")) == 200


@pytest.mark.slow
def test_synced_runs_carry_the_trainings_times(tmp_path):
    """A synced run starts and ends when its training did: from metrics.json's
    started_at and finished_at, or, for the committed runs that predate those fields,
    ending at the commit that added their metrics.json (read from git, so a fresh clone
    gets it) and starting wall_seconds before. Epochs are stamped inside that span; the
    experiment is tagged as model training."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    full = clone / "results" / "full"
    uri = f"sqlite:///{full / 'mlflow.db'}"
    later = full / "runs" / "cell-new" / "seed1"   # a run that records its own times (not committed)
    later.mkdir(parents=True)
    (later / "metrics.json").write_text(json.dumps({
        **metrics_doc(make_history(4)), "seed": 1, "run_name": "cell-new-s1", "config": {"lr": 5e-4},
        "started_at": "2026-01-02T03:04:05+00:00", "finished_at": "2026-01-02T05:04:05+00:00"}))
    mirror.sync_results(full, uri, "locallearn")
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("locallearn")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    committed = sorted(full.glob("runs/fmnist-*/seed1/metrics.json"))
    assert len(committed) == 4
    for path in committed:
        m = json.loads(path.read_text())
        assert "finished_at" not in m
        added = subprocess.run(["git", "log", "--diff-filter=A", "--format=%ct", "--", str(path.relative_to(clone))],
                               cwd=clone, capture_output=True, text=True, check=True).stdout.split()[0]
        run = runs[m["run_name"]]
        assert run.info.end_time == int(added) * 1000
        assert run.info.start_time == run.info.end_time - round(m["wall_seconds"] * 1000)
        stamps = [x.timestamp for x in client.get_metric_history(run.info.run_id, "test_error")]
        assert run.info.start_time < min(stamps) and max(stamps) == run.info.end_time
    new = runs["cell-new-s1"]
    assert (new.info.start_time, new.info.end_time) == (1767323045000, 1767330245000)   # 03:04:05, 05:04:05 UTC


def test_an_older_experiment_gets_the_kind_tag_and_a_chosen_kind_stays(tmp_path):
    uri = sqlite_uri(tmp_path)
    client = MlflowClient(uri)
    ensure_experiment(uri, "warm-up")            # creates the store
    old = client.create_experiment("old")         # made before the tag existed
    mine = client.create_experiment("mine", tags={"mlflow.experimentKind": "genai_development"})
    assert ensure_experiment(uri, "old") == old and ensure_experiment(uri, "mine") == mine
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(mine).tags["mlflow.experimentKind"] == "genai_development"
