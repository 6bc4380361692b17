"""`locallearn train`: one run, from flags to metrics.json. The trainer owns its run
folder; the workflow only schedules (it asks runstate.run_state which runs to train).

In the order a run needs it:
1. the folder's fate (runstate.run_state): finished (recognised, not trained again),
   another recipe (set aside whole, then this recipe starts), or start / resume;
2. the start record (atomic) and train.log (one header per attempt, all output copied);
3. the machine: GPU lease(s), threads, device;
4. sequential: data, model, engine, then the run loop (train/fit.py);
   pipelined (--pipeline-stages S): torchrun starts S stage processes (train/pipeline.py),
   each going through the same folder and loop.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..runs import runstate
from ..atomic import atomic_write_json
from ..recipe.config import argv_of
from ..credentials import redact_uri
from ..errors import ForeignCheckpointError
from ..faults import fault
from ..runs.rundir import RunFolder
from ..runs.trainlog import copy_output, named, train_log


def run(cfg, argv: list[str] | None = None, draw_curve=None) -> dict:
    """Train (or resume, or recognise as finished) the run in cfg.out; return metrics.
    `argv`: the command line, for train.log's header (default: rebuilt from cfg).
    `draw_curve(path, metrics)`: draws the run's curve.png (`locallearn train` hands over
    report/figures.py's draw_run_curve; None: no curve is drawn)."""
    if cfg.pipeline_stages != 1 and "WORLD_SIZE" in os.environ:
        from .stagelaunch import run_stage   # this process is one stage: its launcher owns the folder
        return run_stage(cfg, draw_curve)
    # as recorded (start.json, train.log): a URI's user-info is never written down
    argv = [redact_uri(a) for a in (argv_of(cfg) if argv is None else argv)]
    with copy_output(cfg.job_log, "w"):
        return own_and_train(cfg, argv, draw_curve)


def own_and_train(cfg, argv: list[str], draw_curve=None) -> dict:
    """Decide the folder's fate, then train in it (steps 1-4 above)."""
    if cfg.pipeline_stages != 1:
        from .stagesplit import check_config
        check_config(cfg)   # refused before the folder is touched
    folder = RunFolder(cfg)
    if cfg.resume:
        folder.latest_checkpoint()   # --resume of another recipe: refused before the folder is touched
    state = runstate.run_state(folder.out, cfg)
    if state.what == runstate.FINISHED:
        from ..track import mlstore
        from ..track.mirror import mirror_finished
        done = folder.finished_metrics()
        print(named(folder.run_name, f"{folder.out}: already finished (test error {done['test_error']:.2f}%)"))
        if draw_curve is not None and not folder.curve.is_file() and mlstore.resolve_uri(cfg.mlflow_uri):
            # the mirror uploads what exists: a curve the folder lacks is drawn first
            draw_curve(folder.curve, {**done, "run_name": runstate.recorded_run_name(folder.out, done)})
        mirror_finished(cfg, folder.out)
        return done
    if state.what == runstate.REPLACE:
        set_aside(folder.out, state.why, argv)
    folder.prepare()
    if state.what == runstate.RESUME and state.recorded is None and not cfg.resume:
        verify_unrecorded_checkpoint(folder, argv)
    with train_log(folder.out / runstate.TRAIN_LOG, argv):
        if state.what != runstate.RESUME or state.recorded is None:   # a resumed run keeps its own
            runstate.write_start_record(folder.out, cfg, argv)
        fault("kill-after-start-record", 0)
        if cfg.pipeline_stages != 1:
            from ..host.machine import lease_devices
            from .stagelaunch import launch
            lease_devices(cfg, cfg.pipeline_stages)   # its open lock files hold the cards until the process ends
            return launch(cfg, folder)
        return train_here(cfg, folder, draw_curve)


def set_aside(out: Path, why: str, argv: list[str], to: Path | None = None) -> Path:
    aside = runstate.set_aside(out, why, to, new_argv=argv)
    print(f"locallearn: {why}: moved whole to {aside} (see its {runstate.REPLACED})", file=sys.stderr, flush=True)
    return aside


def set_aside_only(cfg, argv: list[str]) -> None:
    """--set-aside-to DIR (the workflow's set_aside rule, which runs before Snakemake may
    delete a declared metrics.json): move a run of another recipe from --out to DIR and
    stop. Where the folder turns out not to need it, DIR/replaced.json says so."""
    to = Path(cfg.set_aside_to)
    state = runstate.run_state(cfg.out, cfg)
    if state.what == runstate.REPLACE:
        set_aside(Path(cfg.out), state.why, argv, to)
        return
    atomic_write_json(to / runstate.REPLACED,
                      {"moved": None, "why": f"nothing set aside ({state.what}): {state.why}", "new_argv": argv})
    print(f"locallearn: nothing to set aside: {state.why}", file=sys.stderr)


def verify_unrecorded_checkpoint(folder: RunFolder, argv: list[str]) -> None:
    """A folder without a readable start record (torn, or made before start records):
    its checkpoint decides. One of this recipe is resumed; one of another recipe is set
    aside with the folder, as a start record of another recipe would have had it."""
    try:
        folder.latest_checkpoint()
    except ForeignCheckpointError as e:
        set_aside(folder.out, str(e), argv)
        folder.prepare()


def train_here(cfg, folder: RunFolder, draw_curve=None) -> dict:
    """A sequential run in this process."""
    from ..data.batches import load_splits
    from .engines import ENGINES
    from .placement import make_model
    from .fit import fit
    from ..host.machine import lease_devices, prepare
    from .fit import startup_line
    lease_devices(cfg, 1)   # its open lock file holds the card until the process ends
    device = prepare(cfg, cfg.threads)
    train, test, spec = load_splits(cfg, device)
    engine = ENGINES[cfg.engine](cfg, make_model(cfg, spec, device), device)
    print(named(folder.run_name, startup_line(cfg, device, engine.model, train, test)), flush=True)
    return fit(cfg, folder, engine, train, test, draw_curve)
