"""The SLURM path on a real single-node cluster (Debian's slurm-wlm + munge).

.ci/slurm-up.sh brings up munged, slurmctld and slurmd on localhost (installing
the packages with apt-get where missing); the tests submit through Snakemake's
SLURM executor plugin with the repository's profile, changing only the values a
site changes (partition, account, memory) plus faster status polling. They stop
the daemons they started. They skip only where the daemons cannot run at all
(not root, or no slurm-wlm and no apt-get to install it).

- the probe workflow (a temporary Snakefile, no trainer needed): jobs go through
  sbatch with a GPU each; a job that fails is retried by Snakemake with a new
  sbatch and resumes from the checkpoint its first attempt left; a job that SLURM
  requeues (`scontrol requeue`) resumes from its checkpoint as well;
- the quick target of the real workflow, with a real `mlflow server`: every
  training job goes through sbatch, all finish, the tables are produced, and the
  server holds exactly one FINISHED run per cell.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, child_env, needs_fmnist

PROFILE = REPO / "workflow" / "profiles" / "slurm"
STATE = Path(os.environ.get("LOCALLEARN_SLURM_STATE", "/tmp/locallearn-slurm"))

# One cluster per machine: with parallel workers (tests/conftest.py) every test of this
# module runs on the same worker (ONE_WORKER_MODULES), so the cluster is brought up and
# down once, by one.
pytestmark = pytest.mark.slow

# The values a site changes in the profile (see docs/cluster.md),
# set for the test cluster, and status polling fast enough for seconds-long jobs.
SITE_ARGS = [
    "--default-resources", "slurm_partition=debug", "slurm_account=none",
    "mem_mb=1500", "runtime=20",
    "--slurm-init-seconds-before-status-checks", "2",
    "--seconds-between-status-checks", "2",
    "--latency-wait", "5",
]


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# --------------------------------------------------------------------- no cluster

LOCK = REPO / "envs" / "requirements.txt"


def _locked() -> dict[str, list]:
    """envs/requirements.txt: {name: [Requirement, ...]} (several only where markers fork)."""
    from packaging.requirements import Requirement
    out = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            r = Requirement(line)
            out.setdefault(r.name.lower().replace("_", "-"), []).append(r)
    return out


def test_lock_holds_pyproject():
    """The lock pins every package exactly, and the pins satisfy pyproject's ranges: its
    dependencies, every extra (the lock's command names them all) and the build backend."""
    import tomllib
    from packaging.requirements import Requirement
    py = tomllib.loads((REPO / "pyproject.toml").read_text())
    lock = _locked()
    assert len(lock) > 100   # the whole closure, not the direct dependencies
    for name, reqs in lock.items():
        for r in reqs:
            (spec,) = r.specifier
            assert spec.operator == "==" and not r.extras, f"{LOCK.name}: {r} is not an exact pin"
    header = LOCK.read_text().split("\n", 3)[1]   # "#    uv pip compile pyproject.toml ..."
    extras = py["project"]["optional-dependencies"]
    assert "pyproject.toml" in header and all(f"--extra {e}" in header for e in extras), header
    wanted = py["project"]["dependencies"] + sum(extras.values(), []) + py["build-system"]["requires"]
    for w in map(Requirement, wanted):
        name = w.name.lower().replace("_", "-")
        assert name in lock, f"{LOCK.name} lacks {w}: regenerate it (docs/environment.md)"
        here = [r for r in lock[name] if r.marker is None or r.marker.evaluate()]
        assert len(here) == 1, f"{LOCK.name}: {name} has {len(here)} pins for this platform"
        version = str(here[0].specifier).lstrip("=")
        assert w.specifier.contains(version, prereleases=True), f"{LOCK.name}: {name}=={version} is not {w}"


def test_conda_env_is_the_lock():
    """envs/environment.yaml installs the lock through pip, and names its sha256 so that
    Snakemake (which hashes only the yaml) rebuilds its environment when the lock changes."""
    import hashlib
    text = (REPO / "envs" / "environment.yaml").read_text()
    env = yaml.safe_load(text)
    conda = [d for d in env["dependencies"] if not isinstance(d, dict)]
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert [c.split("=")[0] for c in conda] == ["python", "pip"] and pip == [["-r requirements.txt"]]
    line = f"# lock: requirements.txt sha256 {hashlib.sha256(LOCK.read_bytes()).hexdigest()}"
    assert line in text.splitlines(), f"envs/environment.yaml: the lock changed; write its line as: {line}"


def test_profile_is_valid_for_the_plugin():
    cfg = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert cfg["executor"] == "slurm"
    assert cfg["slurm-status-command"] in ("squeue", "sacct")
    assert {"slurm_partition", "slurm_account", "mem_mb", "runtime"} <= set(cfg["default-resources"])
    assert cfg["retries"] >= 1 and cfg["slurm-requeue"] is True
    assert cfg["slurm-keep-successful-logs"] is True  # the tests read the job ids from them


# ------------------------------------------------------------------------ cluster

@pytest.fixture(scope="module")
def slurm_cluster():
    """Bring the cluster up; stop at the end only what this fixture started."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    t0 = time.monotonic()
    up = _run(["bash", str(REPO / ".ci" / "slurm-up.sh")], timeout=900)
    if up.returncode == 3:
        pytest.skip("cannot run SLURM daemons here: " + up.stderr.strip().splitlines()[-1])
    if up.returncode != 0:
        pytest.fail(f"slurm-up.sh failed (exit {up.returncode}):\n{up.stdout}\n{up.stderr}")
    print(f"\n[slurm] up in {time.monotonic() - t0:.1f} s\n{up.stdout}")
    started_here = "already up" not in up.stdout and "not started by this script" not in up.stdout
    gpus = _run(["sinfo", "-h", "-N", "-o", "%G"]).stdout
    yield {"gpus": "gpu:" in gpus}
    if started_here:
        down = _run(["bash", str(REPO / ".ci" / "slurm-down.sh")], timeout=120)
        print(f"[slurm] down:\n{down.stdout}{down.stderr}")


def _snakemake(workdir: Path, args: list[str], env: dict | None = None, timeout: float = 600):
    """Snakemake through the repository's SLURM profile, site values for the test cluster."""
    cmd = [sys.executable, "-m", "snakemake", "--profile", str(PROFILE), *SITE_ARGS, *args]
    t0 = time.monotonic()
    proc = _run(cmd, cwd=workdir, env=env or _job_env(), timeout=timeout)
    proc.seconds = time.monotonic() - t0
    return proc


def _job_env() -> dict:
    # the jobs must get their GPU from SLURM, not from a stray setting of ours
    return child_env(drop=("CUDA_VISIBLE_DEVICES",), slurm=True)


def _slurm_log_ids(workdir: Path) -> dict[str, list[str]]:
    """{rule: [SLURM job ids]} from the plugin's per-job logs (kept: the profile
    sets slurm-keep-successful-logs)."""
    out: dict[str, list[str]] = {}
    for log in (workdir / ".snakemake" / "slurm_logs").rglob("*.log"):
        rule = next(p for p in log.relative_to(workdir / ".snakemake" / "slurm_logs").parts)
        out.setdefault(rule.removeprefix("rule_"), []).append(log.stem)
    return out


def _job_states(ids) -> dict[str, str]:
    ids = list(ids)
    if not ids:
        return {}
    out = _run(["squeue", "--states=all", "-h", "-o", "%i|%T", "-j", ",".join(ids)]).stdout
    return dict(line.split("|") for line in out.split())


PROBE_SNAKEFILE = r'''
# Probe workflow: what the training jobs need from SLURM, without the trainer.
localrules: all

rule all:
    input: expand("out/train_{i}.txt", i=[1, 2]), "out/flaky.txt", "out/requeued.txt"

# Named and resourced like the workflow's training rule of the full preset.
rule train:
    output: "out/train_{i}.txt"
    threads: 1
    resources: runtime=5, gpu=1
    shell: "echo job=$SLURM_JOB_ID cvd=${{CUDA_VISIBLE_DEVICES:-none}} host=$(hostname) > {output}"

# Fails on its first attempt after leaving a checkpoint that is not a declared
# output (as the trainer's checkpoint.pt); the retry must find it.
rule flaky:
    output: "out/flaky.txt"
    params: ckpt="ckpt/flaky"
    resources: runtime=5, attempt=lambda wc, attempt: attempt
    shell:
        """
        mkdir -p ckpt
        if [ -f {params.ckpt} ]; then
            echo "resumed-from=$(cat {params.ckpt}) job=$SLURM_JOB_ID attempt={resources.attempt}" > {output}
        else
            echo $SLURM_JOB_ID > {params.ckpt}; echo "attempt {resources.attempt}: simulated crash" >&2; exit 1
        fi
        """

# Leaves a checkpoint, then runs until SLURM requeues it (the test does, as a
# preemption or node failure would); the requeued run resumes and finishes.
rule requeued:
    output: "out/requeued.txt"
    params: ckpt="ckpt/requeued"
    resources: runtime=5
    shell:
        """
        mkdir -p ckpt
        if [ -f {params.ckpt} ]; then
            echo "resumed-from=$(cat {params.ckpt}) job=$SLURM_JOB_ID" > {output}
        else
            echo $SLURM_JOB_ID > {params.ckpt}; sleep 120; echo "never requeued" >&2; exit 1
        fi
        """
'''


def _requeue_when_checkpointed(ckpt: Path, stop: threading.Event, done: list) -> None:
    while not stop.is_set():
        if ckpt.exists() and ckpt.read_text().strip():
            jobid = ckpt.read_text().strip()
            time.sleep(1)  # let the step settle; a requeue during launch is refused
            res = _run(["scontrol", "requeue", jobid])
            done.append((jobid, res.returncode, res.stderr.strip()))
            return
        time.sleep(0.5)


@pytest.fixture(scope="module")
def probe_run(slurm_cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("probe")
    (workdir / "Snakefile").write_text(PROBE_SNAKEFILE)
    stop, requeued = threading.Event(), []
    watcher = threading.Thread(target=_requeue_when_checkpointed,
                               args=(workdir / "ckpt" / "requeued", stop, requeued), daemon=True)
    watcher.start()
    try:
        proc = _snakemake(workdir, ["--jobs", "4", "all"], timeout=400)
    finally:
        stop.set()
        watcher.join(timeout=5)
    print(f"[slurm] probe workflow: exit {proc.returncode} in {proc.seconds:.1f} s")
    if proc.returncode != 0:
        pytest.fail(f"probe workflow failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    return {"dir": workdir, "proc": proc, "requeued": requeued, "gpus": slurm_cluster["gpus"]}


def _fields(path: Path) -> dict[str, str]:
    return dict(item.split("=", 1) for item in path.read_text().split())


@pytest.mark.slurm
def test_jobs_go_through_sbatch_with_a_gpu_each(probe_run):
    workdir = probe_run["dir"]
    jobs = [_fields(workdir / "out" / f"train_{i}.txt") for i in (1, 2)]
    ids = [j["job"] for j in jobs]
    assert all(i.isdigit() for i in ids) and len(set(ids)) == 2  # ran inside SLURM jobs
    assert sorted(_slurm_log_ids(workdir)["train"]) == sorted(ids)  # submitted by the plugin
    assert set(_job_states(ids).values()) == {"COMPLETED"}
    if probe_run["gpus"]:
        # the rule's gpu=1 became --gpus=1; SLURM chose the card
        assert all(j["cvd"] != "none" for j in jobs)


@pytest.mark.slurm
def test_failed_job_is_retried_and_resumes(probe_run):
    workdir = probe_run["dir"]
    got = _fields(workdir / "out" / "flaky.txt")
    assert got["attempt"] == "2"
    assert got["resumed-from"] != got["job"]  # a new sbatch, a new SLURM job
    # both attempts went through sbatch; the failed one's log is kept
    assert {got["resumed-from"], got["job"]} <= set(_slurm_log_ids(workdir)["flaky"])
    assert _job_states([got["resumed-from"]]) == {got["resumed-from"]: "FAILED"}


@pytest.mark.slurm
def test_requeued_job_resumes(probe_run):
    workdir = probe_run["dir"]
    assert probe_run["requeued"] and probe_run["requeued"][0][1] == 0, probe_run["requeued"]
    got = _fields(workdir / "out" / "requeued.txt")
    assert got["resumed-from"] == got["job"]  # the same SLURM job, run again by SLURM
    # (SLURM_RESTART_COUNT does not reach the job's shell: the job-step executor
    # strips SLURM_* variables before its srun; the controller knows.)
    show = _run(["scontrol", "show", "job", got["job"]]).stdout
    assert re.search(r"\bRestarts=1\b", show), show
    assert "JobState=COMPLETED" in show


# ------------------------------------------------------------- the real workflow

# Small enough for seconds per job on one CPU thread, large enough that an epoch
# lasts well over the 0.05 s in which the crash wrapper below reacts.
QUICK_BUDGET = "quick={epochs: 2, max_train_examples: 2000, max_test_examples: 500}"
VICTIM = "fmnist-mlp-predsim"  # the cell whose first attempt is killed mid-run

# Stands in for `python -m locallearn` (the workflow's `command` config key). For
# VICTIM's training job, the first time only, it SIGKILLs the trainer as soon as
# the first epoch's checkpoint exists: a crash in the middle of a run. Every other
# call, and the retry, runs the real command unchanged.
CRASH_WRAPPER = r"""#!/bin/bash
out=""; prev=""
for a in "$@"; do [[ $prev == --out ]] && out=$a; prev=$a; done
if [[ $1 == train && $out == */$VICTIM/* ]]; then
    if [[ ! -e $MARKS/killed ]]; then
        "$PY" -m locallearn "$@" &
        pid=$!
        while kill -0 $pid 2>/dev/null; do
            if [[ -e $out/checkpoint.pt ]]; then
                kill -KILL $pid; wait $pid
                echo "$SLURM_JOB_ID" > "$MARKS/killed"
                echo "crash wrapper: killed the trainer after its first checkpoint" >&2
                exit 137
            fi
            sleep 0.05
        done
        wait $pid; rc=$?
        echo "the run ended before it could be killed" > "$MARKS/race-lost"
        exit $rc
    fi
    # the retry: record what it starts from
    ls "$out" > "$MARKS/retry-found"
fi
exec "$PY" -m locallearn "$@"
"""

@pytest.mark.slurm
@pytest.mark.slow
@needs_fmnist
def test_quick_target_on_slurm_with_mlflow_server(slurm_cluster, mlflow_server, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    wrapper = tmp_path / "locallearn-crash-once"
    wrapper.write_text(CRASH_WRAPPER)
    wrapper.chmod(0o755)
    env = _job_env()
    # The documented way jobs on many nodes find the server; sbatch --export=ALL
    # hands it to every job.
    env.update(MLFLOW_TRACKING_URI=mlflow_server, VICTIM=VICTIM, MARKS=str(marks), PY=sys.executable)
    env.pop("LOCALLEARN_DATA", None)
    work = tmp_path / "work"
    work.mkdir()
    proc = _snakemake(work, [
        "-s", str(REPO / "Snakefile"), "-d", str(work), "--jobs", "4", "quick",
        "--config", QUICK_BUDGET, f"command={wrapper}",
        # host memory per job, the test node is small (config key, not the profile)
        "train={mem_mb: {default: 1500}}",
    ], env=env, timeout=900)
    print(f"[slurm] quick target: exit {proc.returncode} in {proc.seconds:.1f} s")
    assert proc.returncode == 0, proc.stderr[-8000:]
    assert not (marks / "race-lost").exists(), "the victim finished before the crash wrapper could kill it"

    from locallearn.workflow import plan
    cfg = plan.load_config(overrides={"quick": {"epochs": 2, "max_train_examples": 2000,
                                                   "max_test_examples": 500}})
    quick = plan.make_presets(cfg, plan.load_cells(plan.cells_path(cfg)))["quick"]
    cells = [r["cell"] for r in quick.rows]
    assert VICTIM in cells
    results = work / "results" / "quick"

    # every training job went through sbatch: one SLURM job per cell, plus the
    # victim's retry; all of them known to the controller
    log = proc.stderr + proc.stdout
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    ids = _slurm_log_ids(work).get("train", [])
    assert sorted(submitted) == sorted(ids) and len(ids) == len(cells) + 1, (submitted, ids)
    states = _job_states(ids)
    killed_job = (marks / "killed").read_text().strip()
    assert states.pop(killed_job) == "FAILED"
    assert set(states.values()) == {"COMPLETED"}
    assert "localrule train:" not in log  # no training job ran on the submit host

    # all finished; the victim's retry resumed from the checkpoint of its first attempt
    metrics = {c: json.loads((results / "runs" / c / "seed1" / "metrics.json").read_text()) for c in cells}
    assert all(m["epochs"] == 2 and len(m["history"]) == 2 for m in metrics.values())
    assert "checkpoint.pt" in (marks / "retry-found").read_text().split()
    victim_log = (results / "logs" / "train" / VICTIM / "seed1.log").read_text()
    # (Snakemake removes a failed job's log before the retry: this is the retry's)
    assert victim_log.count("# finished") == 1   # the trainer's closing line (runs/trainlog.py)
    assert re.search(r"resum", victim_log, re.I), victim_log  # the trainer says it resumed

    # the tables
    assert (results / "tables" / "tables.md").read_text().strip()
    assert (results / "tables" / "summary.md").read_text().strip()
    assert (results / "figures" / "scatter.png").is_file()

    # the server holds exactly one run per cell, FINISHED, with metrics.json's number
    from mlflow.tracking import MlflowClient
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name(quick.experiment)
    assert exp is not None, f"no experiment {quick.experiment} on {mlflow_server}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by_cell: dict[str, list] = {}
    for run in runs:
        by_cell.setdefault(run.data.tags.get("cell"), []).append(run)
    assert sorted(by_cell) == sorted(cells), sorted(by_cell)
    for cell, cell_runs in by_cell.items():
        assert len(cell_runs) == 1, f"{cell}: {len(cell_runs)} runs (a retry must continue its run)"
        run = cell_runs[0]
        assert run.info.status == "FINISHED", (cell, run.info.status)
        assert run.data.metrics["test_error"] == pytest.approx(metrics[cell]["test_error"])
