"""`locallearn bench --grid`: the grid's cost, measured. For each distinct network x loss
x input shape of cells.tsv (gridcost.step_key) it times --steps training steps of its
recipe (after as many warm-up steps) and a batch of test images, on synthetic inputs of
its dataset's shape with its augmentation, on the device at hand in --precision. It
writes seconds per epoch and device hours per cell and in all to
<results>/grid-cost/<cuda|cpu>-<precision>.json (recipe/gridcost.py, the data; the workflow's
`runtime` resource reads it) and prints the README table.

Where bench/paths.py compares training paths of one recipe, this measures one path (the
fused engine, as the workflow trains) over the whole grid.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import time
from pathlib import Path

import torch

from ..recipe import gridcost
from ..host import precision
from ..recipe.config import build_parser, validate
from ..host.environment import device_name
from ..errors import ConfigError


def time_recipe(cfg, spec, device, steps: int) -> dict:
    """Seconds per training step and per test image of `cfg`'s recipe on `device`, on
    synthetic uint8 inputs of `spec`'s shape with the recipe's augmentation, through the
    real epoch loop (epochs.train_epoch): one epoch of `steps` steps warms up (allocator,
    cuDNN, the CUDA graph capture), the next is timed; one test batch warms up, the
    next is timed."""
    from ..data.batches import Augment, DeviceSplit
    from ..train.engines import ENGINES
    from ..train.placement import make_model
    from ..train.epochs import evaluate, train_epoch

    precision.apply(cfg.precision)
    autocast = precision.autocast(cfg.precision, device)
    model = make_model(cfg, spec, device)
    engine = ENGINES["fused"](cfg, model, device)
    engine.set_lr(cfg.lr)
    g = torch.Generator().manual_seed(0)

    def split(n, augment=None):
        imgs = torch.randint(0, 256, (n, spec.channels, spec.size, spec.size), dtype=torch.uint8, generator=g)
        return DeviceSplit(imgs, torch.randint(0, spec.num_classes, (n,), generator=g), spec, device, augment)

    train = split(steps * cfg.batch_size, Augment(crop_padding=spec.crop_padding, hflip=spec.hflip,
                                                  cutout_length=cfg.length if cfg.cutout else 0,
                                                  n_holes=cfg.n_holes))
    test = split(cfg.eval_batch_size)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    seconds = []
    for epoch in (1, 2):
        sync()
        t0 = time.perf_counter()
        train_epoch(cfg, engine, train, epoch, autocast)
        sync()
        seconds.append(time.perf_counter() - t0)
    evals = []
    for _ in range(2):
        t0 = time.perf_counter()
        evaluate(cfg, engine, test, autocast)  # reads its results: synchronised
        evals.append(time.perf_counter() - t0)
    return {"seconds_per_step": seconds[1] / steps, "seconds_per_test_image": evals[1] / test.n}


def grid_bench(rows: list[dict], *, steps: int, prec: str, device_flags: list[str], scale: float = 1.0,
               limit: int = 0, log=print) -> dict:
    """The grid-cost table (recipe/gridcost.py) of `rows`: each distinct step_key timed once,
    with the first of its rows' recipe."""
    from ..recipe.cells import recipe_args
    from ..recipe.specs import run_spec
    from ..host.machine import resolve_device

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(gridcost.step_key(r), []).append(r)
    keys = list(groups)[:limit] if limit else list(groups)
    device, batch = None, 128
    cells = {}
    for i, key in enumerate(keys, 1):
        first = groups[key][0]
        cfg = validate(build_parser().parse_args(recipe_args(first) + ["--precision", prec, *device_flags]))
        if scale != 1:  # shrunken networks: for testing the command, never for runtimes
            cfg.feat_mult *= scale
            cfg.num_hidden = max(1, round(cfg.num_hidden * scale))
        device, batch = device or resolve_device(cfg), cfg.batch_size
        spec = run_spec(cfg)
        timing = time_recipe(cfg, spec, device, steps)
        for r in groups[key]:
            entry = {"timed_as": first["cell"], **timing}
            own = run_spec(validate(build_parser().parse_args(recipe_args(r))))   # its split sizes
            entry["seconds_per_epoch"] = gridcost.epoch_seconds(entry, own.train_size, own.test_size,
                                                                cfg.batch_size)
            entry["epochs"] = int(r["epochs"])
            entry["hours"] = entry["epochs"] * entry["seconds_per_epoch"] / 3600
            cells[r["cell"]] = entry
        log(f"[{i}/{len(keys)}] {first['cell']} (+{len(groups[key]) - 1} alike): "
            f"{timing['seconds_per_step'] * 1000:.2f} ms/step, "
            f"{cells[first['cell']]['seconds_per_epoch']:.1f} s/epoch, {cells[first['cell']]['hours']:.2f} h")
    device = device or torch.device("cpu")
    name = device_name(device) if device.type == "cuda" else \
        f"CPU {device_name(device)}, {torch.get_num_threads()} thread(s)"
    return {"device": name, "device_kind": device.type, "torch": torch.__version__,
            "precision": prec, "flags": device_flags, "date": time.strftime("%Y-%m-%d", time.gmtime()), "steps": steps,
            "batch_size": batch, "scale": scale, "networks_timed": len(keys), "networks": len(groups),
            "cells": cells, "total_hours": sum(e["hours"] for e in cells.values())}


