"""What a network costs, counted from its architecture alone (no torch import).

One function per architecture (`mlp`, the VGG family of specs.VGG_CONFIGS) walks the
same layer list models.py builds and says, per layer, its output shape and its
multiply-adds (MACs) per example: the layer's own forward, its local heads' forward
(pred decoder after the average pooling, sim's extra conv/linear, the similarity
matrices, the bio label projection, the unsupervised terms), and forward + backward of
both as one training step runs them. Users of these numbers:

- the workflow's cost model and `runtime` resource (workflow/scripts/plan.py),
- the pipeline's stage split (pipeline.layer_costs) and its stage-count check,
- the bench's GFLOP/s (bench.py).

What is counted is what torch's FlopCounterMode counts: matrix products and
convolutions (2 FLOP per MAC there). BatchNorm, pooling, nonlinearities, dropout,
losses and the optimizer are not counted. tests/test_cost.py runs real fused steps
under FlopCounterMode and finds these counts equal to it (tolerance stated there).

Backward: a convolution or linear layer computes its weight gradient always and its
input gradient only where the input requires one. Local training detaches every
block's input, so a block's backward is 1x its forward; global backprop (and
--no-detach) needs 2x everywhere but the first block. Heads act on h, which requires
grad: 2x. The similarity matrix of a batch of B rows costs B x width per example,
so the counts depend on the batch size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .errors import ConfigError
from .specs import SPECS, VGG_CONFIGS


@dataclass(frozen=True)
class LayerCost:
    """One entry of a LocalNet's `layers` (or its output layer), MACs per example."""
    kind: str                 # conv | linear | pool | flatten | output
    shape: tuple[int, ...]    # output per example, as the layer's forward returns it
    forward: float = 0.0      # the layer's own op, forward (what evaluation runs)
    heads: float = 0.0        # its local heads, forward
    train: float = 0.0        # layer and heads, forward + backward, in one training step


@dataclass(frozen=True)
class NetworkCost:
    layers: tuple[LayerCost, ...]   # aligned with models.LocalNet.layers
    output: LayerCost

    @property
    def blocks(self) -> int:
        """Hidden blocks: the units local losses train and a pipeline splits."""
        return sum(1 for l in self.layers if l.kind in ("conv", "linear"))

    @property
    def train_macs(self) -> float:
        """MACs of one training example (forward + local heads + backward)."""
        return sum(l.train for l in self.layers) + self.output.train

    @property
    def eval_macs(self) -> float:
        """MACs of one test example (eval: forward, no heads)."""
        return sum(l.forward for l in self.layers) + self.output.forward


