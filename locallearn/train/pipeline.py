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
folder's owner, train/trainer.py) starts `torchrun --nproc-per-node S -m locallearn train ...`
on this machine and watches it (`launch`); under torchrun (WORLD_SIZE set, also when a
user starts it by hand on several machines) every process is one stage (`run_stage`).

Here: the messages between stages (Sender, Receiver), a stage's engine (StageEngine) and
one stage's whole run (stage_main). The cut into stages and the config check are
train/stagesplit.py's; the torchrun launch (launch, run_stage) is train/stagelaunch.py's.
"""
from __future__ import annotations

import datetime
import os
import time

import torch
import torch.distributed as dist

from .. import faults
from ..host import precision
from .engines import FusedEngine
from .placement import initial_model, place
from .epochs import epoch_batches
from ..errors import CheckpointError, PipelineError
from .fit import fit, startup_line
from ..host.machine import prepare
from ..runs.rundir import RunFolder
from ..runs.trainlog import named
from .stagesplit import describe_split, layer_costs, layer_times, split_layers

TIMEOUT_ENV = "LOCALLEARN_PIPELINE_TIMEOUT"  # seconds a stage waits for a peer (default 60)
END, STOP = 0, -1


def peer_timeout() -> float:
    return float(os.environ.get(TIMEOUT_ENV, "60"))


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
        from ..recipe.specs import run_spec
        spec = run_spec(cfg)
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
                            timeout=datetime.timedelta(seconds=peer_timeout()))
    try:
        engine = StageEngine(cfg, rank, world, device)
        folder = RunFolder(cfg, stage=rank)
        if rank == 0:
            print(named(folder.run_name, engine.split_text), flush=True)
        train = test = None
        if rank == 0:  # stage 0 alone reads the data
            from ..data.batches import load_splits
            train, test, _ = load_splits(cfg, device)
        if rank == 0:   # the whole network's counts
            print(named(folder.run_name, startup_line(cfg, device, engine.model, train, test)), flush=True)
        return fit(cfg, folder, engine, train, test, draw_curve)
    finally:
        try:
            dist.destroy_process_group()
        except Exception:
            pass
