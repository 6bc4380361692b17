"""The training loop: one run of `locallearn train`, from flags to metrics.json.

Sections in the order a run goes: set-up (device, data, model), the two engines
that turn losses into updates, one epoch, evaluation, checkpoints, the run itself.

Two engines compute the same updates (tests/test_engines.py proves it):
- fused (default): every local loss and the output loss summed, one backward, one
  optimizer step over all parameters. Exact because each block's loss depends only
  on its own parameters and a detached input, and Adam/SGD act elementwise with one
  learning rate for every parameter (SPEC.md, The update).
- reference: the authors' scheme, one optimizer per block stepping inside the
  forward pass, and a global optimizer (over all parameters, as theirs) for the
  output layer. Kept to prove the fused engine exact.
"""
from __future__ import annotations

import bisect
import ctypes
import errno
import io
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .atomic import atomic_write_text
from . import __version__
from .config import config_hash, recipe_dict
from .errors import CheckpointError, ConfigError, DivergenceError, OutputError, TrackingError
from .models import Block, LocalNet, build_model

CHECKPOINT, CHECKPOINT_PREV, METRICS = "checkpoint.pt", "checkpoint.prev.pt", "metrics.json"

# Fault injection, for tests/test_faults.py only: $LOCALLEARN_FAULT="POINT:EPOCH" makes
# the run fail at POINT of epoch EPOCH the way a crash would. Unset, nothing happens.
#   kill-mid-epoch          SIGKILL after the 2nd batch of the epoch
#   term-mid-epoch          SIGTERM (SLURM's time limit) after the 2nd batch of the epoch
#   kill-checkpoint-tmp     SIGKILL with checkpoint.pt.tmp complete, not yet renamed
#   kill-checkpoint-rotated SIGKILL with checkpoint.pt moved to .prev, .tmp not renamed
#   kill-after-checkpoint   SIGKILL after the checkpoint, before MLflow gets the epoch
#   kill-before-metrics     SIGKILL after the last epoch, before metrics.json (EPOCH: the last)
#   kill-after-metrics      SIGKILL after metrics.json, before MLflow marks the run FINISHED
#   enospc-checkpoint       disk full while writing the epoch's checkpoint
#   enospc-metrics          disk full while writing metrics.json (EPOCH: the last)
#   nan                     the epoch's training loss becomes NaN
FAULT_ENV = "LOCALLEARN_FAULT"


def _fault(point: str, epoch: int) -> bool:
    if os.environ.get(FAULT_ENV) != f"{point}:{epoch}":
        return False
    if point.startswith(("kill-", "term-")):
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL if point.startswith("kill-") else signal.SIGTERM)
    if point.startswith("enospc-"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return True


# =============================================================================== set-up
def configure_host(threads: int) -> None:
    """Threads for torch, and glibc's malloc told to keep freed memory.

    glibc hands blocks above its mmap threshold back to the kernel when freed, so every
    step's fresh weight gradients (4 MB each for a 1024x1024 layer) fault in again page
    by page. Keeping them in the heap takes 11% off a CPU step (Fashion-MNIST mlp
    3x1024 predsim, 2 threads: 45.5 -> 40.3 ms per step). No effect on the numbers.
    """
    if threads:
        torch.set_num_threads(threads)
    if platform.system() == "Linux":
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:  # not glibc (musl): nothing to tune
            return
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)  # glibc's maximum
        libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)


def resolve_device(cfg) -> torch.device:
    if cfg.no_cuda or cfg.device == "cpu":
        return torch.device("cpu")
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {cfg.device}: CUDA is not available on this machine")
    return torch.device(cfg.device)


def lease_device(cfg):
    """Several GPUs, several jobs: take a free card for this run (gpulease.py), unless a
    scheduler (SLURM, the user) already chose one with CUDA_VISIBLE_DEVICES."""
    if cfg.no_cuda or cfg.device not in ("auto", "cuda") or "CUDA_VISIBLE_DEVICES" in os.environ:
        return None
    from .gpulease import lease_gpu
    return lease_gpu(label=str(cfg.out))


