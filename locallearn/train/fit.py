"""The run loop: the first line, schedule, epochs, divergence, history, progress, for a
whole network and for every stage of a pipeline alike (the engine's hooks say where they differ).

Per epoch: set the lr, train, evaluate, turn every stage's sums into one history
entry (on the reporting process), stop every process on a NaN, checkpoint, log to
MLflow, print one line. At the end: the curve (drawn by the hook `draw_curve`, which
`locallearn train` hands over: the trainer imports no reporting), metrics.json, MLflow
FINISHED.
"""
from __future__ import annotations

import bisect
import math
import sys
import time
from datetime import datetime, timezone

from pathlib import Path

import torch

from .. import __version__
from ..host import precision
from .engines import output_scale
from .epochs import evaluate, no_progress, train_epoch
from ..host.environment import describe, git_revision, peak_memory_bytes
from ..errors import CheckpointError, DivergenceError
from ..faults import fault
from ..methods import registry
from ..layout import resolve_data_dir
from ..recipe.cost import head_cost
from ..runs.selection import reported_errors
from ..runs.trainlog import duration, named, terminal
from ..track.live import complete_run, open_run, run_tags


# ------------------------------------------------------------------ the first line
# Printed before the first epoch, so that a log (a terminal, a Snakemake job log, a SLURM
# job log) shows at its top whether the run got the GPU, the precision, the network and
# the data it was meant to get.

def _device_words(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'s' if n != 1 else ''})"
    return str(device)


def startup_line(cfg, device: torch.device, model, train, test) -> str:
    """e.g. `locallearn 0.1.0: mlp on FashionMNIST, predsim | device cpu (2 threads), fp32 |
    params 2,913,290 (network 2,913,290; local heads 0) | data /d: train 60,000, test 10,000 | out /r`.

    `model` is the built network (count_params), `train`/`test` the loaded splits (their
    example counts, after --max-train-examples / --max-test-examples)."""
    backprop, total = model.count_params()
    loss = "global backprop" if cfg.backprop or not model.blocks else cfg.loss_sup + (" (bio)" if cfg.bio else "")
    if cfg.method != "paper" and model.blocks:
        loss = f"{cfg.method}, {len(model.blocks) + 1} local modules"
    return (f"locallearn {__version__}: {cfg.model} on {cfg.dataset}, {loss}"
            f" | device {_device_words(device)}, {cfg.precision}"
            f" | params {total:,} (network {backprop:,}; local heads {total - backprop:,})"
            f" | data {resolve_data_dir(cfg.data_dir)}: train {train.n:,}, test {test.n:,}"
            f" | out {Path(cfg.out).absolute()}")


# ------------------------------------------------------------------ the schedule
WARMUP_EPOCHS, WARMUP_START = 10, 0.01   # AugLocal's train.py, adjust_learning_rate


def lr_at(cfg, epoch: int) -> float:
    """The lr of an epoch, epochs counted from 1.

    milestones: lr * fact ** (number of milestones <= epoch - 1).
    cosine-warmup (AugLocal's train.py with --cos_lr, commit 98c90d6): cos(e) =
    lr/2 * (1 + cos(pi * e / epochs)); epochs 1..10 blend from 0.01 into it,
    cos(e) * (e - 1)/10 + 0.01 * (11 - e)/10; then cos(e)."""
    if cfg.lr_schedule == "cosine-warmup":
        cosine = 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch / cfg.epochs))
        if epoch <= WARMUP_EPOCHS:
            return (cosine * (epoch - 1) / WARMUP_EPOCHS
                    + WARMUP_START * (WARMUP_EPOCHS + 1 - epoch) / WARMUP_EPOCHS)
        return cosine
    return cfg.lr * cfg.lr_decay_fact ** bisect.bisect_right(cfg.lr_decay_milestones, epoch - 1)


def utc_iso(seconds: float) -> str:
    """A time as metrics.json records it: ISO 8601, UTC, whole seconds."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------ what a run prints
# Every line names its run (runs/trainlog.named), so that the lines of jobs running side
# by side can be told apart.


def progress(cfg, run_name: str, epochs_after):
    """How an epoch's batches are watched: a bar on the terminal (--progress-bar, by
    default where stderr is one), written to the terminal itself and so never to
    train.log or a job log; else a heartbeat line every --heartbeat seconds; else nothing.
    `epochs_after(epoch)`: the epochs left after `epoch`, for the run's ETA."""
    screen = terminal(sys.stderr)
    if cfg.progress_bar or (cfg.progress_bar is None and screen.isatty()):
        from tqdm import tqdm
        return lambda it, total, desc: tqdm(it, total=total, desc=named(run_name, desc), leave=False, file=screen)
    if cfg.heartbeat > 0:
        return lambda it, total, desc: heartbeat(it, total, desc, cfg, run_name, epochs_after)
    return no_progress


