"""What many test files share: where the repository and the Debian Fashion-MNIST are,
the environment and the Snakemake command of a child process, a real `mlflow server`,
folders made once per session (a finished quick grid), flag namespaces for small
networks and synthetic batches."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from locallearn.recipe.config import parse_train_args

REPO = Path(__file__).resolve().parent.parent
CELLS_TSV = REPO / "workflow" / "config" / "cells.tsv"   # the workflow's grid
FMNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
MLFLOW_SERVER_SH = REPO / ".ci" / "mlflow-server.sh"
NO_SLURM = REPO / "tests" / "fixtures" / "no-slurm"   # an `scontrol` that fails at once

# Tests share 2 cores with nothing else; one thread keeps them from oversubscribing
# when pytest runs a subprocess beside them.
torch.set_num_threads(int(os.environ.get("LOCALLEARN_TEST_THREADS", "1")))

needs_fmnist = pytest.mark.skipif(not (FMNIST_DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
                                  reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")


# ------------------------------------------------------------------ parallel workers

WORKERS = int(os.environ.get("LOCALLEARN_TEST_WORKERS", "2"))
# Modules whose tests run on one worker, one after another: a machine has one SLURM
# cluster; the authenticated server of test_mlflow_auth.py is started once, not per worker.
ONE_WORKER_MODULES = ("tests/test_slurm.py", "tests/test_mlflow_auth.py")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """`python -m pytest -q tests` runs on WORKERS (2) pytest-xdist workers where
    pytest-xdist is installed (the dev extra): most of the suite's time is child processes
    (snakemake, training) that use one core, and the machine has two. Each worker's torch
    uses one thread (above). `-n N` (`-n 0`: one process) or LOCALLEARN_TEST_WORKERS
    choose otherwise; --pdb and --collect-only run in one process. The SLURM tests share
    one worker (below)."""
    opt = config.option
    if not hasattr(opt, "numprocesses"):
        return   # no pytest-xdist
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return   # a worker
    if opt.numprocesses is None and WORKERS > 1 and not opt.usepdb and not opt.collectonly:
        opt.numprocesses = WORKERS
    if opt.numprocesses and opt.dist == "no":
        opt.dist = "loadgroup"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under --dist loadgroup, the tests of each of ONE_WORKER_MODULES run on one worker,
    one after another (such a unit is handed out first), and every other test wherever a
    worker is free. (xdist's own loadgroup marks a group by editing `item._nodeid`,
    which pytest 9 no longer reads, so its xdist_group marks group nothing.)"""
    if config.option.dist != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerModules(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER_MODULES else nodeid
    return OneWorkerModules(config, log)


def pytest_collection_modifyitems(config, items):
    """On the workers, the slow tests first (in file order; the rest after, in file order):
    the longest tests start early and the short ones fill the end, so the two workers
    finish together. A run in one process keeps the file order."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# ------------------------------------------------------------------ the suite's budget

BUDGET_S = {"full": 20 * 60, "fast": 5 * 60}   # docs/testing.md: the whole suite; -m "not slow"
_started = time.monotonic()


def pytest_terminal_summary(terminalreporter, config):
    """The suite's wall time against its budget (docs/testing.md), one line at the end:
    20 minutes for the whole suite, 5 for the fast tier (-m "not slow")."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    tier = "fast" if config.getoption("markexpr", "").replace(" ", "") == "notslow" else "full"
    took = time.monotonic() - _started
    terminalreporter.write_line(f"locallearn tests ({tier} tier): {took:.0f} s of the {BUDGET_S[tier]} s budget "
                                f"({took / BUDGET_S[tier]:.0%}; docs/testing.md)")


# ------------------------------------------------------------------ child processes

# A user's own tracking store and data folder must not leak into a test's jobs.
USER_SETTINGS = ("MLFLOW_TRACKING_URI", "LOCALLEARN_DATA")


def child_env(root: Path = REPO, drop: tuple[str, ...] = USER_SETTINGS, slurm: bool = False,
              **extra: str) -> dict:
    """This process's environment for a child (locallearn, Snakemake, torchrun): `root`'s
    package first on PYTHONPATH, the variables in `drop` removed, `extra` set.
    Without `slurm` (only the SLURM tests ask for it), tests/fixtures/no-slurm comes first
    on PATH: every `snakemake` imports the SLURM plugin, which asks `scontrol` for the
    cluster's config and, where SLURM is installed but its controller is down, waits ~9 s
    for the answer; the no-slurm `scontrol` fails at once, as on a machine without SLURM."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    if not slurm:
        env["PATH"] = os.pathsep.join(p for p in (str(NO_SLURM), env.get("PATH")) if p)
    return {**env, **extra}


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    """The repository's workflow run in `workdir` (its results/ and .snakemake/ go there)."""
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]


