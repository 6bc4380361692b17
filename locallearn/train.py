"""`locallearn train`: one run, from flags to metrics.json.

Set-up in the order a run needs it (the output folder, a finished run recognised,
the host and device, data, model, engine), then the run loop (fit.py). With
--pipeline-stages S > 1 the run is split over S processes (pipeline.py), each going
through the same folder and loop.
"""
from __future__ import annotations

from .engines import ENGINES, make_model
from .fit import fit
from .host import configure_host, lease_device, resolve_device
from .rundir import RunFolder
from .startup import startup_line


def run(cfg) -> dict:
    """Train (or resume, or recognise as finished) the run in cfg.out; return metrics."""
    if getattr(cfg, "pipeline_stages", 1) != 1:  # one process per stage (issue 8)
        from .pipeline import run_pipeline
        return run_pipeline(cfg)
    folder = RunFolder(cfg)
    folder.prepare()
    done = folder.finished()
    if done is not None:
        return done
    configure_host(cfg.threads)
    lease = lease_device(cfg)  # noqa: F841  (held, with its lock file, for the life of the run)
    device = resolve_device(cfg)
    from .batches import load_splits
    train, test, spec = load_splits(cfg, device)
    engine = ENGINES[cfg.engine](cfg, make_model(cfg, spec, device), device)
    print(startup_line(cfg, device, engine.model, train, test), flush=True)
    return fit(cfg, folder, engine, train, test)