def heartbeat(batches, total, desc, cfg, run_name, epochs_after):
    """The batches, with a line every cfg.heartbeat seconds: the run, the epoch, batch k of
    n, images/s, and the ETA of the epoch and of the run (its other epochs taken as long as
    this one)."""
    t0 = last = time.perf_counter()
    seen = 0
    for k, batch in enumerate(batches, 1):
        yield batch
        seen += len(batch[1])
        now = time.perf_counter()
        if now - last >= cfg.heartbeat and total:
            last = now
            per_batch = (now - t0) / k
            epoch_left = per_batch * (total - k)
            epoch = int(desc.split()[-1])
            run_left = epoch_left + per_batch * total * epochs_after(epoch)
            print(named(run_name, f"{desc}/{cfg.epochs}: batch {k}/{total}, {seen / (now - t0):.0f} img/s, "
                                  f"epoch ETA {duration(epoch_left)}, run ETA {duration(run_left)}"), flush=True)


def history_entry(cfg, epoch: int, lr: float, parts: list, n_test: int) -> dict:
    """One epoch's history entry from every stage's (train sums, eval sums, timing);
    a whole network is one stage. The last stage holds the output layer."""
    stats = [p[0] for p in parts]
    last = stats[-1]
    seen = last["seen"]
    ce_mean = (last["ce_sum"] / seen).item()
    local_mean = (torch.cat([s["local_sum"] for s in stats]) / seen).tolist()
    local_err = (torch.cat([s["local_wrong"] for s in stats]) * 100 / seen).tolist()
    layers = [i for s in stats for i in s["layers"]]
    # a local classifier's error: the paper's pred decoder, every other method's heads
    has_error = (cfg.loss_sup in ("pred", "predsim") or cfg.method != "paper") and not cfg.bio
    ev = parts[-1][1]
    seconds = max(p[2]["seconds"] for p in parts)
    entry = {"epoch": epoch, "lr": lr, "train_error": last["wrong"].item() * 100 / seen, "train_loss": ce_mean,
             "train_loss_scaled": ce_mean * output_scale(cfg), "local_loss": sum(local_mean),
             "local": [{"layer": i, "loss": local_mean[k], "error": local_err[k] if has_error else None}
                       for k, i in enumerate(layers)],
             "test_error": ev["wrong"] * 100 / n_test, "test_loss": ev["ce_sum"] / n_test,
             "epoch_seconds": seconds, "images_per_second": seen / seconds}
    val = parts[-1][3]
    if val is not None:   # --val-examples: the held-out split, evaluated as the test set
        entry["val_error"] = val["wrong"] * 100 / cfg.val_examples
        entry["val_loss"] = val["ce_sum"] / cfg.val_examples
    if len(parts) > 1:
        entry["stage_wait_seconds"] = [{"recv": p[2]["recv_wait"], "send": p[2]["send_wait"]} for p in parts]
    return entry


def divergence(entry: dict, out, epoch: int, lr: float) -> str | None:
    # the test loss too: a last step that turns the weights to NaN shows only there
    losses = {k: entry[k] for k in ("train_loss", "local_loss", "test_loss")}
    if all(v == v and v not in (float("inf"), float("-inf")) for v in losses.values()):
        return None
    kept = f"the last good checkpoint (epoch {epoch - 1}) is kept" if epoch > 1 else "no checkpoint was written"
    return (f"{out}: training diverged in epoch {epoch} (lr {lr:g}): "
            f"{', '.join(f'{k} {v}' for k, v in losses.items())}; {kept}")


def progress_line(cfg, epoch: int, e: dict, eta: float | None = None) -> str:
    """An epoch's line: the time, the errors, the losses the run has (no local loss under
    global backprop), its speed and, with `eta` (seconds), the run's ETA."""
    local = f" local {e['local_loss']:.4f}" if e["local"] else ""
    line = (f"{time.strftime('%H:%M:%S')} epoch {epoch}/{cfg.epochs} lr {e['lr']:.2e} "
            f"train {e['train_error']:.2f}% test {e['test_error']:.2f}% loss {e['train_loss']:.4f}{local} "
            f"{e['epoch_seconds']:.1f}s {e['images_per_second']:.0f} img/s")
    if "stage_wait_seconds" in e:
        line += " (stage waits recv/send " + " ".join(
            f"s{k}:{w['recv']:.1f}/{w['send']:.1f}s" for k, w in enumerate(e["stage_wait_seconds"])) + ")"
    if eta is not None and epoch < cfg.epochs:
        line += f", run ETA {duration(eta)}"
    return line


