"""Exact pipeline-parallel local training: `locallearn train --pipeline-stages S` (issue 8).

Local losses detach every block's input, so block k's update for batch t depends only
on its own weights and on block k-1's output for batch t, computed before block k-1's
step t. Stage k can therefore work on batch t while stage k+1 works on batch t-1,
sending activations forward only, and make exactly the updates of the sequential
fused engine (train.FusedEngine): each stage sums its blocks' local losses (and, on the
last stage, the scaled output cross-entropy), runs one backward and one fused Adam step
over its own parameters; Adam is elementwise, so the union of the stage steps is the
fused step. Dropout masks come from per-block generators and BatchNorm statistics are
per block, so a pipelined run matches a sequential one bit for bit on CPU.

Layout: the network's flat `layers` list is cut into S contiguous slices (the output
layer belongs to the last stage), chosen to minimise the slowest stage from a FLOP
count per layer. One process per stage, `torch.distributed` point-to-point (gloo on
CPU, NCCL on GPUs). Stage 0 alone reads the data; labels travel with the activations
in one fixed-size message per batch (an int64 header [b, y_0..y_b-1] and an
activation buffer), so every receive can be posted before the previous batch is
computed (overlap both ways). A header with b = 0 ends a phase (epoch or evaluation),
b = -1 ends the run.

Launch: under `torchrun --nproc-per-node S -m locallearn train ... --pipeline-stages S`
(WORLD_SIZE set) every process is one stage; without torchrun, `locallearn train
--pipeline-stages S` spawns the S local processes itself and watches them.
"""
from __future__ import annotations

import copy
import datetime
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .config import config_hash, recipe_dict
from .errors import CheckpointError, ConfigError, DivergenceError, LocallearnError
from .models import Block, LocalNet, build_model, forward_layers

TIMEOUT_ENV = "LOCALLEARN_PIPELINE_TIMEOUT"  # seconds a stage waits for a peer (default 60)
FAULT_STAGE_ENV = "LOCALLEARN_FAULT_STAGE"  # which stage $LOCALLEARN_FAULT kills (default: last)
END, STOP = 0, -1


class PipelineError(LocallearnError):
    """A stage died, hung or failed: the whole pipelined run stops."""


def _timeout() -> float:
    return float(os.environ.get(TIMEOUT_ENV, "60"))


def stage_checkpoint_name(k: int, prev: bool = False) -> str:
    return f"checkpoint.stage{k}{'.prev' if prev else ''}.pt"


# ======================================================================== configuration
def check_config(cfg) -> None:
    s = cfg.pipeline_stages
    if s < 1:
        raise ConfigError(f"--pipeline-stages: must be >= 1, got {s}")
    if s == 1:
        return
    if cfg.backprop or cfg.no_detach:
        flag = "--backprop" if cfg.backprop else "--no-detach"
        raise ConfigError(f"{flag} cannot be combined with --pipeline-stages {s}: only local training with "
                          "detached block inputs is pipelined exactly (gradients would have to flow back "
                          "across stages); drop --pipeline-stages or the flag")
    if cfg.engine != "fused":
        raise ConfigError(f"--engine {cfg.engine}: the pipeline reproduces the fused engine; use --engine fused")
    if cfg.stage_devices and len(cfg.stage_devices) != s:
        raise ConfigError(f"--stage-devices: {len(cfg.stage_devices)} devices given for {s} stages")
    if cfg.stage_devices and len({torch.device(d).type for d in cfg.stage_devices}) > 1:
        raise ConfigError(f"--stage-devices {' '.join(cfg.stage_devices)}: all stages must be on CPUs (gloo) "
                          "or all on GPUs (NCCL)")


