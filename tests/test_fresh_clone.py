"""What a new user gets: a real `git clone` of this repository (no .snakemake/, every
file's mtime the time of the clone), then the README's own commands, as typed, from
the clone's root. Every documented form schedules exactly the runs without a finished
metrics.json (82 of the 86 with the committed Fashion-MNIST mlp row; none of that
row), for the reason that their metrics.json is missing; and a changed row of a
committed cell trains it again with the old run kept whole beside the new one."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FMNIST_DEBIAN, REPO, child_env, needs_fmnist

COMMITTED = ["fmnist-mlp-backprop", "fmnist-mlp-pred", "fmnist-mlp-sim", "fmnist-mlp-predsim"]
FMNIST_MLP = "select={datasets: [FashionMNIST], models: [mlp]}"
HAS_SLURM_PLUGIN = importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None

pytestmark = [pytest.mark.slow,   # every test clones the repository and runs the workflow
              pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                                 reason="needs git and a git checkout of the repository")]


def git_clone(dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True, timeout=120)
    return dest


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    return git_clone(tmp_path_factory.mktemp("clone") / "locallearn")


def env_for(root: Path) -> dict:
    """A new user's shell: the clone's package only, no tracking server or data dir set."""
    return child_env(root, PYTHONPATH=str(root))


def snakemake(root: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=root, env=env_for(root),
                          capture_output=True, text=True, timeout=timeout)


def train_jobs(output: str) -> dict[str, str]:
    """{metrics.json the train job writes: its reason} of a dry run."""
    jobs = {}
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", output):
        if re.search(r"^(?:local)?rule train:", block, re.M):
            out = re.search(r"^\s+output: (\S+)", block, re.M).group(1)
            jobs[out] = re.search(r"^\s+reason: (.*)$", block, re.M).group(1)
    return jobs


def test_readme_counts_what_the_dry_run_lists(clone):
    readme = (clone / "README.md").read_text()
    claimed = re.search(r"snakemake -n +# dry run: lists the (\d+) training jobs", readme)
    assert claimed, "the README's dry-run line is gone"
    r = snakemake(clone, "-n")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(train_jobs(r.stdout)) == int(claimed.group(1)) == 82


FORMS = [
    # (the command line after `snakemake`, training jobs expected)
    (["--cores", "all", "--resources", "gpu=1", "--keep-going"], 82),
    (["--cores", "all", "--resources", "gpu=4", "--keep-going"], 82),
    (["--workflow-profile", "workflow/profiles/default"], 82),
    (["--cores", "all", "--config", "train={device: cpu, gpu: 0}"], 82),
    (["all", "--cores", "all", "--resources", "gpu=4"], 82),
    (["all", "--cores", "all", "--resources", "gpu=1", "--config", "mlflow={uri: http://tracking:5000}",
      "data_dir=/shared/data"], 82),
    (["--cores", "all", "--resources", "gpu=1", "--keep-going", "--config", FMNIST_MLP], 0),
    (["--workflow-profile", "workflow/profiles/default", "--config", FMNIST_MLP], 0),
    (["--cores", "2", "--workflow-profile", "workflow/profiles/default",
      "--config", FMNIST_MLP, "train={device: cpu, gpu: 0, threads: 2}"], 0),
    (["--cores", "all", "--config", "select={datasets: [MNIST, KuzushijiMNIST]}"], 18),
    (["--cores", "all", "--config", "select={models: [mlp], losses: [predsim]}"], 4),
    (["--cores", "all", "--config", "select={cells: [cifar10-vgg11b-x3-*]}", "seeds=[1,2,3]"], 15),
    (["--cores", "all", "--config", "seeds=[1,2]"], 82 + 86),
    pytest.param(["--profile", "workflow/profiles/slurm", "all"], 82,
                 marks=pytest.mark.skipif(not HAS_SLURM_PLUGIN, reason="no SLURM executor plugin")),
    pytest.param(["--profile", "workflow/profiles/slurm", "all", "--config", FMNIST_MLP], 0,
                 marks=pytest.mark.skipif(not HAS_SLURM_PLUGIN, reason="no SLURM executor plugin")),
]


@pytest.mark.parametrize("args, expected", FORMS, ids=lambda a: " ".join(a) if isinstance(a, list) else str(a))
def test_documented_forms_schedule_only_unfinished_runs(clone, args, expected):
    r = snakemake(clone, "-n", *args)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    jobs = train_jobs(r.stdout)
    assert len(jobs) == expected, sorted(jobs)
    for out, reason in jobs.items():
        assert reason.startswith(f"Missing output files: {out}"), (out, reason)
    for cell in COMMITTED:
        assert f"results/full/runs/{cell}/seed1/metrics.json" not in r.stdout
    if expected == 0:
        assert "prepare_data" not in r.stdout and "tracking_init" not in r.stdout
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True)
    assert status.stdout == "", status.stdout                 # a dry run writes nothing


@pytest.mark.slow
@needs_fmnist
def test_changed_row_of_a_committed_cell_keeps_the_old_run_whole(tmp_path):
    """Change a committed cell's row (its epochs), run the README's command for it: the
    finished run is moved aside, metrics.json and all, before the new run starts; every
    other committed run is untouched; the next run of the same command trains nothing."""
    root = git_clone(tmp_path / "locallearn")
    runs = root / "results" / "full" / "runs"
    committed = {c: (runs / c / "seed1" / "metrics.json").read_bytes() for c in COMMITTED}
    cells = root / "workflow" / "config" / "cells.tsv"
    lines = cells.read_text().splitlines()
    header = lines[0].split("\t")
    for i, line in enumerate(lines):
        row = dict(zip(header, line.split("\t")))
        if row["cell"] == "fmnist-mlp-pred":
            row["epochs"], row["milestones"] = "1", "1"
            lines[i] = "\t".join(row[c] for c in header)
    cells.write_text("\n".join(lines) + "\n")
    command = ["--cores", "1", "--config", "select={cells: [fmnist-mlp-pred]}",
               "train={device: cpu, gpu: 0, threads: 1, extra_args: [--max-train-examples, 512, "
               "--max-test-examples, 256]}"]
    r = snakemake(root, *command, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]

    moved = list((runs / "fmnist-mlp-pred").glob("seed1.replaced-*"))
    assert len(moved) == 1 and (moved[0] / "metrics.json").read_bytes() == committed["fmnist-mlp-pred"]
    record = json.loads((moved[0] / "replaced.json").read_text())
    assert record["finished"] is True and record["test_error"] == 8.58
    new = json.loads((runs / "fmnist-mlp-pred" / "seed1" / "metrics.json").read_text())
    assert new["epochs"] == 1 and new["config"]["max_train_examples"] == 512
    for c in COMMITTED[:1] + COMMITTED[2:]:
        assert (runs / c / "seed1" / "metrics.json").read_bytes() == committed[c], c

    stamp = hashlib.sha256((runs / "fmnist-mlp-pred" / "seed1" / "metrics.json").read_bytes()).hexdigest()
    r = snakemake(root, *command, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert not re.search(r"^(?:local)?rule (train|set_aside):", r.stdout, re.M)
    assert hashlib.sha256((runs / "fmnist-mlp-pred" / "seed1" / "metrics.json").read_bytes()).hexdigest() == stamp
    assert len(list((runs / "fmnist-mlp-pred").glob("seed1.replaced-*"))) == 1


def test_dry_run_prints_every_training_command_to_paste(clone):
    """`snakemake -n -p` on a fresh clone shows each training job's command, and one of
    them pasted into a shell as printed (here a quick-budget job, from the clone's root)
    makes the run that the workflow would make: same folder, same recipe hash."""
    r = snakemake(clone, "-n", "-p")
    assert r.returncode == 0, r.stderr[-3000:]
    commands = [ln.split("Shell command: ", 1)[1] if "Shell command: " in ln else ln
                for ln in r.stdout.splitlines() if re.search(r"-m locallearn train .*--out ", ln)]
    assert len(commands) == len(train_jobs(r.stdout)) == 82
    assert all("--job-log results/full/logs/train/" in c for c in commands)
    assert not any("PASSWORD" in c or "@" in c.split("--mlflow-uri", 1)[-1].split()[0] for c in commands)

    if not FMNIST_DEBIAN.exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    budget = "quick={epochs: 1, max_train_examples: 256, max_test_examples: 256, select: {cells: [fmnist-mlp-sim]}}"
    r = snakemake(clone, "-n", "-p", "quick", "--config", budget)
    [cmd] = [ln.split("Shell command: ", 1)[-1] for ln in r.stdout.splitlines() if "-m locallearn train " in ln]
    p = subprocess.run(["bash", "-c", f"{cmd} --mlflow-uri ''"], cwd=clone, env=env_for(clone),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    run = clone / "results" / "quick" / "runs" / "fmnist-mlp-sim" / "seed1"
    done = json.loads((run / "metrics.json").read_text())
    job_log = (clone / "results" / "quick" / "logs" / "train" / "fmnist-mlp-sim" / "seed1.log").read_text()
    assert done["epochs"] == 1 and "[fmnist-mlp-sim-s1] " in job_log and "\n# 20" not in "\n" + job_log
    r = snakemake(clone, "-n", "quick", "--config", budget)   # the workflow counts it as its own run
    assert r.returncode == 0 and not train_jobs(r.stdout), r.stdout[-3000:]
    shutil.rmtree(clone / "results" / "quick")


def report_categories(root: Path) -> dict:
    html = (root / "report.html").read_text()
    return json.loads(re.search(r"var categories = (\{.*?\});\n", html).group(1))


def test_plain_report_works_on_a_fresh_clone_and_after_a_partial_run(tmp_path):
    """`snakemake --report report.html`, no target, no --config: on a fresh clone it
    reports the committed runs (their curves and per-layer figures, the scatter, the
    tables with the list of cells not yet run); after a run finished since (its figures
    not yet drawn) it still works; once `tables` has redrawn, the new run is in it."""
    root = git_clone(tmp_path / "locallearn")
    r = snakemake(root, "--report", "report.html")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    cats = report_categories(root)
    for category, folder in (("Learning curves", "curves"), ("Per-layer errors", "layers")):
        assert list(cats[category]) == ["FashionMNIST"]
        assert sorted(cats[category]["FashionMNIST"]) == sorted(f"results/full/figures/{folder}/{c}.png" for c in COMMITTED)
    assert sorted(cats["Tables"]["Other"]) == [f"results/full/tables/{t}.md" for t in ("pending", "summary", "tables")]
    assert "cifar100-mlp-backprop" in (root / "results" / "full" / "tables" / "pending.md").read_text()

    new = root / "results" / "full" / "runs" / "cifar100-mlp-backprop" / "seed1"   # a run that finished since
    shutil.copytree(REPO / "tests" / "fixtures" / "runs" / "cifar100-mlp-backprop" / "seed1", new)
    r = snakemake(root, "--report", "report.html")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "CIFAR100" not in report_categories(root)["Learning curves"]
    r = snakemake(root, "--cores", "1", "tables")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    r = snakemake(root, "--report", "report.html")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    cats = report_categories(root)
    assert cats["Learning curves"]["CIFAR100"] == ["results/full/figures/curves/cifar100-mlp-backprop.png"]
    assert cats["Per-layer errors"]["CIFAR100"] == ["results/full/figures/layers/cifar100-mlp-backprop.png"]
    assert "cifar100-mlp-backprop" not in (root / "results" / "full" / "tables" / "pending.md").read_text()