def fit(cfg, folder, engine, train, test, draw_curve=None) -> dict | None:
    """Train (or resume) the run in folder with engine; the metrics on the reporting
    process, None on a pipeline's other stages. `draw_curve(path, metrics)` draws the
    finished run's curve.png (report/figures.py's draw_run_curve; None: not drawn)."""
    device, reports = engine.device, engine.reports
    val = train.validation if train is not None else None   # --val-examples: held out of train
    history, wall_before, start = [], 0.0, 1
    started_at = time.time()   # the run's first epoch; a resume keeps the first attempt's
    state = engine.resume(folder)
    if state is not None:
        try:
            engine.load_state_dict(state)
        except (KeyError, ValueError, RuntimeError, TypeError, AttributeError, IndexError) as e:  # e.g. an older version's
            raise CheckpointError(
                f"{folder.out}: the checkpoint of epoch {state['epoch']} does not fit this run's {cfg.engine} "
                f"engine ({type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}); "
                "use another --out, or delete the checkpoint to start over") from None
        history, wall_before, start = state["history"] or [], state["wall_seconds"], state["epoch"] + 1
        started_at = state.get("started_at") or started_at - wall_before   # older checkpoints lack it
        if reports:
            print(named(folder.run_name, f"{folder.out}: resuming after epoch {state['epoch']} of {cfg.epochs}"),
                  flush=True)

    env = describe(device, torch.get_num_threads(), cfg.precision)   # metrics.json and MLflow's env.* tags
    tracker = open_run(cfg, folder.out, folder.run_name, env) if reports else None
    if tracker is not None:
        tracker.log_history(history)
    precision_used = precision.apply(cfg.precision)  # this process's TF32 switches (every stage's)
    autocast = precision.autocast(cfg.precision, device)
    watch = progress(cfg, folder.run_name, lambda epoch: cfg.epochs - epoch) if reports else no_progress
    t_start = time.perf_counter()
    try:
        for epoch in range(start, cfg.epochs + 1):
            lr = lr_at(cfg, epoch)
            engine.set_lr(lr)
            t0 = time.perf_counter()
            sums = train_epoch(cfg, engine, train, epoch, autocast, watch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timing = {"seconds": time.perf_counter() - t0, **engine.waits()}  # this epoch's training only
            tested = evaluate(cfg, engine, test, autocast)
            # a pipeline's later stages hold no split (val None) but evaluate what they receive
            validated = evaluate(cfg, engine, val, autocast) if cfg.val_examples else None
            parts = engine.gather((sums, tested, timing, validated))
            verdict = None
            if reports:
                entry = history_entry(cfg, epoch, lr, parts, test.n)
                if fault("nan", epoch):
                    entry["train_loss"] = float("nan")
                verdict = divergence(entry, folder.out, epoch, lr)
            verdict = engine.agree(verdict)  # every stage stops, none waits for a peer
            if verdict:
                raise DivergenceError(verdict)
            if reports:
                history.append(entry)
            folder.save_checkpoint({"epoch": epoch, **engine.state_dict(), "history": history if reports else None,
                                    "wall_seconds": wall_before + time.perf_counter() - t_start,
                                    "started_at": started_at})
            engine.barrier()
            fault("kill-after-checkpoint", epoch)
            if reports:
                tracker.log_history(history)  # after the checkpoint: a kill never loses a logged epoch
                if not cfg.no_print_stats:   # the ETA: this attempt's epochs so far, training and testing
                    per_epoch = (time.perf_counter() - t_start) / (epoch - start + 1)
                    print(named(folder.run_name, progress_line(cfg, epoch, entry, per_epoch * (cfg.epochs - epoch))),
                          flush=True)
        engine.finish()
        memory = engine.gather(peak_memory_bytes(device))
        if not reports:
            return None
        params_backprop, params_total = engine.model.count_params()
        metrics = {
            "test_error": history[-1]["test_error"], "train_error": history[-1]["train_error"],
            **reported_errors(history),   # best test epoch; validation-selected (runs/selection.py)
            "epochs": len(history), "history": history,
            "params_backprop": params_backprop, "params_total": params_total,
            **head_cost(cfg, params_backprop, params_total),
            "seed": cfg.seed, "config": vars(cfg), "config_hash": folder.config_hash, "git_revision": git_revision(),
            "device": str(device), "environment": env, "precision": precision_used, "peak_memory_bytes": max(memory),
            "wall_seconds": wall_before + time.perf_counter() - t_start,
            "started_at": utc_iso(started_at), "finished_at": utc_iso(time.time()),   # MLflow's run times
            "run_name": folder.run_name, "tags": run_tags(cfg), **engine.run_info(),
        }
        if train is not None and train.validation_record is not None:
            metrics["val_split"] = train.validation_record
        if registry.source_of(cfg.method):   # a plugin's method: its package and version
            metrics["method_source"] = registry.source_of(cfg.method)
        try:
            if draw_curve is not None:
                draw_curve(folder.curve, metrics)
        except Exception as e:  # a figure is a convenience; never lose a finished run over one
            print(f"locallearn: warning: could not draw {folder.curve}: {e}", file=sys.stderr)
        folder.write_metrics(metrics)
    except BaseException as e:
        if tracker is not None:
            tracker.fail(str(e) or type(e).__name__)
        raise
    complete_run(tracker)
    return metrics