# ============================================================================ balancing
def layer_costs(model: LocalNet, spec, cfg) -> tuple[list[float], list[tuple], float]:
    """(FLOPs of forward + local loss + backward per layer at batch 1 (from batch 2),
    each layer's output shape per example, output layer's FLOPs). Runs on a copy:
    the real model's BatchNorm statistics and dropout generators are untouched."""
    from torch.utils.flop_counter import FlopCounterMode
    m = copy.deepcopy(model).cpu().train()
    for b in m.blocks:
        b.seed_dropout(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, spec.channels, spec.size, spec.size, generator=g)
    y = torch.arange(2) % spec.num_classes
    yo = F.one_hot(y, spec.num_classes).float()
    costs, shapes = [], []
    for layer in m.layers:
        with FlopCounterMode(display=False) as fc:
            if isinstance(layer, Block):
                h, out = layer(x)
                loss = layer.head(h, x, y, yo)[0] if layer.head is not None else out.sum()
                loss.backward()
            else:
                out = layer(x)
        costs.append(fc.get_total_flops() / 2)
        x = out.detach()
        shapes.append(tuple(x.shape[1:]))
    with FlopCounterMode(display=False) as fc:
        F.cross_entropy(m.output(x), y).backward()
    return costs, shapes, fc.get_total_flops() / 2


def balance(costs: list[float], stages: int) -> list[tuple[int, int]]:
    """Contiguous split of costs into `stages` non-empty slices minimising the largest
    slice sum (dynamic programming); returns [(start, stop), ...]."""
    n = len(costs)
    if stages > n:
        raise ConfigError(f"--pipeline-stages {stages}: the network has only {n} layers to split")
    pre = [0.0]
    for c in costs:
        pre.append(pre[-1] + c)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for s in range(1, stages + 1):
        for j in range(s, n + 1):
            for i in range(s - 1, j):
                v = max(best[s - 1][i], pre[j] - pre[i])
                if v < best[s][j]:
                    best[s][j], cut[s][j] = v, i
    bounds, j = [], n
    for s in range(stages, 0, -1):
        i = cut[s][j]
        bounds.append((i, j))
        j = i
    return bounds[::-1]


def split_layers(model: LocalNet, costs: list[float], stages: int) -> list[tuple[int, int]]:
    """Balanced contiguous split of model.layers: a parameter-free step (max-pool,
    flatten) stays with the block before it (a leading one with the first block), so
    every stage owns at least one block."""
    starts = [i for i, m in enumerate(model.layers) if isinstance(m, Block)]
    if stages > len(starts):
        raise ConfigError(f"--pipeline-stages {stages}: the network has only {len(starts)} blocks to split")
    starts[0] = 0
    ends = starts[1:] + [len(model.layers)]
    unit_costs = [sum(costs[a:b]) for a, b in zip(starts, ends)]
    return [(starts[a], ends[b - 1]) for a, b in balance(unit_costs, stages)]


def layer_times(model: LocalNet, spec, cfg, device, reps: int = 3) -> list[float]:
    """Seconds per layer (forward + local loss + backward, at the training batch size)
    on `device`, the output layer's added to the last; a copy of the model is timed."""
    m = copy.deepcopy(model).to(device).train()
    for b in m.blocks:
        b.seed_dropout(0)
    g = torch.Generator().manual_seed(0)
    bs = cfg.batch_size
    x0 = torch.randn(bs, spec.channels, spec.size, spec.size, generator=g).to(device)
    y = (torch.arange(bs) % spec.num_classes).to(device)
    yo = F.one_hot(y, spec.num_classes).float()
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    times = [0.0] * (len(m.layers) + 1)
    for rep in range(reps + 1):  # the first pass warms up (allocator, kernels)
        x = x0
        for i, layer in enumerate(list(m.layers) + [m.output]):
            sync()
            t0 = time.perf_counter()
            if isinstance(layer, Block):
                h, out = layer(x)
                (layer.head(h, x, y, yo)[0] if layer.head is not None else out.sum()).backward()
            elif layer is m.output:
                out = layer(x)
                F.cross_entropy(out, y).backward()
            else:
                out = layer(x)
            sync()
            if rep:
                times[i] += (time.perf_counter() - t0) / reps
            x = out.detach()
    times[-2] += times.pop()
    return times


def describe_split(model: LocalNet, bounds, costs, how: str) -> str:
    total = sum(costs) or 1.0
    lines = [f"pipeline: {len(bounds)} stages (split by {how})"]
    for k, (a, b) in enumerate(bounds):
        blocks = [m.index for m in model.layers[a:b] if isinstance(m, Block)]
        names = f"blocks {blocks[0]}-{blocks[-1]}" if blocks else "no blocks"
        out = " + output layer" if k == len(bounds) - 1 else ""
        lines.append(f"  stage {k}: layers {a}-{b - 1} ({names}{out}): {100 * sum(costs[a:b]) / total:.1f}%")
    return "\n".join(lines)