def cli_grid_bench(argv: list[str]) -> int:
    from ..atomic import atomic_write_text
    from ..recipe.cells import read_cells

    from ..recipe.config import HelpFormatter
    p = argparse.ArgumentParser(prog="locallearn bench --grid", formatter_class=HelpFormatter,
                                description="Time every distinct network x loss of cells.tsv; write the grid cost "
                                            "(seconds per epoch, hours per cell and in all).")
    # the workflow's grid, from the working directory (the repository root), as cli/report.py's
    # defaults for `locallearn tables`: the package itself never reads workflow/
    p.add_argument("--cells", default="workflow/config/cells.tsv", help="the grid")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per network (as many warm up)")
    p.add_argument("--precision", default="fp32", choices=precision.PRECISIONS, help="as locallearn train")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    p.add_argument("--select", nargs="+", default=[], metavar="GLOB", help="only cells matching these names")
    p.add_argument("--limit", type=int, default=0, help="time only the first N distinct networks (0: all)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply feat_mult and num_hidden (a quick test of the command; such a table "
                        "is never used for runtimes)")
    p.add_argument("--channels-last", action="store_true", help="as locallearn train (host/precision.py)")
    p.add_argument("--cudnn-benchmark", action="store_true", help="as locallearn train (host/precision.py)")
    p.add_argument("--results", default="results", help="writes <results>/grid-cost/<device>-<precision>.json")
    p.add_argument("--out", default=None, help="write the table here instead")
    args = p.parse_args(argv)
    if args.steps < 1:
        raise ConfigError(f"--steps: must be >= 1, got {args.steps}")
    rows = read_cells(args.cells)
    if args.select:
        rows = [r for r in rows if any(fnmatch.fnmatchcase(r["cell"], g) for g in args.select)]
        if not rows:
            raise ConfigError(f"--select {' '.join(args.select)}: matches no cell of {args.cells}")
    if args.threads:
        torch.set_num_threads(args.threads)
    flags = ["--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
    flags += [f for f, on in (("--channels-last", args.channels_last), ("--cudnn-benchmark", args.cudnn_benchmark))
              if on]
    table = grid_bench(rows, steps=args.steps, prec=args.precision, device_flags=flags, scale=args.scale,
                       limit=args.limit)
    out = args.out or gridcost.table_path(args.results, table["device_kind"], args.precision)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out), json.dumps(table, indent=1) + "\n")
    print(f"# wrote {out}" + (f" (scale {args.scale}: a test, not used for runtimes)" if args.scale != 1 else ""))
    print(gridcost.markdown(table, rows), end="")
    return 0