def make_model(cfg, spec, device: torch.device) -> LocalNet:
    torch.manual_seed(cfg.seed)  # initial weights: a function of the seed alone
    return build_model(cfg, spec.channels, spec.size, spec.num_classes).to(device)


def make_optimizer(cfg, params, device: torch.device) -> torch.optim.Optimizer:
    params = list(params)
    if cfg.optim == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # fused Adam: one kernel over all parameters; the optimizer's memory traffic is a
    # fifth of an MLP epoch on CPU, and foreach Adam is ~35% slower there (issue 2).
    # capturable on CUDA (step counts on the device), so that a step can be replayed as a
    # CUDA graph, and with or without graphs the arithmetic is the same.
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                            amsgrad=cfg.optim == "amsgrad", fused=True, capturable=device.type == "cuda")


def lr_at(cfg, epoch: int) -> float:
    """lr * fact ** (number of milestones <= epoch - 1), epochs counted from 1."""
    return cfg.lr * cfg.lr_decay_fact ** bisect.bisect_right(cfg.lr_decay_milestones, epoch - 1)


def detaches(cfg) -> bool:
    """Local training cuts the graph after every block; --backprop and --no-detach keep it."""
    return not (cfg.backprop or cfg.no_detach)


def output_scale(cfg) -> float:
    """The reference multiplies the output layer's cross-entropy by (1 - beta) under
    predsim (and only there); its gradient to the output layer is scaled with it."""
    return 1 - cfg.beta if cfg.loss_sup == "predsim" and not cfg.backprop else 1.0


# ============================================================================== engines
class FusedEngine:
    """All losses summed, one backward, one step.

    On CUDA (float32) the step of a full batch is captured once as a CUDA graph and
    replayed: the mlp step is a few hundred small kernels, launch-bound when run eagerly
    (H200, mlp 3x1024 predsim: 7.5 ms eager, 1.0 ms replayed, parameters bitwise equal
    after 30 steps with dropout on). The graph holds the blocks' dropout generators
    (reseeded in place each epoch) and bakes in the learning rate, so a new lr means a
    new capture. A short last batch runs eagerly.
    """

    WARMUP_STEPS = 3  # eager steps on a side stream before a capture (cuBLAS, Adam state)

    def __init__(self, cfg, model: LocalNet, device):
        self.cfg, self.model = cfg, model
        self.optimizers = {"all": make_optimizer(cfg, model.parameters(), device)}
        self.graphs = (device.type == "cuda" and not getattr(cfg, "no_cuda_graph", False)
                       and getattr(cfg, "precision", "fp32") == "fp32")
        self._graph, self._warm = None, 0

    def set_lr(self, lr: float) -> None:
        for opt in self.optimizers.values():
            for g in opt.param_groups:
                if g["lr"] != lr:
                    self._graph, self._warm = None, 0  # the captured step has the old lr
                g["lr"] = lr

    def step(self, x, y, y_onehot, autocast):
        if not self.graphs or x.shape[0] != self.cfg.batch_size:
            return self.eager_step(x, y, y_onehot, autocast)
        if self._graph is None:
            if self._warm < self.WARMUP_STEPS:
                self._warm += 1
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    out = self.eager_step(x, y, y_onehot, autocast)
                torch.cuda.current_stream().wait_stream(side)
                return out
            self._capture(x, y, y_onehot, autocast)
        for static, new in zip(self._inputs, (x, y, y_onehot)):
            static.copy_(new)
        self._graph.replay()
        return self._outputs

    def _capture(self, x, y, y_onehot, autocast):
        self._inputs = (x.clone(), y.clone(), y_onehot.clone())
        graph = torch.cuda.CUDAGraph()
        for b in self.model.blocks:
            if b._gen is not None:
                graph.register_generator_state(b._gen)
        with torch.cuda.graph(graph):  # records the step; nothing runs until replay
            self._outputs = self.eager_step(*self._inputs, autocast)
        self._graph = graph

    def eager_step(self, x, y, y_onehot, autocast):
        cfg = self.cfg
        opt = self.optimizers["all"]
        opt.zero_grad(set_to_none=True)
        with autocast():
            logits, local_losses, stats = self.model(x, y, y_onehot, detach=detaches(cfg),
                                                     local=not cfg.backprop)
            ce = F.cross_entropy(logits.float(), y)
            total = ce * output_scale(cfg)
            for loss in local_losses:
                total = total + loss
        total.backward()
        opt.step()
        return logits, ce, [loss.detach() for loss in local_losses], stats