# ============================================================================ messaging
class Sender:
    """Fixed-size messages to the next stage; isend, so the next batch is computed
    while this one travels. A buffer is reused only after its send completed."""

    def __init__(self, peer: int, shape, cap: int, device, dtype):
        self.peer = peer
        self.head = torch.zeros(cap + 1, dtype=torch.int64, device=device)
        self.act = torch.zeros((cap, *shape), dtype=dtype, device=device)
        self.works = []
        self.wait_s = 0.0

    def wait(self):
        t0 = time.perf_counter()
        for w in self.works:
            w.wait()
        self.works = []
        self.wait_s += time.perf_counter() - t0

    def send(self, x, y, code: int | None = None):
        self.wait()
        b = x.shape[0] if x is not None else code
        self.head[0] = b
        if x is not None:
            self.head[1:b + 1] = y
            self.act[:b].copy_(x.detach())
        self.works = [dist.isend(self.head, self.peer), dist.isend(self.act, self.peer)]


class Receiver:
    """Two slots: the receive of message t+1 is posted before message t is handed out."""

    def __init__(self, peer: int, shape, cap: int, device, dtype):
        self.peer = peer
        self.slots = [(torch.zeros(cap + 1, dtype=torch.int64, device=device),
                       torch.zeros((cap, *shape), dtype=dtype, device=device)) for _ in range(2)]
        self.cur = 0
        self.works = self._post(0)
        self.wait_s = 0.0

    def _post(self, i):
        h, a = self.slots[i]
        return [dist.irecv(h, self.peer), dist.irecv(a, self.peer)]

    def get(self):
        t0 = time.perf_counter()
        for w in self.works:
            w.wait()
        self.wait_s += time.perf_counter() - t0
        h, a = self.slots[self.cur]
        b = int(h[0])
        if b != STOP:
            self.cur ^= 1
            self.works = self._post(self.cur)
        else:
            self.works = []
        if b <= 0:
            return b, None, None
        return b, a[:b], h[1:b + 1]


