"""What a network costs, counted from its architecture alone (no torch import).

One function per architecture (`mlp`, the VGG family of specs.VGG_CONFIGS, the CIFAR
ResNets) counts the same layer list the builders make (recipe/archspec.py, the one walk of
each architecture) and says, per layer, its output shape, its multiply-adds (MACs) per
example and its parameters: the layer's own forward, its local heads' forward (the
paper's pred decoder after the average pooling, sim's extra conv/linear, the similarity
matrices, the bio label projection, the unsupervised terms; the heads of DGL, InfoPro
and AugLocal and of plugins: each Method's head_cost, methods/), and forward + backward of both as one training step runs
them. The backbone (what evaluation runs: NetworkCost.backbone_macs, backbone_params)
and the local heads (head_macs, head_params) are counted apart. Users of these numbers:

- the workflow's cost model and `runtime` resource (locallearn/workflow/plan.py),
- the pipeline's stage split (stagesplit.layer_costs) and its stage-count check,
- the bench's GFLOP/s (bench/paths.py),
- a run's metrics.json (backbone_params, backbone_macs, head_params, head_macs).

What is counted is what torch's FlopCounterMode counts: matrix products and
convolutions (2 FLOP per MAC there). BatchNorm, pooling, nonlinearities, dropout,
losses, interpolation and the optimizer are not counted. tests/test_cost.py runs real
fused steps under FlopCounterMode and finds these counts equal to it, and the
parameters equal to the built network's (tolerance stated there).

Backward: a convolution or linear layer computes its weight gradient always and its
input gradient only where the input requires one. Local training detaches every
block's input, so a block's backward is 1x its forward; global backprop (and
--no-detach) needs 2x everywhere but the first block. Heads act on h, which requires
grad: 2x. The similarity matrix of a batch of B rows costs B x width per example,
so the counts depend on the batch size. A ResNet's local module runs several convs:
those reading the module's (detached) input skip the input gradient, the others not.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Callable

from .archspec import ConvLayer, Site, block_sites, decoder_pooling, resnet_sites, vgg_flat, vgg_layers
from ..errors import ConfigError
from ..methods import registry
from .specs import RESNET_BLOCKS, VGG_CONFIGS, run_spec
from .tally import Tally


@dataclass(frozen=True)
class LayerCost:
    """One entry of a LocalNet's `layers` (or its output layer), MACs per example."""
    kind: str                 # conv | linear | module (a ResNet's) | pool | flatten | output
    shape: tuple[int, ...]    # output per example, as the layer's forward returns it
    forward: float = 0.0      # the layer's own op, forward (what evaluation runs)
    heads: float = 0.0        # its local heads, forward
    train: float = 0.0        # layer and heads, forward + backward, in one training step
    params: int = 0           # the layer's own parameters
    head_params: int = 0      # its local heads' parameters


@dataclass(frozen=True)
class NetworkCost:
    layers: tuple[LayerCost, ...]   # aligned with models.LocalNet.layers
    output: LayerCost

    @property
    def blocks(self) -> int:
        """Hidden blocks: the units local losses train and a pipeline splits."""
        return sum(1 for l in self.layers if l.kind in ("conv", "linear", "module"))

    @property
    def backbone_params(self) -> int:
        """The network without its local heads (the paper's #Params)."""
        return sum(l.params for l in self.layers) + self.output.params

    @property
    def head_params(self) -> int:
        return sum(l.head_params for l in self.layers)

    @property
    def backbone_macs(self) -> float:
        """MACs of the backbone's forward per example (= eval_macs)."""
        return self.eval_macs

    @property
    def head_macs(self) -> float:
        """MACs of the local heads' forward per example (in training)."""
        return sum(l.heads for l in self.layers)

    @property
    def train_macs(self) -> float:
        """MACs of one training example (forward + local heads + backward)."""
        return sum(l.train for l in self.layers) + self.output.train

    @property
    def eval_macs(self) -> float:
        """MACs of one test example (eval: forward, no heads)."""
        return sum(l.forward for l in self.layers) + self.output.forward


# ------------------------------------------------------------- the paper's local heads
def _sim_width(shape: tuple[int, ...], use_std: bool) -> int:
    """Columns of the rows local_losses.similarity_matrix multiplies (channel stds or flat)."""
    if len(shape) == 3 and use_std and shape[0] > 3 and shape[1] > 1:
        return shape[0]
    return math.prod(shape)


