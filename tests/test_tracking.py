"""locallearn.tracking against real MLflow stores: a SQLite file and a `mlflow server`.

No torch: histories are synthetic, shaped like metrics.json's."""
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from locallearn import tracking
from locallearn.errors import ConfigError, TrackingError
from locallearn.tracking import RunTracker, cli_init, ensure_experiment, resolve_uri

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
    tracker.finish("FINISHED", doc, [out_dir / "metrics.json", out_dir / "curve.png"])
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
    assert len(run.data.params["long"]) == tracking.MAX_PARAM_LENGTH
    assert run.data.tags["cell"] == "cell-a"
    assert run.data.tags[tracking.TAG_OUT_DIR] == str(out.resolve())
    client = MlflowClient(uri)
    assert_steps(client, run_id, 5)
    assert {a.path for a in client.list_artifacts(run_id)} == {"metrics.json", "curve.png"}
    assert run.info.artifact_uri.startswith((tmp_path / "results" / "mlartifacts").as_uri())
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
    tracker.finish("FAILED", {"error": "loss is NaN at epoch 3 (run)\nsecond line"})
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[tracking.TAG_ERROR] == "loss is NaN at epoch 3 (run)"


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
        tracker.finish("FINISHED", metrics_doc(history[:4]))
    client.log_batch = real_log_batch
    tracker.log_history(history)                      # back: catches up, nothing doubled
    assert_steps(MlflowClient(uri), tracker.run_id, 6)

    client.set_terminated = broken_store
    tracker.finish("FAILED", {"error": "boom"})       # the trainer's error stays the one shown


def test_locked_database_is_retried(monkeypatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert tracking._call("sqlite:///x.db", "log", flaky) == "ok" and len(attempts) == 3
    with pytest.raises(TrackingError, match=r"sqlite:///x.db: could not log: disk I/O error"):
        tracking._call("sqlite:///x.db", "log", broken_store)


def test_tracking_off_is_a_no_op(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = RunTracker.open(tmp_path / "run", None, EXPERIMENT, "x", {}, {"lr": 1})
    tracker.log_history(make_history(3))
    tracker.finish("FINISHED", metrics_doc(make_history(3)), [])
    tracker.finish("FAILED", {"error": "boom"})
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
    ctx.set_forkserver_preload(["mlflow", "locallearn.tracking"])
    with ctx.Pool(n) as pool:
        run_ids = pool.map(_job, jobs)
    assert len(set(run_ids)) == n
    found = runs(uri)
    assert sorted(r.info.run_id for r in found) == sorted(run_ids)
    client = MlflowClient(uri)
    for run in found:
        assert run.info.status == "FINISHED"
        assert_steps(client, run.info.run_id, epochs)


def test_concurrent_sqlite(tmp_path):
    run_jobs(sqlite_uri(tmp_path), tmp_path, n=8, epochs=20)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` (SQLite backend, served artifacts) on a free local port."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--serve-artifacts", "--artifacts-destination", str(tmp_path / "server-artifacts")],
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
                pytest.fail(f"mlflow server did not start:\n{(tmp_path / 'server.log').read_text()}")
            time.sleep(0.3)
        yield uri
    finally:
        os.killpg(proc.pid, 15)   # the server's own process group: it and its workers
        proc.wait(timeout=30)
        log.close()


def test_concurrent_server(mlflow_server, tmp_path):
    run_jobs(mlflow_server, tmp_path, n=4, epochs=10)
    run_id = runs(mlflow_server)[0].info.run_id
    assert {a.path for a in MlflowClient(mlflow_server).list_artifacts(run_id)} == {
        "metrics.json", "curve.png"}
    assert list((tmp_path / "server-artifacts").rglob("metrics.json"))