# ================================================================================ stage
class Stage:
    def __init__(self, cfg, rank: int, world: int, device: torch.device):
        from .datasets import SPECS
        from .train import make_optimizer
        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        self.first, self.last = rank == 0, rank == world - 1
        self.spec = SPECS[cfg.dataset]
        torch.manual_seed(cfg.seed)  # the sequential run's initial weights (train.make_model)
        self.model = build_model(cfg, self.spec.channels, self.spec.size, self.spec.num_classes)
        self.params_backprop, self.params_total = self.model.count_params()
        costs, shapes, out_cost = layer_costs(self.model, self.spec, cfg)
        costs[-1] += out_cost
        how = "FLOP estimate per layer, forward + local loss + backward"
        if cfg.pipeline_balance == "time":  # rank 0 times the layers; every stage gets its numbers
            timed = [layer_times(self.model, self.spec, cfg, device) if rank == 0 else None]
            dist.broadcast_object_list(timed, src=0)
            costs, how = timed[0], f"measured per-layer time on {device}, batch {cfg.batch_size}"
        self.bounds = split_layers(self.model, costs, world)
        self.split_text = describe_split(self.model, self.bounds, costs, how)
        a, b = self.bounds[rank]
        self.a, self.b = a, b
        self.layers = list(self.model.layers[a:b])
        for m in self.layers:
            m.to(device)
        if self.last:
            self.model.output.to(device)
        prefixes = tuple(f"layers.{i}." for i in range(a, b)) + (("output.",) if self.last else ())
        self.prefixes = prefixes
        named = [(n, p) for n, p in self.model.named_parameters() if n.startswith(prefixes)]
        self.param_names = [n for n, _ in named]
        self.opt = make_optimizer(cfg, [p for _, p in named], device) if named else None
        self.blocks = [m for m in self.layers if isinstance(m, Block)]
        cap = max(cfg.batch_size, cfg.eval_batch_size)
        dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
        self.recv = None if self.first else Receiver(rank - 1, shapes[a - 1], cap, device, dtype)
        self.send = None if self.last else Sender(rank + 1, shapes[b - 1], cap, device, dtype)
        use_bf16 = cfg.precision == "bf16"
        self.autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)  # noqa: E731

    def state_dict(self) -> dict:
        return {k: v for k, v in self.model.state_dict().items() if k.startswith(self.prefixes)}

    def forward(self, x, y, y_onehot, local=True):
        return forward_layers(self.layers, x, y, y_onehot, detach=True, local=local)

    def step(self, x, y):
        """This stage's part of train.FusedEngine.step: its losses summed (the output
        loss first, as there), one backward, one step over its parameters."""
        from .train import output_scale
        cfg = self.cfg
        if self.opt is not None:
            self.opt.zero_grad(set_to_none=True)
        y_onehot = F.one_hot(y, self.spec.num_classes).float()
        with self.autocast():
            x, losses, stats = self.forward(x, y, y_onehot)
            total, logits, ce = None, None, None
            if self.last:
                logits = self.model.output(x)
                ce = F.cross_entropy(logits.float(), y)
                total = ce * output_scale(cfg)
            for loss in losses:
                total = loss if total is None else total + loss
        if total is not None and total.requires_grad:
            total.backward()
            self.opt.step()
        return x, logits, ce, losses, stats

    # ---------------------------------------------------------------------- epoch
    def train_epoch(self, train, epoch: int) -> dict:
        from .train import _fault, add_local_stats, epoch_batches
        cfg, dev = self.cfg, self.device
        self.model.train()
        self.model.seed_dropout(cfg.seed, epoch)
        for channel in (self.send, self.recv):  # waits are reported per epoch
            if channel is not None:
                channel.wait_s = 0.0
        nb = len(self.blocks)
        ce_sum = torch.zeros((), device=dev)
        wrong = torch.zeros((), device=dev)
        local_sum = torch.zeros(nb, device=dev)
        local_wrong = torch.zeros(nb, device=dev)
        seen = 0
        fault_here = os.environ.get(FAULT_STAGE_ENV, str(self.world - 1)) == str(self.rank)

        batches = epoch_batches(cfg, train, epoch) if self.first else self._received("mid-epoch")
        for i, (x, y) in enumerate(batches):
            if i == 2 and fault_here:
                _fault("kill-mid-epoch", epoch)
            out, logits, ce, losses, stats = self.step(x, y)
            if self.send is not None:
                self.send.send(out, y)
            b = y.shape[0]
            seen += b
            if self.last:
                ce_sum += ce.detach() * b
                wrong += (logits.detach().argmax(1) != y).sum()
            if nb:
                add_local_stats(cfg, local_sum, local_wrong, losses, stats, y)
        if self.send is not None:
            self.send.send(None, None, END)
        return {"seen": seen, "ce_sum": ce_sum.cpu(), "wrong": wrong.cpu(), "local_sum": local_sum.cpu(),
                "local_wrong": local_wrong.cpu(), "layers": [m.index for m in self.blocks]}

    def _received(self, where: str):
        """Batches from the previous stage until its END marker; STOP means it gave up."""
        while True:
            b, x, y = self.recv.get()
            if b == STOP:
                raise PipelineError(f"stage {self.rank}: stage {self.rank - 1} stopped the run {where}")
            if b == END:
                return
            yield x, y

    @torch.no_grad()
    def evaluate(self, test) -> dict | None:
        self.model.eval()
        wrong, ce_sum = 0, 0.0

        batches = test.eval_batches(self.cfg.eval_batch_size) if self.first else self._received("in evaluation")
        for x, y in batches:
            with self.autocast():
                out, _, _ = self.forward(x, None, None, local=False)
                if self.last:
                    logits = self.model.output(out)
            if self.send is not None:
                self.send.send(out, y)
            else:
                ce_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
                wrong += (logits.argmax(1) != y).sum().item()
        if self.send is not None:
            self.send.send(None, None, END)
        return {"wrong": wrong, "ce_sum": ce_sum}

    def shutdown(self):
        if self.send is not None:
            self.send.send(None, None, STOP)
            self.send.wait()
        if self.recv is not None and self.recv.works:
            b, _, _ = self.recv.get()  # the previous stage's STOP completes the posted receive