# ----------------------------------------------------------------- decoder pooling
def decoder_pooling(channels: int, side: int, dim_in_decoder: int):
    """The reference's rule for bounding a conv block's pred-decoder input.

    Start from kernel (1, 1); while channels * out_h * out_w exceeds the bound and
    kh < side, double kh, and if still too big double kw. Output side ceil(side / k),
    zero padding (k * (ceil(side/k) - side//k)) // 2, stride = kernel.
    Returns (kernel, padding, decoder_input_size).
    """
    kh = kw = 1
    out_h = out_w = side
    size = channels * out_h * out_w
    while size > dim_in_decoder and kh < side:
        kh *= 2
        out_h = math.ceil(side / kh)
        size = channels * out_h * out_w
        if size > dim_in_decoder:
            kw *= 2
            out_w = math.ceil(side / kw)
            size = channels * out_h * out_w
    pad = ((kh * (out_h - side // kh)) // 2, (kw * (out_w - side // kw)) // 2)
    return (kh, kw), pad, size


# -------------------------------------------------------------------- local heads
def _sim_width(shape: tuple[int, ...], use_std: bool) -> int:
    """Columns of the rows local_losses.similarity_matrix multiplies (channel stds or flat)."""
    if len(shape) == 3 and use_std and shape[0] > 3 and shape[1] > 1:
        return shape[0]
    return math.prod(shape)


def _heads(cfg, in_shape, out_shape, layer_macs: float, first: bool, classes: int) -> tuple[float, float]:
    """(forward, forward + backward) MACs per example of one block's LocalHead
    (local_losses.LocalHead.forward), h of shape out_shape, block input of in_shape."""
    if cfg.backprop:
        return 0.0, 0.0
    conv = len(out_shape) == 3
    c = out_shape[0]
    B, use_std, bio, P = cfg.batch_size, not cfg.no_similarity_std, cfg.bio, cfg.target_proj_size
    if conv:
        kernel, _, dec_in = decoder_pooling(c, out_shape[1], cfg.dim_in_decoder)
        pooled = (c, math.ceil(out_shape[1] / kernel[0]), math.ceil(out_shape[2] / kernel[1]))
        sim_layer = c * c * 9 * out_shape[1] * out_shape[2]
    else:
        dec_in, pooled, sim_layer = c, out_shape, c * c
    fwd = grad = 0.0  # grad: the forward MACs whose backward costs 2x (they act on h)

    def features() -> None:  # sim_features(h) and the similarity matrix of them
        nonlocal fwd, grad
        if bio:
            w = _sim_width(pooled, use_std)
        else:
            w = _sim_width(out_shape, use_std)
            grad += sim_layer
        grad += B * w

    sup_sim = cfg.loss_sup in ("sim", "predsim")
    if cfg.loss_sup in ("pred", "predsim"):
        grad += dec_in * (P if bio else classes)
        fwd += classes * P if bio else 0       # the label code for the BCE target
    if sup_sim:
        features()
        fwd += (classes * P + B * P) if bio else B * classes   # target S(label code)
    unsup = cfg.alpha != 0 and cfg.loss_unsup != "none" and not (cfg.loss_unsup == "recon" and first)
    if unsup and cfg.loss_unsup == "sim":
        features()
        fwd += B * _sim_width(in_shape, use_std)                # target S(block input)
    elif unsup:                                                  # recon: the block's op, transposed
        grad += layer_macs
    return fwd + grad, fwd + 3 * grad


def _block(cfg, kind, in_shape, out_shape, macs, index, classes, first: bool) -> LayerCost:
    """first: a first layer as the reference builds it (no recon loss): a VGG's first
    conv, and the first linear block of the mlp and of a VGG's head (models.py)."""
    input_grad = index > 0 and (cfg.backprop or cfg.no_detach)
    head_fwd, head_train = _heads(cfg, in_shape, out_shape, macs, first, classes)
    return LayerCost(kind, out_shape, forward=macs, heads=head_fwd,
                     train=macs * (2 + input_grad) + head_train)


def _linear_blocks(cfg, layers: list, n_in: int, index: int, classes: int) -> int:
    for i in range(cfg.num_layers):
        layers.append(_block(cfg, "linear", (n_in,), (cfg.num_hidden,), n_in * cfg.num_hidden, index, classes,
                             first=i == 0))
        n_in, index = cfg.num_hidden, index + 1
    return n_in


def _output(cfg, n_in: int, classes: int, after_block: bool) -> LayerCost:
    macs = n_in * classes
    input_grad = after_block and (cfg.backprop or cfg.no_detach)
    return LayerCost("output", (classes,), forward=macs, train=macs * (2 + input_grad))


# --------------------------------------------------------------------------- networks
COSTS: dict[str, Callable] = {}


def mlp_cost(cfg, spec) -> NetworkCost:
    """models.build_mlp: flatten, num_layers linear blocks, output."""
    n_in = spec.channels * spec.size * spec.size
    layers = [LayerCost("flatten", (n_in,))]
    n_out = _linear_blocks(cfg, layers, n_in, 0, spec.num_classes)
    return NetworkCost(tuple(layers), _output(cfg, n_out, spec.num_classes, True))


def vgg_cost(name: str, cfg, spec) -> NetworkCost:
    """models.build_vgg: conv blocks and max-pools of VGG_CONFIGS[name] (a 7x7/2 stem
    when the input is wider than 64 px), flatten, the MLP head, output."""
    layers: list[LayerCost] = []
    c_in, side, index = spec.channels, spec.size, 0
    for item in VGG_CONFIGS[name]:
        if item == "M":
            side //= 2
            layers.append(LayerCost("pool", (c_in, side, side)))
            continue
        c = int(item * cfg.feat_mult)
        k, stride, pad = (7, 2, 3) if index == 0 and spec.size > 64 else (3, 1, 1)
        out = (side + 2 * pad - k) // stride + 1
        layers.append(_block(cfg, "conv", (c_in, side, side), (c, out, out), out * out * c_in * c * k * k,
                             index, spec.num_classes, first=index == 0))
        c_in, side, index = c, out, index + 1
    n_flat = c_in * side * side
    layers.append(LayerCost("flatten", (n_flat,)))
    n_out = _linear_blocks(cfg, layers, n_flat, index, spec.num_classes)
    return NetworkCost(tuple(layers), _output(cfg, n_out, spec.num_classes, index + cfg.num_layers > 0))


COSTS["mlp"] = mlp_cost
for _name in VGG_CONFIGS:
    COSTS[_name] = lambda cfg, spec, _n=_name: vgg_cost(_n, cfg, spec)


def network_cost(cfg) -> NetworkCost:
    """The cost of the network a training config (config.parse_train_args, or any object
    with its fields) builds on its dataset, at its batch size."""
    if cfg.model not in COSTS:
        raise ConfigError(f"--model: no cost model for {cfg.model!r} (known: {', '.join(sorted(COSTS))})")
    return COSTS[cfg.model](cfg, SPECS[cfg.dataset])


# ------------------------------------------------------------------- pipeline stages
def stage_count_error(cfg, stages: int) -> str | None:
    """Why the recipe cannot run as `stages` pipeline stages, or None. The one home of
    this check: the trainer (pipeline.check_config) and the workflow
    (plan.pipeline_stages) both ask it."""
    if stages < 1:
        return f"--pipeline-stages: must be >= 1, got {stages}"
    if stages == 1:
        return None
    if cfg.backprop or cfg.no_detach:
        flag = "--backprop" if cfg.backprop else "--no-detach"
        return (f"{flag} cannot be combined with --pipeline-stages {stages}: only local training with "
                "detached block inputs is pipelined exactly (gradients would have to flow back "
                "across stages); drop --pipeline-stages or the flag")
    blocks = network_cost(cfg).blocks
    if stages > blocks:
        return f"--pipeline-stages {stages}: the network has only {blocks} hidden blocks to split"
    return None