class ReferenceEngine(FusedEngine):
    """The authors' scheme: each block's optimizer steps inside the forward pass."""

    def __init__(self, cfg, model: LocalNet, device):
        self.cfg, self.model = cfg, model
        # The reference's global optimizer holds every parameter; hidden ones have no
        # gradient when it steps (their own optimizer cleared it), so it moves only
        # the output layer. Under --no-detach both step every hidden parameter.
        self.optimizers = {"global": make_optimizer(cfg, model.parameters(), device)}
        if not cfg.backprop:
            for b in model.blocks:
                self.optimizers[f"block{b.index}"] = make_optimizer(cfg, b.parameters(), device)

    def step(self, x, y, y_onehot, autocast):
        cfg = self.cfg
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        local_losses, stats = [], []
        with autocast():
            for m in self.model.layers:
                if not isinstance(m, Block):
                    x = m(x)
                    continue
                h, out = m(x)
                if m.head is not None:
                    loss, st = m.head(h, x, y, y_onehot)
                    loss.backward(retain_graph=cfg.no_detach)
                    local_losses.append(loss.detach())
                    stats.append(st)
                    if not cfg.no_detach:
                        opt = self.optimizers[f"block{m.index}"]
                        opt.step()
                        opt.zero_grad(set_to_none=True)
                        out = out.detach()
                x = out
            logits = self.model.output(x)
            ce = F.cross_entropy(logits.float(), y)
        (ce * output_scale(cfg)).backward()
        self.optimizers["global"].step()
        if cfg.no_detach:
            for name, opt in self.optimizers.items():
                if name != "global":
                    opt.step()
        return logits, ce, local_losses, stats


ENGINES = {"fused": FusedEngine, "reference": ReferenceEngine}


# ================================================================================ epoch
def epoch_batches(cfg, train, epoch: int):
    """This epoch's training batches: the class-per-batch sampler's order while it is
    on (epoch <= --classes-per-batch-until-epoch), else a plain shuffle."""
    cpb = cfg.classes_per_batch if epoch <= cfg.classes_per_batch_until_epoch else 0
    order = train.order(cfg.seed, epoch, cpb, cfg.batch_size)
    return train.train_batches(order, cfg.batch_size, cfg.seed, epoch)


def add_local_stats(cfg, local_sum, local_wrong, losses, stats, y) -> None:
    """Accumulate one batch's per-block local losses (batch-weighted) and local pred
    errors (where a decoder predicts the classes: pred/predsim without --bio)."""
    local_sum += torch.stack(losses).float() * y.shape[0]
    for k, st in enumerate(stats):
        if "pred_logits" in st and not cfg.bio:
            local_wrong[k] += (st["pred_logits"].detach().argmax(1) != y).sum()


