"""Exact pipeline-parallel local training: `locallearn train --pipeline-stages S` (issue 8).

Local losses detach every block's input, so block k's update for batch t depends only
on its own weights and on block k-1's output for batch t, computed before block k-1's
step t. Stage k can therefore work on batch t while stage k+1 works on batch t-1,
sending activations forward only, and make exactly the updates of the sequential
fused engine (engines.FusedEngine): each stage sums its blocks' local losses (and, on the
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

Launch: torchrun is the one launcher. `locallearn train --pipeline-stages S` (the run
folder's owner, train/train.py) starts `torchrun --nproc-per-node S -m locallearn train ...`
on this machine and watches it (`launch`); under torchrun (WORLD_SIZE set, also when a
user starts it by hand on several machines) every process is one stage (`run_stage`).
"""
from __future__ import annotations

import copy
import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .. import faults
from ..host import precision
from ..recipe.cost import network_cost, stage_count_error
from .engines import FusedEngine
from .placement import initial_model, place
from .epochs import epoch_batches
from ..recipe.config import argv_of
from ..errors import CheckpointError, ConfigError, LocallearnError, PipelineError, error_class
from .fit import fit
from ..host.host import prepare
from ..layers.localnet import Block, LocalNet
from ..runs.rundir import RunFolder
from .startup import startup_line

TIMEOUT_ENV = "LOCALLEARN_PIPELINE_TIMEOUT"  # seconds a stage waits for a peer (default 60)
END, STOP = 0, -1


def _timeout() -> float:
    return float(os.environ.get(TIMEOUT_ENV, "60"))


# ======================================================================== configuration
def check_config(cfg) -> None:
    s = cfg.pipeline_stages
    problem = stage_count_error(cfg, s)  # stage count, backprop, no-detach: recipe/cost.py
    if problem:
        raise ConfigError(problem)
    if s == 1:
        return
    if cfg.engine != "fused":
        raise ConfigError(f"--engine {cfg.engine}: the pipeline reproduces the fused engine; use --engine fused")
    if cfg.stage_devices and len(cfg.stage_devices) != s:
        raise ConfigError(f"--stage-devices: {len(cfg.stage_devices)} devices given for {s} stages")
    if cfg.stage_devices and len({torch.device(d).type for d in cfg.stage_devices}) > 1:
        raise ConfigError(f"--stage-devices {' '.join(cfg.stage_devices)}: all stages must be on CPUs (gloo) "
                          "or all on GPUs (NCCL)")


