"""Engines: how a batch's losses become an update (one pass over a split is epochs.py's).

Two engines compute the same updates (tests/test_engines.py proves it):
- fused (default): every local loss and the output loss summed, one backward, one
  optimizer step over all parameters. Exact because each block's loss depends only
  on its own parameters and a detached input, and Adam/SGD act elementwise with one
  learning rate for every parameter (docs/method.md, The update).
- reference: the reference scheme, our reimplementation of the authors' training
  scheme (not their code): one optimizer per block stepping inside the forward pass,
  and a global optimizer over the output layer alone (as theirs: their networks'
  parameters() return only the output layer in local mode). Kept to prove the fused
  engine exact, --no-detach included.
A pipeline stage (pipeline.StageEngine) is the fused engine over a slice of the
layers: the same step, with its batches received from and passed on to its peers.

Every engine offers step, state_dict / load_state_dict, and the hooks that let the
one run loop (train/fit.py) drive a whole network and a pipeline stage alike; the passes over
a split that drive them (train_epoch, evaluate) are in train/epochs.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..host import precision
from ..recipe.config import CHOICES
from ..layers.localnet import Block, LocalNet, forward_layers
from .epochs import epoch_batches


def make_optimizer(cfg, params, device: torch.device) -> torch.optim.Optimizer:
    params = list(params)
    if cfg.optim == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov)
    # fused Adam: one kernel over all parameters; the optimizer's memory traffic is a
    # fifth of an MLP epoch on CPU, and foreach Adam is ~35% slower there (issue 2).
    # capturable on CUDA (step counts on the device), so that a step can be replayed as a
    # CUDA graph, and with or without graphs the arithmetic is the same.
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                            amsgrad=cfg.optim == "amsgrad", fused=True, capturable=device.type == "cuda")


def detaches(cfg) -> bool:
    """Local training cuts the graph after every block; --backprop and --no-detach keep it."""
    return not (cfg.backprop or cfg.no_detach)


def output_scale(cfg) -> float:
    """The reference multiplies the output layer's cross-entropy by (1 - beta) under
    predsim (and only there); its gradient to the output layer is scaled with it.
    Not under other methods' heads, nor --no-output-scale (AugLocal's PredSim), nor
    with no local module (--local-modules 1)."""
    paper_predsim = (cfg.loss_sup == "predsim" and cfg.method == "paper"
                     and not cfg.no_output_scale and cfg.local_modules != 1)
    return 1 - cfg.beta if paper_predsim and not cfg.backprop else 1.0


# ============================================================================== engines
# The engines by name. The names are --engine's choices (recipe/config.py's CHOICES, the
# one list, torch-free); each class below takes one of them.
ENGINE_NAMES = CHOICES["engine"]
ENGINES: dict[str, type] = {}


def register(name: str):
    """Register an engine class as `--engine name`; the name must be one --engine offers."""
    if name not in ENGINE_NAMES:
        raise ValueError(f"engine {name!r} is not one of --engine's choices ({', '.join(ENGINE_NAMES)})")

    def add(cls):
        ENGINES[name] = cls
        return cls
    return add


class Engine:
    """What every engine shares: the layers it trains (the whole network, or a
    pipeline stage's slice [start, stop) with the output layer on the last stage),
    its optimizers and its part of a checkpoint. The hooks at the end are what a
    pipeline stage overrides; for a whole network they do nothing."""

    reports = True  # this process writes metrics.json, the tracker and the progress lines

    def __init__(self, cfg, model: LocalNet, device, start: int = 0, stop: int | None = None):
        self.cfg, self.model, self.device = cfg, model, device
        stop = len(model.layers) if stop is None else stop
        self.whole = start == 0 and stop == len(model.layers)
        self.layers = list(model.layers[start:stop])
        self.output = model.output if stop == len(model.layers) else None
        self.blocks = [m for m in self.layers if isinstance(m, Block)]
        self.prefixes = (tuple(f"layers.{i}." for i in range(start, stop))
                         + (("output.",) if self.output is not None else ()))
        self.named_parameters = [(n, p) for n, p in model.named_parameters() if n.startswith(self.prefixes)]
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.out = None  # the last step's activation after this engine's layers

    def set_lr(self, lr: float) -> bool:
        """Returns whether the lr changed."""
        changed = False
        for opt in self.optimizers.values():
            for g in opt.param_groups:
                changed |= g["lr"] != lr
                g["lr"] = lr
        return changed

    def state_dict(self) -> dict:
        """This engine's part of a checkpoint: tensors and plain data only (loaded with
        torch.load(weights_only=True))."""
        return {"model": {k: v for k, v in self.model.state_dict().items() if k.startswith(self.prefixes)},
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "rng": {"torch": torch.get_rng_state()}}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"], strict=self.whole)
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        torch.set_rng_state(state["rng"]["torch"])

    def infer(self, x, autocast):
        """Evaluation forward: (activation after this engine's layers, logits or None)."""
        with autocast():
            out, _, _ = forward_layers(self.layers, x, local=False)
            logits = self.output(out) if self.output is not None else None
        return out, logits

    # ----------------------------------------------- hooks: a pipeline stage overrides
    def train_batches(self, train, epoch: int):
        return epoch_batches(self.cfg, train, epoch)

    def eval_batches(self, test):
        return test.eval_batches(self.cfg.eval_batch_size)

    def pass_on(self, activation, y) -> None:
        """Hand a batch's activation to the next stage."""

    def end_phase(self) -> None:
        """Tell the next stage that an epoch's training or evaluation is over."""

    def waits(self) -> dict:
        """Seconds this epoch spent waiting for peers."""
        return {}

    def gather(self, obj) -> list | None:
        """Every stage's obj, on the reporting process (None elsewhere)."""
        return [obj]

    def agree(self, verdict):
        """The reporting process's verdict, on every process."""
        return verdict

    def barrier(self) -> None:
        """Wait until every stage got here."""

    def resume(self, folder) -> dict | None:
        """The checkpoint to go on from."""
        return folder.latest_checkpoint()

    def finish(self) -> None:
        """The last epoch is done."""

    def run_info(self) -> dict:
        """Extra keys for metrics.json."""
        return {}


@register("fused")
class FusedEngine(Engine):
    """All losses summed, one backward, one step.

    On CUDA (float32) the step of a full batch is captured once as a CUDA graph and
    replayed: the mlp step is a few hundred small kernels, launch-bound when run eagerly
    (H200, mlp 3x1024 predsim: 7.5 ms eager, 1.0 ms replayed, parameters bitwise equal
    after 30 steps with dropout on). The graph holds the blocks' dropout generators
    (reseeded in place each epoch) and bakes in the learning rate, so a new lr means a
    new capture. A short last batch runs eagerly. A pipeline stage runs eagerly.
    """

    WARMUP_STEPS = 3  # eager steps on a side stream before a capture (cuBLAS, Adam state)

    def __init__(self, cfg, model: LocalNet, device, start: int = 0, stop: int | None = None):
        super().__init__(cfg, model, device, start, stop)
        if self.named_parameters:
            self.optimizers["all"] = make_optimizer(cfg, [p for _, p in self.named_parameters], device)
        self.graphs = (self.whole and device.type == "cuda" and not cfg.no_cuda_graph
                       and precision.graphable(cfg.precision))
        self._graph, self._warm = None, 0

    def set_lr(self, lr: float) -> bool:
        changed = super().set_lr(lr)
        if changed:
            self._graph, self._warm = None, 0  # the captured step has the old lr
        return changed

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
        for b in self.blocks:
            if b.dropout_generator is not None:
                graph.register_generator_state(b.dropout_generator)
        with torch.cuda.graph(graph):  # records the step; nothing runs until replay
            self._outputs = self.eager_step(*self._inputs, autocast)
        self._graph = graph

    def eager_step(self, x, y, y_onehot, autocast):
        """(logits, cross-entropy, local losses, stats); logits and ce are None on a
        stage without the output layer. The output loss comes first in the sum."""
        cfg = self.cfg
        opt = self.optimizers.get("all")
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        with autocast():
            out, local_losses, stats = forward_layers(self.layers, x, y, y_onehot, detach=detaches(cfg),
                                                      local=not cfg.backprop)
            total, logits, ce = None, None, None
            if self.output is not None:
                logits = self.output(out)
                ce = F.cross_entropy(precision.loss_input(logits), y)
                total = ce * output_scale(cfg)
            for loss in local_losses:
                total = loss if total is None else total + loss
        if total is not None and total.requires_grad:
            total.backward()
            opt.step()
        self.out = out
        return logits, ce, [loss.detach() for loss in local_losses], stats


def forward_local_backward(model, x, y, y_onehot, after_local, retain_graph: bool = False):
    """The forward of the per-block schemes (the authors' code, and AugLocal's): each
    block's local loss goes backward as soon as it is computed, then `after_local(block,
    out)` gives what goes on to the next block (an engine's step and detach). Returns
    (logits, cross-entropy, local losses, stats); the output loss is the caller's."""
    image, local_losses, stats = x, [], []
    for m in model.layers:
        if not isinstance(m, Block):
            x = m(x)
            continue
        h, out = m(x)
        if m.head is not None:
            loss, st = m.head(h, x, y, y_onehot, image=image)
            loss.backward(retain_graph=retain_graph)
            local_losses.append(loss.detach())
            stats.append(st)
            out = after_local(m, out)
        x = out
    logits = model.output(x)
    return logits, F.cross_entropy(precision.loss_input(logits), y), local_losses, stats


@register("reference")
class ReferenceEngine(Engine):
    """The reference scheme (the authors' scheme, reimplemented): each block's optimizer
    steps inside the forward pass."""

    def __init__(self, cfg, model: LocalNet, device):
        super().__init__(cfg, model, device)
        # The reference's global optimizer holds what its network's parameters() return:
        # the output layer alone in local mode, so under --no-detach each hidden block
        # still steps once, by its own optimizer; everything under --backprop.
        held = model.parameters() if cfg.backprop else model.output.parameters()
        self.optimizers["global"] = make_optimizer(cfg, held, device)
        if not cfg.backprop:
            for b in model.blocks:
                self.optimizers[f"block{b.index}"] = make_optimizer(cfg, b.parameters(), device)

    def step(self, x, y, y_onehot, autocast):
        cfg = self.cfg
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

        def step_block(m, out):   # the block's own optimizer steps, then its output is cut off
            if cfg.no_detach:
                return out
            opt = self.optimizers[f"block{m.index}"]
            opt.step()
            opt.zero_grad(set_to_none=True)
            return out.detach()
        with autocast():
            logits, ce, local_losses, stats = forward_local_backward(
                self.model, x, y, y_onehot, step_block, retain_graph=cfg.no_detach)
        (ce * output_scale(cfg)).backward()
        self.optimizers["global"].step()
        if cfg.no_detach:
            for name, opt in self.optimizers.items():
                if name != "global":
                    opt.step()
        return logits, ce, local_losses, stats


@register("modulewise")
class ModulewiseEngine(Engine):
    """The local-learning peers' scheme (AugLocal's networks/resnet.py forward and
    train.py step, commit 98c90d6; reimplemented, not their code): each module's local
    loss goes backward as soon as it is computed and the module's output is detached;
    the output loss goes backward last; one optimizer over every parameter steps once.
    The same update as the fused engine (tests/test_methods.py), in as many backward
    passes as there are losses; `locallearn bench --paths modulewise fused` times both."""

    def __init__(self, cfg, model: LocalNet, device):
        super().__init__(cfg, model, device)
        self.optimizers["all"] = make_optimizer(cfg, model.parameters(), device)

    def step(self, x, y, y_onehot, autocast):
        opt = self.optimizers["all"]
        opt.zero_grad(set_to_none=True)
        with autocast():
            logits, ce, local_losses, stats = forward_local_backward(
                self.model, x, y, y_onehot, lambda m, out: out.detach())
        (ce * output_scale(self.cfg)).backward()
        opt.step()
        return logits, ce, local_losses, stats


_unregistered = set(ENGINE_NAMES) - set(ENGINES)
if _unregistered:   # a name --engine offers that no class here takes
    raise ImportError(f"train/engines.py: no engine registered for {', '.join(sorted(_unregistered))}")