def train_epoch(cfg, engine, train, epoch: int, autocast, progress) -> dict:
    """One pass over the training split. Statistics stay on the device and are read
    once at the end: a .item() per step would stall a GPU every batch."""
    model = engine.model
    model.train()
    model.seed_dropout(cfg.seed, epoch)
    device = train.device
    n_blocks = len(model.blocks) if not cfg.backprop else 0
    ce_sum = torch.zeros((), device=device)
    wrong = torch.zeros((), device=device)
    local_sum = torch.zeros(n_blocks, device=device)
    local_wrong = torch.zeros(n_blocks, device=device)
    seen = 0
    batches = epoch_batches(cfg, train, epoch)
    for i, (x, y) in enumerate(progress(batches, total=-(-train.n // cfg.batch_size), desc=f"epoch {epoch}")):
        if i == 2:
            _fault("kill-mid-epoch", epoch)
            _fault("term-mid-epoch", epoch)
        y_onehot = F.one_hot(y, model.num_classes).float()
        logits, ce, losses, stats = engine.step(x, y, y_onehot, autocast)
        b = y.shape[0]
        seen += b
        ce_sum += ce.detach() * b
        wrong += (logits.detach().argmax(1) != y).sum()
        if n_blocks:
            add_local_stats(cfg, local_sum, local_wrong, losses, stats, y)
    ce_mean = (ce_sum / seen).item()
    local_mean = (local_sum / seen).tolist()
    local_err = (local_wrong * 100 / seen).tolist()
    has_error = cfg.loss_sup in ("pred", "predsim") and not cfg.bio
    return {
        "train_error": wrong.item() * 100 / seen,
        "train_loss": ce_mean,
        "train_loss_scaled": ce_mean * output_scale(cfg),
        "local_loss": sum(local_mean),
        "local": [{"layer": b.index, "loss": local_mean[k], "error": local_err[k] if has_error else None}
                  for k, b in enumerate(model.blocks[:n_blocks])],
        "examples": seen,
    }


@torch.no_grad()
def evaluate(cfg, model: LocalNet, test, autocast) -> dict:
    """Top-1 error of the output layer, eval mode, over the whole test split."""
    model.eval()
    wrong, ce_sum = 0, 0.0
    for x, y in test.eval_batches(cfg.eval_batch_size):
        with autocast():
            logits, _, _ = model(x, local=False)
        ce_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        wrong += (logits.argmax(1) != y).sum().item()
    return {"test_error": wrong * 100 / test.n, "test_loss": ce_sum / test.n}


# ========================================================================== checkpoints
def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def save_checkpoint(out: Path, state: dict) -> None:
    """Keep the newest two: a checkpoint torn by a crash falls back to the previous one."""
    current = out / CHECKPOINT
    tmp = out / (CHECKPOINT + ".tmp")
    epoch = state["epoch"]
    # Serialised in memory, written with plain file I/O: torch.save onto a full disk
    # raises an opaque RuntimeError from its zip writer, a write() raises OSError(ENOSPC).
    buf = io.BytesIO()
    torch.save(state, buf)
    try:
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
            _fault("enospc-checkpoint", epoch)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # disk full, quota, I/O error: the previous checkpoint stays
        tmp.unlink(missing_ok=True)
        kept = f"the checkpoint of epoch {epoch - 1} is kept" if current.exists() else "no checkpoint is kept"
        raise OutputError(f"cannot write checkpoint {tmp} ({e.strerror or e}); {kept}: "
                          "free space and rerun the same command") from None
    _fault("kill-checkpoint-tmp", epoch)
    if current.exists():
        os.replace(current, out / CHECKPOINT_PREV)
    _fault("kill-checkpoint-rotated", epoch)
    os.replace(tmp, current)


def load_checkpoint(cfg, out: Path) -> dict | None:
    paths = [Path(cfg.resume)] if cfg.resume else [out / CHECKPOINT, out / CHECKPOINT_PREV]
    chash = config_hash(cfg)
    for path in paths:
        if not path.exists():
            if cfg.resume:
                raise CheckpointError(f"--resume {path}: no such checkpoint")
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # a torn or corrupt file: try the previous one
            print(f"locallearn: warning: checkpoint {path} unreadable ({type(e).__name__}); "
                  "trying the previous one", file=sys.stderr)
            continue
        if state.get("config_hash") != chash:
            diff = _config_diff(state.get("config", {}), recipe_dict(cfg))
            raise CheckpointError(f"{path} belongs to another config ({diff}); refusing to mix runs: "
                                  "use another --out or delete the folder")
        return state
    return None


def _config_diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:4]) or "unknown difference"


# ================================================================================= run
def environment_info() -> dict:
    import torchvision
    rev = None
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "torchvision": torchvision.__version__, "locallearn": __version__},
            "git_revision": rev}


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _progress_factory(cfg):
    if cfg.progress_bar or sys.stderr.isatty():
        from tqdm import tqdm
        return lambda it, total, desc: tqdm(it, total=total, desc=desc, leave=False)
    return lambda it, total, desc: it


