"""The torchrun launch of a pipelined run (train/pipeline.py): `launch` starts
`torchrun --nproc-per-node S -m locallearn train ...` on this machine and watches it;
under torchrun every process is one stage (`run_stage`), and a stage's own error reaches
the launcher, which raises it again as a sequential run would.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from ..recipe.config import argv_of
from ..errors import ConfigError, LocallearnError, PipelineError, error_class
from ..runs.rundir import RunFolder
from ..runs.trainlog import named
from .pipeline import peer_timeout, stage_main
from .stagesplit import check_config


# ============================================================================ launching
STAGE_ERRORS_ENV = "LOCALLEARN_STAGE_ERRORS"   # folder where a stage leaves its own error
_TEE = re.compile(r"^\[[A-Za-z_]*(\d+)\]:(.*)$", re.S)   # torchrun --tee: "[default1]:line"


def run_stage(cfg, draw_curve=None) -> dict:
    """This process is one stage of a run that torchrun started (WORLD_SIZE set): by
    `launch` below, or by hand on several machines (docs: several machines).
    `draw_curve`: fit's hook."""
    check_config(cfg)
    world = cfg.pipeline_stages
    ws, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    if ws != world:
        raise ConfigError(f"--pipeline-stages {world} but torchrun started {ws} processes "
                          f"(use --nproc-per-node {world} on one node, or nodes x nproc = {world})")
    try:
        metrics = stage_main(cfg, rank, world, int(os.environ.get("LOCAL_RANK", rank)), "env://", draw_curve)
    except LocallearnError as e:   # the launcher raises it again, as a sequential run would
        if os.environ.get(STAGE_ERRORS_ENV):
            errors = Path(os.environ[STAGE_ERRORS_ENV])
            (errors / f"stage{rank}.json").write_text(json.dumps({"type": type(e).__name__, "message": str(e)}))
        raise
    except Exception as e:
        raise PipelineError(f"stage {rank}: a peer stage died or hung ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); rerun the same command to "
                            "resume from the last common checkpoint") from None
    return metrics or {}   # ranks > 0: rank 0 wrote metrics.json


def launch(cfg, folder: RunFolder) -> dict:
    """`locallearn train --pipeline-stages S` outside torchrun: S stage processes started
    by torchrun (one node), their output passed on as ours. A stage's own error (a full
    disk, a NaN) is raised here as a sequential run raises it; a dead stage is named."""
    check_config(cfg)
    world = cfg.pipeline_stages
    with tempfile.TemporaryDirectory(prefix="locallearn-stages-") as tmp:
        errors, logs = Path(tmp, "errors"), Path(tmp, "logs")
        errors.mkdir()
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
               "--redirects", "3", "--tee", "3", "--log-dir", str(logs),
               "-m", "locallearn", "train", *argv_of(cfg)]
        env = dict(os.environ, **{STAGE_ERRORS_ENV: str(errors)})
        print(named(folder.run_name, f"pipeline: {world} stage processes: {shlex.join(cmd)}"), flush=True)
        launcher_lines = []
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, text=True, bufsize=1)
        try:
            for line in proc.stdout:
                m = _TEE.match(line)
                if m:   # a stage's own output
                    sys.stdout.write(m.group(2))
                    sys.stdout.flush()
                else:   # torchrun's: kept for the failure report
                    launcher_lines.append(line)
            code = proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=peer_timeout() + 10)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        if code != 0:
            reported = sorted(errors.glob("stage*.json"))
            if reported:
                e = json.loads(reported[0].read_text())
                raise error_class(e["type"])(e["message"])
            raise PipelineError(_failure(launcher_lines, world, code, folder))
    done = folder.finished_metrics()
    if done is None:
        raise PipelineError(f"the pipeline ended without writing {folder.metrics_path}")
    return done


def _failure(lines: list[str], world: int, code: int, folder: RunFolder) -> str:
    """The first failed stage and how, from torchrun's failure report."""
    text = "".join(lines)
    root = text[text.find("Root Cause"):] if "Root Cause" in text else text
    rank = re.search(r"rank\s*:\s*(\d+)", root)
    status = re.search(r"exitcode\s*:\s*(-?\d+)", root)
    if rank and status:
        c = int(status.group(1))
        how = f"was killed by signal {-c}" if c < 0 else f"exited with status {c}"
        what = f"pipeline stage {rank.group(1)} of {world} {how}"
    else:
        tail = " | ".join(ln.strip() for ln in lines[-3:] if ln.strip())
        what = f"torchrun exited with status {code} ({tail[:300]})"
    return (f"{what}; the other stages stopped; rerun the same command to resume from the last "
            f"common checkpoint in {folder.out}")
