"""The jobs of the rules prepare_data, tracking_init, set_aside and train, run through
the shim run_locallearn.py. Values that do not change a run's numbers (data dir,
tracking URI, device, threads, pipeline stages) are read here from the config rather
than declared as params. Which runs are trained at all is decided before the DAG
(plan.run_state); a finished run never reaches these jobs.

Each command is headed, in its log, by the time, the host and the command line; the
job fails with the command's exit status. A training run's output goes to train.log in
its run folder, appended across attempts and resumes (Snakemake empties a rule's log
before each attempt); the rule's log gets a copy of the attempt."""
from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import plan  # puts the repository on sys.path: locallearn's torch-free modules
from locallearn.credentials import redact_uri


class Job:
    def __init__(self, sm):
        self.sm = sm
        self.config = config = sm.config
        self.rows = plan.load_cells(plan.cells_path(config))
        self.presets = plan.make_presets(config, self.rows)
        # command null: this Python with `-m locallearn`, the repository first on PYTHONPATH,
        # so jobs run the checkout's package whether or not it is pip-installed (conda envs
        # are not).
        self.command = shlex.split(config["command"]) if config["command"] else [sys.executable, "-m", "locallearn"]
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(plan.REPO), os.environ.get("PYTHONPATH", "")) if p))
        self.log_path = Path(sm.log[0])
        self.log_path.parent.mkdir(parents=True, exist_ok=True)

    def track_to(self, uri: str) -> None:
        """The job logs to `uri`, handed over in its environment (MLFLOW_TRACKING_URI) and
        not on its command line, which heads the log and is visible to every user in the
        process list; only the redacted form is ever written."""
        self.env["MLFLOW_TRACKING_URI"] = uri

    def run(self, args: list[str], command: list[str] | None = None, keep: Path | None = None) -> None:
        """Run the command; its output goes to `keep` (appended, kept across attempts)
        if given, then is copied to the rule's log, else straight to the rule's log."""
        cmd = (command or self.command) + args
        header = f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {socket.gethostname()}: {shlex.join(cmd)}\n"
        out_path = keep or self.log_path
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if keep:
            with open(self.log_path, "a") as log:
                log.write(header + f"# output: {keep} (this attempt is copied here when it ends)\n")
        with open(out_path, "a") as out:
            start = out.tell()
            out.write(header)
            out.flush()
            rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
            out.write(f"# exit status {rc}\n")
        if keep:
            with open(keep, "rb") as src, open(self.log_path, "ab") as log:
                src.seek(start)
                log.write(src.read().split(b"\n", 1)[1])   # the header is there already
        if rc != 0:
            tail = self.log_path.read_text().splitlines()[-15:]
            sys.stderr.write("\n".join(tail) + "\n")
            sys.exit(f"{shlex.join(cmd)} failed with exit status {rc}; log: {out_path}")


def write_json(path: str, data: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def prepare_data(job: Job) -> None:
    sm, config = job.sm, job.config
    dataset = sm.wildcards.dataset
    args = ["data", "prepare", dataset, "--data-dir", plan.data_dir(config)]
    if config["download"]:
        args.append("--download")
    if config["data_source"]:
        args += ["--source", config["data_source"]]
    job.run(args)
    write_json(sm.output[0], {"dataset": dataset, "data_dir": plan.data_dir(config)})


def tracking_init(job: Job) -> None:
    sm, config = job.sm, job.config
    preset = job.presets[sm.wildcards.preset]
    uri = plan.tracking_uri(config, preset)
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
            "--data-dir", plan.data_dir(config),
            "--mlflow-experiment", preset.experiment, "--run-name", f"{cell}-s{seed}"]
    if config["mlflow"]["system_metrics"]:
        args.append("--mlflow-system-metrics")
    for k, v in tags.items():
        args += ["--tag", f"{k}={v}"]
    job.track_to(plan.tracking_uri(config, preset))
    # A pipelined cell: S stage processes started by torchrun (one node; its rendezvous
    # is what several nodes would use too), each with its share of the job's threads and,
    # on GPUs, one of S cards leased for the job (the trainer leases none under torchrun).
    stages = plan.pipeline_stages(config, job.rows)[cell]
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
    # The flags this folder's run was started with: plan.run_state reads them to tell
    # an unfinished run of this recipe (resumed) from one of another (set aside first).
    run_dir = Path(sm.output[0]).parent
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / plan.STARTED).write_text(json.dumps({"args": [*sm.params.args, "--seed", seed]}, indent=1) + "\n")
    job.run(args, command, keep=run_dir / "train.log")
    if not Path(sm.output[0]).is_file():
        sys.exit(f"{cell} seed {seed}: the trainer exited 0 without writing {sm.output[0]}")


def set_aside(job: Job) -> None:
    """Move a run folder of another recipe to seed<k>.replaced-<time>/ (the output's
    folder, which Snakemake has just created empty) and record it in replaced.json."""
    sm = job.sm
    preset = job.presets[sm.wildcards.preset]
    run_dir = Path(preset.run_dir(sm.wildcards.cell, sm.wildcards.seed))
    aside = Path(sm.output[0]).parent
    record = {"moved": str(run_dir), "to": str(aside), "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "host": socket.gethostname(), "new_recipe_args": list(sm.params.args)}
    metrics = run_dir / plan.METRICS
    if metrics.is_file():
        old = json.loads(metrics.read_text())
        record.update(finished=True, test_error=old.get("test_error"), config_hash=old.get("config_hash"))
    else:
        record["finished"] = False
    if run_dir.exists():
        os.replace(run_dir, aside)  # one rename: the folder is at one place or the other, never lost
    else:
        record["note"] = "the run folder was already gone"
    with open(job.log_path, "a") as log:
        log.write(f"# {record['time']}: {run_dir} (a run of another recipe) moved to {aside}\n")
    write_json(sm.output[0], record)


ACTIONS = {"prepare_data": prepare_data, "tracking_init": tracking_init, "set_aside": set_aside,
           "train": train}


def main(sm) -> None:
    if sm.rule not in ACTIONS:
        sys.exit(f"jobs.py: no action for rule {sm.rule!r}")
    ACTIONS[sm.rule](Job(sm))