def _heads(cfg, in_shape, out_shape, layer_macs: float, first: bool, classes: int,
           kernel: int = 3) -> tuple[float, float, int]:
    """(forward, forward + backward MACs, parameters) per example of one block's
    LocalHead (local_losses.LocalHead), h of shape out_shape, block input of in_shape, a
    conv block's kernel `kernel` (recon mirrors it)."""
    if cfg.backprop:
        return 0.0, 0.0, 0
    conv = len(out_shape) == 3
    c = out_shape[0]
    B, use_std, bio, P = cfg.batch_size, not cfg.no_similarity_std, cfg.bio, cfg.target_proj_size
    if conv:
        kernel_pool, _, dec_in = decoder_pooling(c, out_shape[1], cfg.dim_in_decoder)
        pooled = (c, math.ceil(out_shape[1] / kernel_pool[0]), math.ceil(out_shape[2] / kernel_pool[1]))
        sim_layer = c * c * 9 * out_shape[1] * out_shape[2]
    else:
        dec_in, pooled, sim_layer = c, out_shape, c * c
    fwd = grad = 0.0  # grad: the forward MACs whose backward costs 2x (they act on h)
    params = 0

    def features() -> None:  # sim_features(h) and the similarity matrix of them
        nonlocal grad
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
        params += dec_in * (P if bio else classes) + (P if bio else classes)
    if (sup_sim or cfg.loss_unsup == "sim") and not bio:   # the sim layer exists (bias-free)
        params += c * c * (9 if conv else 1)
    if cfg.loss_unsup == "recon":                          # recon exists, used or not
        params += (c * in_shape[0] * kernel * kernel if conv else c * in_shape[0]) + in_shape[0]
    if sup_sim:
        features()
        fwd += (classes * P + B * P) if bio else B * classes   # target S(label code)
    unsup = cfg.alpha != 0 and cfg.loss_unsup != "none" and not (cfg.loss_unsup == "recon" and first)
    if unsup and cfg.loss_unsup == "sim":
        features()
        fwd += B * _sim_width(in_shape, use_std)                # target S(block input)
    elif unsup:                                                  # recon: the block's op, transposed
        grad += layer_macs
    return fwd + grad, fwd + 3 * grad, params


# --------------------------------------------------------------- the methods' heads
def _method_head(cfg, site: Site, in_shape: tuple[int, ...]) -> Tally:
    """The head --method puts at `site` (the module's input of in_shape)."""
    head_cost = registry.get(cfg.method).head_cost
    if head_cost is not None:
        return head_cost(cfg, site)
    out_shape = (site.channels, site.side, site.side) if site.side is not None else (site.channels,)
    fwd, train, params = _heads(cfg, in_shape, out_shape, 0.0, site.layer == 0, site.num_classes)
    return Tally(fwd, train, params)


# ------------------------------------------------------------- the paper's networks
def _block(cfg, kind, in_shape, out_shape, macs, index, classes, first: bool, params: int,
           kernel: int = 3) -> LayerCost:
    """first: a first layer as the reference builds it (no recon loss): a VGG's first
    conv, and the first linear block of the mlp and of a VGG's head (nets/models.py).
    params: the layer's weights and bias (its BatchNorm's are added here)."""
    input_grad = index > 0 and (cfg.backprop or cfg.no_detach)
    head_cost = registry.get(cfg.method).head_cost
    if head_cost is not None and not cfg.backprop:
        head = head_cost(cfg, block_sites(cfg, run_spec(cfg))[index])
        head_fwd, head_train, head_params = head.forward, head.train, head.params
    else:
        head_fwd, head_train, head_params = _heads(cfg, in_shape, out_shape, macs, first, classes, kernel)
    norm = 0 if cfg.no_batch_norm else 2 * out_shape[0]
    return LayerCost(kind, out_shape, forward=macs, heads=head_fwd,
                     train=macs * (2 + input_grad) + head_train, params=params + norm, head_params=head_params)


def _linear_blocks(cfg, layers: list, n_in: int, index: int, classes: int) -> int:
    for i in range(cfg.num_layers):
        macs = n_in * cfg.num_hidden
        layers.append(_block(cfg, "linear", (n_in,), (cfg.num_hidden,), macs, index, classes,
                             first=i == 0, params=macs + cfg.num_hidden))
        n_in, index = cfg.num_hidden, index + 1
    return n_in


def _output(cfg, n_in: int, classes: int, after_block: bool) -> LayerCost:
    macs = n_in * classes
    input_grad = after_block and (cfg.backprop or cfg.no_detach)
    return LayerCost("output", (classes,), forward=macs, train=macs * (2 + input_grad), params=macs + classes)


# --------------------------------------------------------------------------- networks
COSTS: dict[str, Callable] = {}


def mlp_cost(cfg, spec) -> NetworkCost:
    """models.build_mlp: flatten, num_layers linear blocks, output."""
    n_in = spec.channels * spec.size * spec.size
    layers = [LayerCost("flatten", (n_in,))]
    n_out = _linear_blocks(cfg, layers, n_in, 0, spec.num_classes)
    return NetworkCost(tuple(layers), _output(cfg, n_out, spec.num_classes, True))