def snakemake(workdir: Path, *args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(workdir, *args), capture_output=True, text=True, timeout=timeout,
                          cwd=workdir, env=env or child_env())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ MLflow server

@contextmanager
def mlflow_server_in(folder: Path, env: dict | None = None):
    """A real `mlflow server` started the way users start one (.ci/mlflow-server.sh: SQLite,
    served artifacts, a free local port) with everything in `folder`; yields its URI.
    With MLFLOW_TRACKING_USERNAME/PASSWORD in `env` it runs authenticated."""
    env = env or child_env(drop=tuple(k for k in os.environ if k.startswith("MLFLOW_")))
    start = subprocess.run(["bash", str(MLFLOW_SERVER_SH), "start", str(folder)], env=env,
                           capture_output=True, text=True, timeout=300)
    if start.returncode != 0:
        pytest.fail(f"mlflow server did not start:\n{start.stdout}\n{start.stderr}")
    try:
        yield start.stdout.strip()
    finally:
        subprocess.run(["bash", str(MLFLOW_SERVER_SH), "stop", str(folder)], env=env,
                       capture_output=True, text=True, timeout=60)


class MlflowServer(str):
    """A running server's URI (a str), with the folder that holds its store and artifacts."""
    folder: Path


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One unauthenticated server for the session (per xdist worker): its URI, a
    MlflowServer. Tests that share it keep to experiments of their own."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server_in(folder) as uri:
        server = MlflowServer(uri)
        server.folder = folder
        yield server


# ------------------------------------------------------------------ a finished grid

# The quick preset's four Fashion-MNIST cells at the budget the end-to-end tests share:
# 2 epochs, so a run leaves a checkpoint before its end (tests/test_faults_dag.py kills one).
QUICK_BUDGET = "quick={epochs: 2, max_train_examples: 1000, max_test_examples: 500}"
QUICK_CELLS = ["fmnist-mlp-backprop", "fmnist-mlp-pred", "fmnist-mlp-sim", "fmnist-mlp-predsim"]