# ============================================================================ balancing
def layer_costs(cfg) -> tuple[list[float], list[tuple], float]:
    """(multiply-adds of forward + local loss + backward per layer and example, each
    layer's output shape per example, the output layer's multiply-adds): recipe/cost.py."""
    cost = network_cost(cfg)
    return [l.train for l in cost.layers], [l.shape for l in cost.layers], cost.output.train


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
    starts = [i for i, m in enumerate(model.layers) if isinstance(m, Block)]  # check_config bounds stages
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
class StageEngine(FusedEngine):
    """Pipeline stage `rank` of `world`: the fused engine over its slice of the layers
    (the same step), whose batches come from the previous stage (stage 0 reads the
    data) and whose activations go on to the next. The whole network is built, with
    the sequential run's initial weights, so that every stage agrees on the split;
    only the stage's own layers move to its device."""

    def __init__(self, cfg, rank: int, world: int, device: torch.device):
        from ..recipe.specs import SPECS
        spec = SPECS[cfg.dataset]
        model = initial_model(cfg, spec)   # the sequential run's initial weights
        costs, shapes, out_cost = layer_costs(cfg)
        costs[-1] += out_cost
        how = "FLOP estimate per layer, forward + local loss + backward"
        if cfg.pipeline_balance == "time":  # rank 0 times the layers; every stage gets its numbers
            timed = [layer_times(model, spec, cfg, device) if rank == 0 else None]
            dist.broadcast_object_list(timed, src=0)
            costs, how = timed[0], f"measured per-layer time on {device}, batch {cfg.batch_size}"
        self.bounds = split_layers(model, costs, world)
        self.split_text = describe_split(model, self.bounds, costs, how)
        a, b = self.bounds[rank]
        for m in model.layers[a:b]:
            place(cfg, m, device)
        if rank == world - 1:
            place(cfg, model.output, device)
        super().__init__(cfg, model, device, a, b)
        self.rank, self.world = rank, world
        self.reports = rank == 0
        cap = max(cfg.batch_size, cfg.eval_batch_size)
        dtype = precision.activation_dtype(cfg.precision)
        self.recv = None if rank == 0 else Receiver(rank - 1, shapes[a - 1], cap, device, dtype)
        self.send = None if rank == world - 1 else Sender(rank + 1, shapes[b - 1], cap, device, dtype)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "stage": self.rank, "stages": self.world, "bounds": self.bounds,
                "param_names": [n for n, _ in self.named_parameters]}

    # ------------------------------------------------------------- the fit loop's hooks
    def train_batches(self, train, epoch: int):
        for channel in (self.send, self.recv):  # waits are reported per epoch
            if channel is not None:
                channel.wait_s = 0.0
        return epoch_batches(self.cfg, train, epoch) if self.recv is None else self._received("mid-epoch")

    def eval_batches(self, test):
        return test.eval_batches(self.cfg.eval_batch_size) if self.recv is None else self._received("in evaluation")

    def _received(self, where: str):
        """Batches from the previous stage until its END marker; STOP means it gave up."""
        while True:
            b, x, y = self.recv.get()
            if b == STOP:
                raise PipelineError(f"stage {self.rank}: stage {self.rank - 1} stopped the run {where}")
            if b == END:
                return
            yield x, y

    def pass_on(self, activation, y) -> None:
        if self.send is not None:
            self.send.send(activation, y)

    def end_phase(self) -> None:
        if self.send is not None:
            self.send.send(None, None, END)

    def waits(self) -> dict:
        return {"send_wait": self.send.wait_s if self.send else 0.0,
                "recv_wait": self.recv.wait_s if self.recv else 0.0}

    def gather(self, obj):
        """obj of every stage on rank 0 (tensors via the CPU), None elsewhere."""
        obj = _to_cpu(obj)
        out = [None] * self.world if self.rank == 0 else None
        dist.gather_object(obj, out, dst=0)
        return out

    def agree(self, verdict):
        box = [verdict]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()

    def resume(self, folder):
        """Resume together: the newest epoch every stage has a checkpoint of."""
        found = {}
        for state in folder.checkpoints():
            if [tuple(b) for b in state.get("bounds", [])] != [tuple(b) for b in self.bounds]:
                raise CheckpointError(f"{folder.checkpoint} was written with another stage split "
                                      f"{state.get('bounds')} (now {self.bounds}); resume with the same "
                                      "--pipeline-stages")
            found.setdefault(state["epoch"], state)
        epochs = [None] * self.world
        dist.all_gather_object(epochs, sorted(found))
        common = set(epochs[0]).intersection(*map(set, epochs[1:]))
        return found[max(common)] if common else None

    def finish(self) -> None:
        if self.send is not None:
            self.send.send(None, None, STOP)
            self.send.wait()
        if self.recv is not None and self.recv.works:
            self.recv.get()  # the previous stage's STOP completes the posted receive

    def run_info(self) -> dict:
        return {"pipeline": {"stages": self.world, "bounds": self.bounds}}


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    return obj


# ================================================================================= run
def stage_main(cfg, rank: int, world: int, local_rank: int, init_method: str, draw_curve=None) -> dict | None:
    """One stage's whole run. Rank 0 writes metrics.json (and draws the curve with
    `draw_curve`, fit's hook) and returns the metrics."""
    faults.set_stage(rank, world)
    device = prepare(cfg, cfg.threads or max(1, (os.cpu_count() or 1) // world), rank, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=_timeout()))
    try:
        engine = StageEngine(cfg, rank, world, device)
        if rank == 0:
            print(engine.split_text, flush=True)
        train = test = None
        if rank == 0:  # stage 0 alone reads the data
            from ..data.batches import load_splits
            train, test, _ = load_splits(cfg, device)
            print(startup_line(cfg, device, engine.model, train, test), flush=True)   # the whole network's counts
        return fit(cfg, RunFolder(cfg, stage=rank), engine, train, test, draw_curve)
    finally:
        try:
            dist.destroy_process_group()
        except Exception:
            pass


# ============================================================================ launching
STAGE_ERRORS_ENV = "LOCALLEARN_STAGE_ERRORS"   # folder where a stage leaves its own error
_TEE = re.compile(r"^\[[A-Za-z_]*(\d+)\]:(.*)$", re.S)   # torchrun --tee: "[default1]:line"


def run_stage(cfg, draw_curve=None) -> dict:
    """This process is one stage of a run that torchrun started (WORLD_SIZE set): by
    the launcher below, or by hand on several machines (docs: several machines).
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
        print(f"pipeline: {world} stage processes: {shlex.join(cmd)}", flush=True)
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
                proc.wait(timeout=_timeout() + 10)
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