# ========================================================================== checkpoints
def _save_stage(out: Path, k: int, state: dict) -> None:
    """Atomic, newest two kept (as train.save_checkpoint): a torn file falls back."""
    cur, prev, tmp = out / stage_checkpoint_name(k), out / stage_checkpoint_name(k, True), \
        out / (stage_checkpoint_name(k) + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    if cur.exists():
        os.replace(cur, prev)
    os.replace(tmp, cur)


def _stage_candidates(cfg, out: Path, k: int, bounds) -> dict[int, Path]:
    found = {}
    chash = config_hash(cfg)
    for path in (out / stage_checkpoint_name(k), out / stage_checkpoint_name(k, True)):
        if not path.exists():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            print(f"locallearn: warning: {path} unreadable ({type(e).__name__})", file=sys.stderr)
            continue
        if state.get("config_hash") != chash:
            raise CheckpointError(f"{path} belongs to another config; refusing to mix runs: "
                                  "use another --out or delete the folder")
        if [tuple(b) for b in state.get("bounds", [])] != [tuple(b) for b in bounds]:
            raise CheckpointError(f"{path} was written with another stage split {state.get('bounds')} "
                                  f"(now {bounds}); resume with the same --pipeline-stages")
        found[state["epoch"]] = path
    return found


# ================================================================================= run
def _gather(obj, rank: int, world: int):
    out = [None] * world if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def _resolve_stage_device(cfg, rank: int, local_rank: int) -> torch.device:
    if cfg.stage_devices:
        return torch.device(cfg.stage_devices[rank])
    if cfg.no_cuda or cfg.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if cfg.device.startswith("cuda:"):
        return torch.device(cfg.device)
    return torch.device(f"cuda:{local_rank % torch.cuda.device_count()}")


def stage_main(cfg, rank: int, world: int, local_rank: int, init_method: str) -> dict | None:
    """One stage's whole run. Rank 0 writes metrics.json and returns the metrics."""
    out = Path(cfg.out)
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // world)
    from .train import configure_host
    configure_host(threads)
    device = _resolve_stage_device(cfg, rank, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=_timeout()))
    try:
        return _stage_run(cfg, rank, world, device, out)
    finally:
        try:
            dist.destroy_process_group()
        except Exception:
            pass


