"""The jobs that call the locallearn CLI (rules prepare_data, tracking_init, train), run
through the shim run_locallearn.py. Values that do not change a run's numbers (data
dir, tracking URI, device, threads, pipeline stages) are read here from the config
rather than declared as params, so changing them never makes Snakemake retrain a
finished cell. The command line heads the job's log; the job fails with the command's
exit status."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import harness  # puts the repository on sys.path: locallearn's torch-free modules
from locallearn.credentials import redact_uri


class Job:
    def __init__(self, sm):
        self.sm = sm
        self.config = config = sm.config
        self.rows = harness.load_cells(harness.cells_path(config))
        self.presets = harness.make_presets(config, self.rows)
        # command null: this Python with `-m locallearn`, the repository first on PYTHONPATH,
        # so jobs run the checkout's package whether or not it is pip-installed (conda envs
        # are not).
        self.command = shlex.split(config["command"]) if config["command"] else [sys.executable, "-m", "locallearn"]
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(harness.REPO), os.environ.get("PYTHONPATH", "")) if p))
        self.log_path = Path(sm.log[0])
        self.log_path.parent.mkdir(parents=True, exist_ok=True)

    def track_to(self, uri: str) -> None:
        """The job logs to `uri`, handed over in its environment (MLFLOW_TRACKING_URI) and
        not on its command line, which heads the log and is visible to every user in the
        process list; only the redacted form is ever written."""
        self.env["MLFLOW_TRACKING_URI"] = uri

    def run(self, args: list[str], command: list[str] | None = None) -> None:
        cmd = (command or self.command) + args
        with open(self.log_path, "a") as log:
            log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
            log.flush()
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
            log.write(f"# exit status {rc}\n")
        if rc != 0:
            tail = self.log_path.read_text().splitlines()[-15:]
            sys.stderr.write("\n".join(tail) + "\n")
            sys.exit(f"{shlex.join(cmd)} failed with exit status {rc}; log: {self.log_path}")


def write_json(path: str, data: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def prepare_data(job: Job) -> None:
    sm, config = job.sm, job.config
    dataset = sm.wildcards.dataset
    args = ["data", "prepare", dataset, "--data-dir", harness.data_dir(config)]
    if config["download"]:
        args.append("--download")
    if config["data_source"]:
        args += ["--source", config["data_source"]]
    job.run(args)
    write_json(sm.output[0], {"dataset": dataset, "data_dir": harness.data_dir(config)})


def tracking_init(job: Job) -> None:
    sm, config = job.sm, job.config
    preset = job.presets[sm.wildcards.preset]
    uri = harness.tracking_uri(config, preset)
    Path(preset.results).mkdir(parents=True, exist_ok=True)
    job.track_to(uri)
    job.run(["tracking", "init", "--experiment", preset.experiment])
    write_json(sm.output[0], {"uri": redact_uri(uri), "experiment": preset.experiment})


def train(job: Job) -> None:
    sm, config = job.sm, job.config
    preset = job.presets[sm.wildcards.preset]
    cell, seed = sm.wildcards.cell, sm.wildcards.seed
    row = next(r for r in job.rows if r["cell"] == cell)
    tags = {"cell": cell, "seed": seed, "preset": preset.name, "dataset": row["dataset"],
            "model": row["model"], "network": row["network"], "loss": row["loss"]}
    args = ["train", *sm.params.args, "--seed", seed, "--out", str(Path(sm.output[0]).parent),
            "--data-dir", harness.data_dir(config),
            "--mlflow-experiment", preset.experiment, "--run-name", f"{cell}-s{seed}"]
    for k, v in tags.items():
        args += ["--tag", f"{k}={v}"]
    job.track_to(harness.tracking_uri(config, preset))
    # A pipelined cell: S stage processes started by torchrun (one node; its rendezvous
    # is what several nodes would use too), each with its share of the job's threads and,
    # on GPUs, one of S cards leased for the job (the trainer leases none under torchrun).
    stages = harness.pipeline_stages(config, job.rows)[cell]
    args += ["--device", preset.device, "--threads", str(max(1, sm.threads // stages))]
    command, lease = None, None
    if stages > 1:
        args += ["--pipeline-stages", str(stages)]
        if preset.device in ("auto", "cuda") and preset.gpu > 0 and "CUDA_VISIBLE_DEVICES" not in os.environ:
            from locallearn.gpulease import lease_gpus
            lease = lease_gpus(stages, label=f"{cell} seed {seed}")  # held until the job ends
            if lease:
                job.env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
                job.env["CUDA_DEVICE_ORDER"] = os.environ["CUDA_DEVICE_ORDER"]
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc-per-node={stages}", "--no-python", *job.command]
    # The recipe flags of the run in this folder. Snakemake reruns a finished cell when
    # they change (its only params); the trainer refuses to resume a checkpoint of another
    # config, so the old run is moved aside (kept, never deleted) and this one starts fresh.
    run_dir = Path(sm.output[0]).parent
    stamp = run_dir / "harness.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("args") != list(sm.params.args):
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(run_dir, aside)
        with open(job.log_path, "a") as log:
            log.write(f"# the recipe flags changed: previous run moved to {aside}\n")
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"args": list(sm.params.args)}, indent=1) + "\n")
    job.run(args, command)
    if not Path(sm.output[0]).is_file():
        sys.exit(f"{cell} seed {seed}: the trainer exited 0 without writing {sm.output[0]}")


ACTIONS = {"prepare_data": prepare_data, "tracking_init": tracking_init, "train": train}


def main(sm) -> None:
    if sm.rule not in ACTIONS:
        sys.exit(f"jobs.py: no action for rule {sm.rule!r}")
    ACTIONS[sm.rule](Job(sm))