def _tags(cfg) -> dict[str, str]:
    tags = dict(t.split("=", 1) for t in cfg.tag)
    tags.update(dataset=cfg.dataset, model=cfg.model, seed=str(cfg.seed), config_hash=config_hash(cfg),
                loss="backprop" if cfg.backprop else cfg.loss_sup,
                git_revision=environment_info()["git_revision"] or "unknown")
    return tags


def run(cfg) -> dict:
    """Train (or resume, or recognise as finished) the run in cfg.out; return metrics."""
    if getattr(cfg, "pipeline_stages", 1) != 1:  # one process per stage (pipeline.py, issue 8)
        from .pipeline import run_pipeline
        return run_pipeline(cfg)
    out = Path(cfg.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write there ({e.strerror})") from None
    chash = config_hash(cfg)
    run_name = cfg.run_name or out.resolve().name
    from .tracking import RunTracker, resolve_uri
    uri = resolve_uri(cfg.mlflow_uri)

    metrics_path = out / METRICS
    if metrics_path.exists():
        try:
            done = json.loads(metrics_path.read_text())
        except (OSError, ValueError) as e:  # never written torn by us: a copy or an edit broke it
            raise CheckpointError(f"{metrics_path} is unreadable ({type(e).__name__}: {e}); delete it "
                                  "to finish the run from its checkpoint") from None
        if done.get("config_hash") != chash:
            raise CheckpointError(f"{metrics_path} holds a finished run of another config "
                                  f"({_config_diff(done.get('config', {}), recipe_dict(cfg))}); use another --out")
        print(f"{out}: already finished (test error {done['test_error']:.2f}%)")
        _finish_tracking(RunTracker.open(out, uri, cfg.mlflow_experiment, run_name, _tags(cfg), vars(cfg)),
                         done, out)
        return done

    configure_host(cfg.threads)
    lease = lease_device(cfg)  # noqa: F841  (held, with its lock file, for the life of the run)
    device = resolve_device(cfg)
    from .data import load_splits
    train, test, spec = load_splits(cfg, device)
    model = make_model(cfg, spec, device)
    engine = ENGINES[cfg.engine](cfg, model, device)
    params_backprop, params_total = model.count_params()

    history, wall_before = [], 0.0
    state = load_checkpoint(cfg, out)
    if state is not None:
        model.load_state_dict(state["model"])
        for name, opt in engine.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        torch.set_rng_state(state["rng"]["torch"])
        history, wall_before = state["history"], state["wall_seconds"]
        print(f"{out}: resuming after epoch {state['epoch']} of {cfg.epochs}")

    tracker = RunTracker.open(out, uri, cfg.mlflow_experiment, run_name, _tags(cfg), vars(cfg))
    tracker.log_history(history)
    use_bf16 = cfg.precision == "bf16"
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)  # noqa: E731
    progress = _progress_factory(cfg)
    t_start = time.perf_counter()
    try:
        for epoch in range(len(history) + 1, cfg.epochs + 1):
            lr = lr_at(cfg, epoch)
            engine.set_lr(lr)
            t0 = time.perf_counter()
            stats = train_epoch(cfg, engine, train, epoch, autocast, progress)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
            if _fault("nan", epoch):
                stats["train_loss"] = float("nan")
            examples = stats.pop("examples")
            entry = {"epoch": epoch, "lr": lr, **stats, **evaluate(cfg, model, test, autocast),
                     "epoch_seconds": seconds, "images_per_second": examples / seconds}
            # the test loss too: a last step that turns the weights to NaN shows only there
            losses = {k: entry[k] for k in ("train_loss", "local_loss", "test_loss")}
            if not all(map(_finite, losses.values())):
                kept = (f"the last good checkpoint (epoch {epoch - 1}) is kept" if epoch > 1
                        else "no checkpoint was written")
                raise DivergenceError(f"{out}: training diverged in epoch {epoch} (lr {lr:g}): "
                                      f"{', '.join(f'{k} {v}' for k, v in losses.items())}; {kept}")
            history.append(entry)
            wall = wall_before + time.perf_counter() - t_start
            save_checkpoint(out, {
                "epoch": epoch, "config": recipe_dict(cfg), "config_hash": chash,
                "model": model.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in engine.optimizers.items()},
                "rng": {"torch": torch.get_rng_state()}, "history": history, "wall_seconds": wall,
            })
            _fault("kill-after-checkpoint", epoch)
            tracker.log_history(history)  # after the checkpoint: a kill never loses a logged epoch
            print(f"epoch {epoch}/{cfg.epochs} lr {lr:.2e} train {entry['train_error']:.2f}% "
                  f"test {entry['test_error']:.2f}% loss {entry['train_loss']:.4f} "
                  f"local {entry['local_loss']:.4f} {seconds:.1f}s {entry['images_per_second']:.0f} img/s",
                  flush=True)
    except BaseException as e:
        tracker.finish("FAILED", {"error": str(e) or type(e).__name__})
        raise

    metrics = {
        "test_error": history[-1]["test_error"], "train_error": history[-1]["train_error"],
        "epochs": len(history), "history": history,
        "params_backprop": params_backprop, "params_total": params_total,
        "seed": cfg.seed, "config": vars(cfg), "config_hash": chash, **environment_info(),
        "device": str(device), "peak_memory_bytes": peak_memory_bytes(device),
        "wall_seconds": wall_before + time.perf_counter() - t_start,
        "run_name": run_name, "tags": _tags(cfg),
    }
    curve = out / "curve.png"
    try:
        from .figures import plot_curves
        plot_curves({f"seed {cfg.seed}": history}, curve, title=run_name)
    except Exception as e:  # a figure is a convenience; never lose a finished run over one
        print(f"locallearn: warning: could not draw {curve}: {e}", file=sys.stderr)
    _fault("kill-before-metrics", len(history))
    try:
        _fault("enospc-metrics", len(history))
        atomic_write_json(metrics_path, metrics)
    except OSError as e:
        err = OutputError(f"cannot write {metrics_path} ({e.strerror or e}); the checkpoint of epoch "
                          f"{len(history)} is kept: free space and rerun the same command")
        tracker.finish("FAILED", {"error": str(err)})
        raise err from None
    _fault("kill-after-metrics", len(history))
    old = out / CHECKPOINT_PREV
    if old.exists():
        old.unlink()
    _finish_tracking(tracker, metrics, out)
    return metrics


def _finish_tracking(tracker, metrics: dict, out: Path) -> None:
    """metrics.json is already safe; a tracking failure is reported, not fatal, and the
    next run of the same command repairs the MLflow run."""
    tracker.log_history(metrics["history"])
    artifacts = [p for p in (out / METRICS, out / "curve.png") if p.exists()]
    try:
        tracker.finish("FINISHED", metrics, artifacts)
    except TrackingError as e:
        print(f"locallearn: warning: {e} (metrics.json is kept; rerun the same command to sync MLflow)",
              file=sys.stderr)


def _finite(v: float) -> bool:
    return v == v and v not in (float("inf"), float("-inf"))