def _stage_run(cfg, rank, world, device, out):
    from .train import (_finish_tracking, _tags, environment_info, lr_at, output_scale, peak_memory_bytes)
    st = Stage(cfg, rank, world, device)
    chash = config_hash(cfg)
    if rank == 0:
        print(st.split_text, flush=True)
    train = test = None
    if st.first:
        from .data import load_splits
        train, test, _ = load_splits(cfg, device)

    # Resume together: the newest epoch every stage has a checkpoint of.
    cands = _stage_candidates(cfg, out, rank, st.bounds)
    allc = [None] * world
    dist.all_gather_object(allc, sorted(cands))
    common = set(allc[0]).intersection(*map(set, allc[1:]))
    history, wall_before = [], 0.0
    if common:
        epoch0 = max(common)
        state = torch.load(cands[epoch0], map_location="cpu", weights_only=False)
        st.model.load_state_dict(state["model"], strict=False)
        if st.opt is not None:
            st.opt.load_state_dict(state["optimizer"])
        history, wall_before = state["history"] or [], state["wall_seconds"]
        if rank == 0:
            print(f"{out}: resuming all {world} stages after epoch {epoch0} of {cfg.epochs}", flush=True)
    done = [None]
    if rank == 0:
        done = [len(history)]
    dist.broadcast_object_list(done, src=0)
    start_epoch = done[0] + 1

    tracker = None
    if rank == 0:
        from .tracking import RunTracker, resolve_uri
        run_name = cfg.run_name or out.resolve().name
        tracker = RunTracker.open(out, resolve_uri(cfg.mlflow_uri), cfg.mlflow_experiment, run_name,
                                  _tags(cfg), vars(cfg))
        tracker.log_history(history)
    t_start = time.perf_counter()
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            lr = lr_at(cfg, epoch)
            if st.opt is not None:
                for g in st.opt.param_groups:
                    g["lr"] = lr
            t0 = time.perf_counter()
            stats = st.train_epoch(train, epoch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
            waits = {"send_wait": st.send.wait_s if st.send else 0.0,  # this epoch's training only
                     "recv_wait": st.recv.wait_s if st.recv else 0.0, "seconds": seconds}
            ev = st.evaluate(test)
            parts = _gather((stats, ev, waits), rank, world)
            verdict = [None]
            if rank == 0:
                entry = _history_entry(cfg, epoch, lr, parts, test.n, output_scale(cfg))
                losses = {k: entry[k] for k in ("train_loss", "local_loss", "test_loss")}
                if not all(v == v and abs(v) != float("inf") for v in losses.values()):
                    verdict = [f"{out}: training diverged in epoch {epoch} (lr {lr:g}): "
                               f"{', '.join(f'{k} {v}' for k, v in losses.items())}; the checkpoints of "
                               f"epoch {epoch - 1} are kept"]
                else:
                    history.append(entry)
            dist.broadcast_object_list(verdict, src=0)  # every stage stops, none waits for a peer
            if verdict[0]:
                raise DivergenceError(verdict[0])
            wall = wall_before + time.perf_counter() - t_start
            _save_stage(out, rank, {
                "epoch": epoch, "stage": rank, "stages": world, "bounds": st.bounds,
                "config": recipe_dict(cfg), "config_hash": chash, "param_names": st.param_names,
                "model": st.state_dict(), "optimizer": st.opt.state_dict() if st.opt else None,
                "history": history if rank == 0 else None, "wall_seconds": wall})
            dist.barrier()
            if rank == 0:
                tracker.log_history(history)
                e = history[-1]
                waits_txt = " ".join(f"s{k}:{p[2]['recv_wait']:.1f}/{p[2]['send_wait']:.1f}s"
                                     for k, p in enumerate(parts))
                print(f"epoch {epoch}/{cfg.epochs} lr {lr:.2e} train {e['train_error']:.2f}% "
                      f"test {e['test_error']:.2f}% loss {e['train_loss']:.4f} local {e['local_loss']:.4f} "
                      f"{e['epoch_seconds']:.1f}s {e['images_per_second']:.0f} img/s "
                      f"(stage waits recv/send {waits_txt})", flush=True)
        st.shutdown()
        mems = _gather(peak_memory_bytes(device), rank, world)
        if rank != 0:
            return None
        metrics = {
            "test_error": history[-1]["test_error"], "train_error": history[-1]["train_error"],
            "epochs": len(history), "history": history,
            "params_backprop": st.params_backprop, "params_total": st.params_total,
            "seed": cfg.seed, "config": vars(cfg), "config_hash": chash, **environment_info(),
            "device": str(device), "peak_memory_bytes": max(mems),
            "wall_seconds": wall_before + time.perf_counter() - t_start,
            "run_name": cfg.run_name or out.resolve().name, "tags": _tags(cfg),
            "pipeline": {"stages": world, "bounds": st.bounds},
        }
        from .train import METRICS, atomic_write_json
        atomic_write_json(out / METRICS, metrics)
        for k in range(world):
            (out / stage_checkpoint_name(k, True)).unlink(missing_ok=True)
        _finish_tracking(tracker, metrics, out)
        return metrics
    except BaseException as e:
        if tracker is not None:
            try:
                tracker.finish("FAILED", {"error": str(e) or type(e).__name__})
            except Exception:
                pass
        raise


def _history_entry(cfg, epoch, lr, parts, n_test, scale) -> dict:
    """The history entry train.run writes, from every stage's counts."""
    stats = [p[0] for p in parts]
    last = stats[-1]
    seen = last["seen"]
    ce_mean = (last["ce_sum"] / seen).item()
    local_sum = torch.cat([s["local_sum"] for s in stats])
    local_wrong = torch.cat([s["local_wrong"] for s in stats])
    layers = [i for s in stats for i in s["layers"]]
    local_mean = (local_sum / seen).tolist()
    local_err = (local_wrong * 100 / seen).tolist()
    has_error = cfg.loss_sup in ("pred", "predsim") and not cfg.bio
    ev = parts[-1][1]
    seconds = max(p[2]["seconds"] for p in parts)
    return {"epoch": epoch, "lr": lr, "train_error": last["wrong"].item() * 100 / seen, "train_loss": ce_mean,
            "train_loss_scaled": ce_mean * scale, "local_loss": sum(local_mean),
            "local": [{"layer": i, "loss": local_mean[k], "error": local_err[k] if has_error else None}
                      for k, i in enumerate(layers)],
            "test_error": ev["wrong"] * 100 / n_test, "test_loss": ev["ce_sum"] / n_test,
            "epoch_seconds": seconds, "images_per_second": seen / seconds,
            "stage_wait_seconds": [{"recv": p[2]["recv_wait"], "send": p[2]["send_wait"]} for p in parts]}


# ============================================================================ launching
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(cfg, rank, world, init_method):
    try:
        stage_main(cfg, rank, world, rank, init_method)
    except LocallearnError as e:
        print(f"locallearn: error: stage {rank}: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except Exception as e:  # a peer died: gloo/NCCL raise here instead of hanging
        if cfg.debug:
            traceback.print_exc()
        print(f"locallearn: error: stage {rank}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
              file=sys.stderr, flush=True)
        sys.exit(3)


def _finished(cfg, out: Path, quiet: bool = False) -> dict | None:
    from .train import METRICS
    path = out / METRICS
    if not path.exists():
        return None
    done = json.loads(path.read_text())
    if done.get("config_hash") != config_hash(cfg):
        raise CheckpointError(f"{path} holds a finished run of another config; use another --out")
    if not quiet:
        print(f"{out}: already finished (test error {done['test_error']:.2f}%)")
    return done


def run_pipeline(cfg) -> dict:
    """`locallearn train --pipeline-stages S`: as a torchrun rank, or spawning S stages."""
    check_config(cfg)
    out = Path(cfg.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write there ({e.strerror})") from None
    done = _finished(cfg, out)
    if done is not None:
        return done
    world = cfg.pipeline_stages
    if "WORLD_SIZE" in os.environ:  # started by torchrun: this process is one stage
        ws, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        if ws != world:
            raise ConfigError(f"--pipeline-stages {world} but torchrun started {ws} processes "
                              f"(use --nproc-per-node {world} on one node, or nodes x nproc = {world})")
        try:
            metrics = stage_main(cfg, rank, world, int(os.environ.get("LOCAL_RANK", rank)), "env://")
        except LocallearnError:
            raise
        except Exception as e:
            raise PipelineError(f"stage {rank}: a peer stage died or hung ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}); rerun the same command to "
                                "resume from the last common checkpoint") from None
        if metrics is None:  # ranks > 0: rank 0 wrote metrics.json
            return {}
        return metrics
    return _spawn(cfg, world, out)


def _spawn(cfg, world: int, out: Path) -> dict:
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    init = f"tcp://127.0.0.1:{_free_port()}"
    procs = [ctx.Process(target=_child, args=(cfg, r, world, init), name=f"locallearn-stage{r}")
             for r in range(world)]
    for p in procs:
        p.start()
    grace = _timeout() + 10
    failed_at = None
    try:
        while any(p.is_alive() for p in procs):
            bad = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
            if bad and failed_at is None:
                failed_at = time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > grace:
                for p in procs:
                    if p.is_alive():
                        p.kill()
            time.sleep(0.1)
    except BaseException:
        for p in procs:
            if p.is_alive():
                p.kill()
        raise
    codes = [p.exitcode for p in procs]
    if any(codes):
        first = min((r for r, c in enumerate(codes) if c), key=lambda r: (codes[r] >= 0, r))
        c = codes[first]
        how = f"was killed by signal {-c}" if c < 0 else f"exited with status {c}"
        raise PipelineError(f"pipeline stage {first} of {world} {how}; the other stages stopped "
                            f"(exit statuses {codes}); rerun the same command to resume from the last "
                            f"common checkpoint in {out}")
    done = _finished(cfg, out, quiet=True)
    if done is None:
        raise PipelineError(f"the pipeline ended without writing {out}/metrics.json")
    return done