@contextmanager
def session_lock(path: Path):
    """An exclusive lock on `path` held by one process of the test session at a time."""
    import fcntl
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def made_once(tmp_path_factory, name: str, make) -> tuple[Path, str]:
    """A folder made by `make(folder)` (which returns a text, e.g. its command's output)
    once per test session, whatever the number of xdist workers: the first worker to ask
    makes it in the session's shared temporary folder under a lock; the others wait for
    it and read it. (folder, the text). Tests only read the folder; one that changes it
    copies it first."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent   # pytest-of-<user>/pytest-N/, common to the workers
    root, text = shared / name, shared / f"{name}.out"
    with session_lock(shared / f"{name}.lock"):
        if not text.is_file():
            shutil.rmtree(root, ignore_errors=True)   # a worker's failed attempt
            root.mkdir()
            text.write_text(make(root))
    return root, text.read_text()


@pytest.fixture(scope="session")
def finished_quick(tmp_path_factory):
    """A working folder after `snakemake --cores 2 quick --config QUICK_BUDGET` on the real
    Fashion-MNIST, and that command's output (stdout + stderr), made once per session
    (made_once). A quick folder moves whole (its MLflow store keeps no absolute path)."""
    def make(root: Path) -> str:
        r = snakemake(root, "--cores", "2", "quick", "--config", QUICK_BUDGET, timeout=600)
        assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
        return r.stdout + r.stderr
    return made_once(tmp_path_factory, "finished-quick", make)


# ------------------------------------------------------------------ small recipes

def flags(*extra: str, **kw):
    """parse_train_args over a small default recipe; kw become --key value."""
    argv = ["--model", "mlp", "--dataset", "FashionMNIST", "--num-layers", "2", "--num-hidden", "32"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return parse_train_args(argv + list(extra))


def batches(n: int, shape=(1, 28, 28), classes: int = 10, batch: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, *shape, generator=g), torch.randint(0, classes, (batch,), generator=g))
            for _ in range(n)]


@pytest.fixture(autouse=True)
def _mlflow_credentials_stay_in_their_test():
    """take_credentials (config.validate) exports a URI's user and password into this
    process's environment, as a training process needs; in the one pytest process that
    would hand them to every later test's servers and jobs. Restore them after each test."""
    from locallearn.credentials import PASSWORD_VAR, USERNAME_VAR
    saved = {k: os.environ.get(k) for k in (USERNAME_VAR, PASSWORD_VAR)}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# ------------------------------------------------------------------ networks measured by torch

def trainable(model):
    """Parameter name -> who may train it: a local module's index, or 'output'."""
    from locallearn.layers.localnet import Block
    owner = {}
    for i, m in enumerate(model.layers):
        for n, _ in m.named_parameters():
            owner[f"layers.{i}.{n}"] = m.index if isinstance(m, Block) else None
    for n, _ in model.output.named_parameters():
        owner[f"output.{n}"] = "output"
    return owner


COUNT_BATCH = 8


def counted(flags):
    """A recipe's network measured by torch's FlopCounterMode on a batch of COUNT_BATCH:
    (cfg, training MACs per example, evaluation MACs per example, each layer's output
    shape, (backbone, head) parameters, the heads' forward MACs per example)."""
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from locallearn.layers.localnet import Block
    from locallearn.nets.models import build_model
    from locallearn.recipe.specs import SPECS
    from locallearn.train.engines import FusedEngine
    cfg = parse_train_args(flags + ["--batch-size", str(COUNT_BATCH), "--device", "cpu"])
    spec = SPECS[cfg.dataset]
    torch.manual_seed(0)
    model = build_model(cfg, spec.channels, spec.size, spec.num_classes)
    engine = FusedEngine(cfg, model, torch.device("cpu"))
    x = torch.randn(COUNT_BATCH, spec.channels, spec.size, spec.size)
    y = torch.arange(COUNT_BATCH) % spec.num_classes
    no_autocast = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731
    with FlopCounterMode(display=False) as fc:
        engine.step(x, y, F.one_hot(y, spec.num_classes).float(), no_autocast)
    train = fc.get_total_flops() / 2 / COUNT_BATCH
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x, local=False)
    shapes, h = [], x
    with torch.no_grad():
        for layer in model.layers:
            h = layer(h)[1] if isinstance(layer, Block) else layer(h)
            shapes.append(tuple(h.shape[1:]))
    backbone, total = model.count_params()
    heads_fwd = head_forward_macs(model, x)
    return cfg, train, fc.get_total_flops() / 2 / COUNT_BATCH, shapes, (backbone, total - backbone), heads_fwd


def head_forward_macs(model, x) -> float:
    """The local heads' forward MACs per example, counted by torch: a training forward
    (heads included) less an evaluation forward (no heads), both in train mode."""
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode
    y = torch.arange(x.shape[0]) % model.num_classes
    counts = []
    for local in (True, False):
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x, y, F.one_hot(y, model.num_classes).float(), local=local)
        counts.append(fc.get_total_flops() / 2 / x.shape[0])
    return counts[0] - counts[1]