def vgg_cost(name: str, cfg, spec) -> NetworkCost:
    """models.build_vgg: archspec.vgg_layers (convs, max-pools), flatten, the MLP head, output."""
    layers: list[LayerCost] = []
    walk = vgg_layers(name, cfg.feat_mult, spec.channels, spec.size)
    for item in walk:
        if not isinstance(item, ConvLayer):
            layers.append(LayerCost("pool", (item.channels, item.side, item.side)))
            continue
        weights = item.c_in * item.c_out * item.kernel ** 2
        layers.append(_block(cfg, "conv", (item.c_in, item.side_in, item.side_in), (item.c_out, item.side, item.side),
                             item.side * item.side * weights, item.index, spec.num_classes, first=item.index == 0,
                             params=weights + item.c_out, kernel=item.kernel))
    n_flat, index = vgg_flat(walk, spec.channels, spec.size)
    layers.append(LayerCost("flatten", (n_flat,)))
    n_out = _linear_blocks(cfg, layers, n_flat, index, spec.num_classes)
    return NetworkCost(tuple(layers), _output(cfg, n_out, spec.num_classes, index + cfg.num_layers > 0))


def resnet_cost(arch: str, cfg, spec) -> NetworkCost:
    """resnet.build_resnet: K - 1 local modules (archspec.resnet_sites), each a run of
    residual layers with its method's head; the output module: the remaining layers,
    global average pooling, the classifier. A module's first layer reads a detached
    input (no input gradient); so does the image."""
    plan, spans = resnet_sites(cfg, arch, spec, registry.get(cfg.method).module_count)
    layers = []
    for span in spans:
        body = Tally()
        for i in range(span.start, span.stop):
            body.residual(plan[i], input_grad=i > span.start)
        first = plan[span.start]
        head = _method_head(cfg, span.site, (first.c_in, first.side_in, first.side_in))
        site = span.site
        layers.append(LayerCost("module", (site.channels, site.side, site.side), forward=body.forward,
                                heads=head.forward, train=body.train + head.train, params=body.params,
                                head_params=head.params))
    start = spans[-1].stop if spans else 0
    out = Tally()
    for i in range(start, len(plan)):
        out.residual(plan[i], input_grad=i > start)
    out.linear(plan[-1].c_out, spec.num_classes, input_grad=start < len(plan))
    return NetworkCost(tuple(layers), LayerCost("output", (spec.num_classes,), forward=out.forward,
                                                train=out.train, params=out.params))


COSTS["mlp"] = mlp_cost
for _name in VGG_CONFIGS:
    COSTS[_name] = lambda cfg, spec, _n=_name: vgg_cost(_n, cfg, spec)
for _name in RESNET_BLOCKS:
    COSTS[_name] = lambda cfg, spec, _n=_name: resnet_cost(_n, cfg, spec)


def network_cost(cfg) -> NetworkCost:
    """The cost of the network a training config (config.parse_train_args, or any object
    with its fields) builds on its dataset, at its batch size."""
    if cfg.model not in COSTS:
        raise ConfigError(f"--model: no cost model for {cfg.model!r} (known: {', '.join(sorted(COSTS))})")
    return COSTS[cfg.model](cfg, run_spec(cfg))


# --------------------------------------------------------------------------- a run's cost
# A run's cost beside its error (docs/peers.md): the parameters and multiply-adds of
# its auxiliary heads apart from the backbone's, as metrics.json records them.
# Parameters are counted on the built model (backbone: what backprop would train,
# `params_backprop`; heads: the rest). Multiply-adds per example come from the
# architecture model above, forward only (a test example for the backbone; the heads'
# forward for a training example), and are left out (None) for a network this module
# has no model of yet. A record older than those keys (the committed Fashion-MNIST runs)
# is counted again from its recorded config by `recorded_head_macs`, the trainer's
# defaults under it: the recipe fills in its own flags, so the tables read records and
# build no parser.


def head_cost(cfg, params_backprop: int, params_total: int) -> dict:
    """head_params, backbone_params, head_macs and backbone_macs of one run (macs:
    None where recipe/cost.py has no model of the network)."""
    out = {"backbone_params": params_backprop, "head_params": params_total - params_backprop,
           "backbone_macs": None, "head_macs": None}
    try:
        cost = network_cost(cfg)
    except ConfigError:
        return out   # no cost model of this network (yet)
    out["backbone_macs"] = cost.eval_macs
    out["head_macs"] = sum(layer.heads for layer in cost.layers)
    return out


def recorded_head_macs(config: dict) -> float | None:
    """The heads' multiply-adds of a recorded config (metrics.json's `config`, the
    trainer's defaults under it) for a record without `head_macs`, or None where
    recipe/cost.py cannot count it: a cost column never stops the tables."""
    from .config import build_parser
    try:
        return head_cost(argparse.Namespace(**{**vars(build_parser().parse_args([])), **config}), 0, 0)["head_macs"]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
