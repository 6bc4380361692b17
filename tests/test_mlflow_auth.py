"""Issue 16: the tracking server in its authenticated mode, for real. `.ci/mlflow-server.sh`
starts MLflow's basic-auth app on 127.0.0.1; unauthenticated requests are refused; a
training job (the CLI, and the Snakemake job) with credentials in its environment, or in
the URI, logs its run; and the passwords appear in no file, log or output."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from conftest import MLFLOW_SERVER_SH as SCRIPT, child_env, mlflow_server_in, snakemake
from fake_data import write_fake

ADMIN, ADMIN_PW = "admin", "adminpw-" + secrets.token_hex(6)
USER, USER_PW = "trainer", "secret-" + secrets.token_hex(6)
PASSWORDS = (ADMIN_PW.encode(), USER_PW.encode())


def _env(**extra) -> dict:
    """No MLflow setting of the user's (a URI, credentials) reaches the server or the jobs."""
    mlflow_vars = tuple(k for k in os.environ if k.startswith("MLFLOW_"))
    return child_env(drop=(*mlflow_vars, "LOCALLEARN_DATA"), **extra)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The real server, authenticated: the admin account from the environment."""
    folder = tmp_path_factory.mktemp("mlflow-auth")
    with mlflow_server_in(folder, _env(MLFLOW_TRACKING_USERNAME=ADMIN, MLFLOW_TRACKING_PASSWORD=ADMIN_PW)) as uri:
        assert uri.startswith("http://127.0.0.1:")
        # a researcher's own account, made by the admin through MLflow's auth API
        r = requests.post(f"{uri}/api/2.0/mlflow/users/create", json={"username": USER, "password": USER_PW},
                          auth=(ADMIN, ADMIN_PW), timeout=30)
        assert r.status_code == 200, r.text
        yield folder, uri


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_fake("FashionMNIST", d, n_train=40, n_test=20)
    return d


def _leaks(*roots: Path, texts: tuple[str, ...] = ()) -> list[str]:
    """Every file under roots, and every text, that holds one of the passwords."""
    found = [str(p) for root in roots for p in root.rglob("*")
             if p.is_file() and any(pw in p.read_bytes() for pw in PASSWORDS)]
    return found + [f"output #{i}" for i, t in enumerate(texts) if any(pw.decode() in t for pw in PASSWORDS)]


def _runs(uri: str, experiment: str) -> list[dict]:
    r = requests.get(f"{uri}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": experiment},
                     auth=(ADMIN, ADMIN_PW), timeout=30)
    assert r.status_code == 200, r.text
    exp_id = r.json()["experiment"]["experiment_id"]
    r = requests.post(f"{uri}/api/2.0/mlflow/runs/search", json={"experiment_ids": [exp_id]},
                      auth=(ADMIN, ADMIN_PW), timeout=30)
    return r.json().get("runs", [])


@pytest.mark.slow
def test_unauthenticated_requests_are_refused(server):
    _, uri = server
    search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, timeout=30).status_code == 401
    assert requests.get(search, auth=(USER, "wrong"), timeout=30).status_code == 401
    assert requests.get(search, auth=(USER, USER_PW), timeout=30).status_code == 200
    assert requests.get(f"{uri}/health", timeout=30).status_code == 200   # the liveness probe stays open


def test_serving_beyond_localhost_needs_authenticated_mode(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), "start", str(tmp_path), "0", "0.0.0.0"], env=_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "serving 0.0.0.0 (beyond this machine) needs authenticated mode" in r.stderr
    assert not (tmp_path / "server.pid").exists()


@pytest.mark.slow
def test_training_job_logs_with_credentials_and_records_none(server, data, tmp_path):
    folder, uri = server
    port = uri.rsplit(":", 1)[1]
    base = ["--model", "mlp", "--dataset", "FashionMNIST", "--num-layers", "1", "--num-hidden", "16",
            "--epochs", "1", "--batch-size", "16", "--max-train-examples", "32", "--max-test-examples", "16",
            "--device", "cpu", "--threads", "1", "--data-dir", str(data), "--mlflow-experiment", "auth-test"]
    outputs = []
    # credentials in the environment, the plain URI too
    env = _env(MLFLOW_TRACKING_URI=uri, MLFLOW_TRACKING_USERNAME=USER, MLFLOW_TRACKING_PASSWORD=USER_PW)
    r = subprocess.run([sys.executable, "-m", "locallearn", "train", *base, "--out", str(tmp_path / "env")],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    outputs += [r.stdout, r.stderr]
    # credentials in the URI: used, never recorded
    secret_uri = f"http://{USER}:{USER_PW}@127.0.0.1:{port}"
    r = subprocess.run([sys.executable, "-m", "locallearn", "train", *base, "--out", str(tmp_path / "uri"),
                        "--mlflow-uri", secret_uri], env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    outputs += [r.stdout, r.stderr]
    # without them the server refuses, with a message that does not echo the URI's secret
    r = subprocess.run([sys.executable, "-m", "locallearn", "train", *base, "--out", str(tmp_path / "none"),
                        "--mlflow-uri", uri], env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode != 0, r.stdout
    assert f"MLflow store {uri}: could not" in r.stderr and "401" in r.stderr, r.stderr
    outputs += [r.stdout, r.stderr]

    runs = {run["info"]["run_name"]: run for run in _runs(uri, "auth-test")}
    assert set(runs) >= {"env", "uri"}
    for name in ("env", "uri"):
        run = runs[name]
        assert run["info"]["status"] == "FINISHED"
        params = {p["key"]: p["value"] for p in run["data"].get("params", [])}
        assert params.get("mlflow_uri") in (None, "None", f"http://127.0.0.1:{port}")
        assert all(USER_PW not in p["value"] for p in run["data"].get("params", []) + run["data"].get("tags", []))
        recorded = json.loads((tmp_path / name / "mlflow_run.json").read_text())
        assert recorded["tracking_uri"] == uri
        assert json.loads((tmp_path / name / "metrics.json").read_text())["config"]["mlflow_uri"] in (None, uri)
    assert _leaks(tmp_path, folder, texts=tuple(outputs)) == []


@pytest.mark.slow
def test_snakemake_job_with_a_secret_uri_records_none(server, data, tmp_path):
    """A URI with a password, given to Snakemake in its environment (its own command line
    is echoed to its log: nothing secret belongs on it). The workflow shows its jobs the URI
    without its user-info and hands that to MLflow's variables in their environment: the
    password is in no command line, log, run file,
    mlflow.init.json, nor anything under the working directory (.snakemake/ included)."""
    folder, uri = server
    port = uri.rsplit(":", 1)[1]
    budget = "quick={epochs: 1, max_train_examples: 32, max_test_examples: 16, select: {cells: [fmnist-mlp-pred]}}"
    r = snakemake(tmp_path, "--cores", "1", "quick", "--config", f"data_dir={data}", budget, timeout=900,
                  env=_env(MLFLOW_TRACKING_URI=f"http://{USER}:{USER_PW}@127.0.0.1:{port}"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    quick = tmp_path / "results" / "quick"
    assert json.loads((quick / "mlflow.init.json").read_text())["uri"] == uri
    log = (quick / "runs" / "fmnist-mlp-pred" / "seed1" / "train.log").read_text()   # the attempt's header
    assert f"--mlflow-uri {uri} " in log and "--run-name fmnist-mlp-pred-s1" in log   # the URI, redacted
    assert f"MLflow: open {uri}" in r.stdout + r.stderr   # the end of the run names the server, redacted
    runs = _runs(uri, "locallearn-quick")
    assert [(run["info"]["run_name"], run["info"]["status"]) for run in runs] == [("fmnist-mlp-pred-s1", "FINISHED")]
    assert _leaks(tmp_path, folder, texts=(r.stdout, r.stderr)) == [], \
        [line for line in r.stdout.splitlines() + r.stderr.splitlines() if USER_PW in line]
