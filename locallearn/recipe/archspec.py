"""The architecture walk: the layers each network is made of, as plain numbers (no
torch import). The builders (nets/models.py for the VGGs, nets/resnet.py for the ResNets) make
their torch modules from these lists, and the cost model (recipe/cost.py) counts the same
lists, so the two cannot walk a network differently.

  vgg_layers      a VGG of specs.VGG_CONFIGS: its convs (with the STL-10 stem) and max-pools
  resnet_layers   a CIFAR ResNet: the stem and the BasicBlocks, with strides and sides
  local_modules   K, the local modules a ResNet is cut into (--local-modules, the method)
  resnet_sites    where a ResNet's local heads sit (a Site per head)
  block_sites     where the mlp's and a VGG's heads sit (a Site per hidden block)
  decoder_pooling how a conv block's local head pools before its decoder (the layers
                  build it, the cost model counts it)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError
from .specs import RESNET_BLOCKS, VGG_CONFIGS, run_spec


def conv_side(side: int, kernel: int, stride: int, padding: int) -> int:
    return (side + 2 * padding - kernel) // stride + 1


# ==================================================================================== VGG
@dataclass(frozen=True)
class ConvLayer:
    """One conv block of a VGG (conv -> BatchNorm -> nonlinearity -> dropout)."""
    index: int          # the block's index in the network (its local head's)
    c_in: int
    c_out: int
    kernel: int
    stride: int
    padding: int
    side_in: int
    side: int           # output side


@dataclass(frozen=True)
class MaxPool:
    channels: int
    side: int           # output side


def vgg_layers(name: str, feat_mult: float, channels: int, size: int) -> list[ConvLayer | MaxPool]:
    """The convs and 2x2 max-pools of VGG_CONFIGS[name], in order. Inputs wider than
    64 px (STL-10) get a 7x7 stride-2 stem instead of the first 3x3 conv."""
    layers: list[ConvLayer | MaxPool] = []
    c_in, side, index = channels, size, 0
    for item in VGG_CONFIGS[name]:
        if item == "M":
            side //= 2
            layers.append(MaxPool(c_in, side))
            continue
        c = int(item * feat_mult)
        k, stride, pad = (7, 2, 3) if index == 0 and size > 64 else (3, 1, 1)
        out = conv_side(side, k, stride, pad)
        layers.append(ConvLayer(index, c_in, c, k, stride, pad, side, out))
        c_in, side, index = c, out, index + 1
    return layers


def vgg_flat(layers: list[ConvLayer | MaxPool], channels: int, size: int) -> tuple[int, int]:
    """(features after flattening the last map, hidden blocks so far)."""
    last = layers[-1] if layers else None
    c = last.c_out if isinstance(last, ConvLayer) else (last.channels if last else channels)
    side = last.side if last else size
    return c * side * side, sum(isinstance(l, ConvLayer) for l in layers)


# ================================================================================ ResNets
# Blocks per stage (specs.RESNET_BLOCKS), and the stages' widths (He et al., 2016;
# ChenxiangMA/AugLocal networks/resnet.py, commit 98c90d6).

WIDTHS = (16, 32, 64)

# The local-module counts networks/configs.py defines for each network (K = 1:
# end-to-end). A method that changes K (AugLocal) slices its full list instead: any
# K from 1 to the layer count.
DEFINED_K = {"resnet32": (1, *range(2, 14), 16), "resnet110": (1, *range(47, 56))}
DEFAULT_K = {"resnet32": 16, "resnet110": 55}

# Where a ResNet's K - 1 local heads sit (--placement): `auglocal`, after layers 0 ..
# K-2 (AugLocal's networks/configs.py, every K it defines); `infopro`, where InfoPro's
# networks/configs.py puts them (blackfeather-wang/InfoPro-Pytorch, commit a38362a,
# "Experiments on CIFAR-SVHN-STL10", dict InfoPro), as its [stage, block] pairs (stage 0:
# the stem; global layer 1 + n (stage - 1) + block for n blocks per stage).
PLACEMENTS = ("auglocal", "infopro")
INFOPRO_CONFIGS = {
    "resnet32": {2: [[2, 1]], 3: [[1, 4], [2, 4]], 4: [[1, 2], [2, 1], [3, 0]],
                 8: [[1, 0], [1, 2], [1, 4], [2, 1], [2, 3], [3, 0], [3, 2]],
                 16: [[0, 0], [1, 0], [1, 1], [1, 2], [1, 3], [1, 4], [2, 0], [2, 1], [2, 2], [2, 3], [2, 4],
                      [3, 0], [3, 1], [3, 2], [3, 3]]},
    "resnet110": {2: [[2, 8]], 3: [[1, 17], [2, 17]], 4: [[1, 11], [2, 7], [3, 3]],
                  8: [[1, 4], [1, 11], [2, 0], [2, 7], [2, 14], [3, 3], [3, 10]],
                  16: [[1, 1], [1, 4], [1, 7], [1, 10], [1, 13], [1, 16], [2, 1], [2, 4], [2, 7], [2, 11],
                       [2, 15], [3, 1], [3, 5], [3, 9], [3, 13]]},
}


def head_layers(arch: str, k: int, placement: str = "auglocal") -> list[int]:
    """The global layers (0: the stem) after which the K - 1 local heads of `arch` sit."""
    if placement == "auglocal" or k == 1:
        return list(range(k - 1))
    n = RESNET_BLOCKS[arch]
    return [0 if stage == 0 else 1 + n * (stage - 1) + block for stage, block in INFOPRO_CONFIGS[arch][k]]


@dataclass(frozen=True)
class ResidualLayer:
    """Layer 0 (kind 'stem': conv 3x3 + BatchNorm + ReLU) or a BasicBlock ('basic')."""
    kind: str
    c_in: int
    c_out: int
    stride: int
    side_in: int
    side: int           # output side

    @property
    def projection(self) -> bool:
        """A BasicBlock whose shape changes has a 1x1 conv + BatchNorm shortcut."""
        return self.kind == "basic" and (self.stride != 1 or self.c_in != self.c_out)


def resnet_layers(arch: str, channels: int, size: int) -> list[ResidualLayer]:
    """The stem, then three stages of RESNET_BLOCKS[arch] BasicBlocks (stride 2 entering
    stages 2 and 3)."""
    layers = [ResidualLayer("stem", channels, WIDTHS[0], 1, size, size)]
    c, side = WIDTHS[0], size
    for stage, width in enumerate(WIDTHS):
        for j in range(RESNET_BLOCKS[arch]):
            stride = 2 if stage > 0 and j == 0 else 1
            out = conv_side(side, 3, stride, 1)
            layers.append(ResidualLayer("basic", c, width, stride, side, out))
            c, side = width, out
    return layers


def local_modules(cfg, arch: str, module_count) -> int:
    """K, the local modules built: --local-modules (0: the network's default), 1 under
    --backprop, or what the method's `module_count(cfg, K)` rule makes of it (the
    method's Method.module_count, None for most: AugLocal builds K - d)."""
    if cfg.backprop:
        return 1
    k = cfg.local_modules or DEFAULT_K[arch]
    changed = module_count(cfg, k) if module_count else None
    if changed is not None:
        if not 1 <= changed <= 1 + 3 * RESNET_BLOCKS[arch]:
            raise ConfigError(f"--local-modules: {k} under --method {cfg.method} leaves {changed} local modules "
                              f"(a ResNet {arch} has 1 to {1 + 3 * RESNET_BLOCKS[arch]})")
        return changed
    placement = getattr(cfg, "placement", "auglocal")
    if placement == "infopro" and k not in (1, *INFOPRO_CONFIGS[arch]):
        raise ConfigError(f"--local-modules: under --placement infopro, {arch} is split into "
                          f"{', '.join(map(str, (1, *INFOPRO_CONFIGS[arch])))} modules (those InfoPro's "
                          f"networks/configs.py defines), not {k}")
    if placement != "infopro" and k not in DEFINED_K[arch]:
        raise ConfigError(f"--local-modules: {arch} is split into {', '.join(map(str, DEFINED_K[arch]))} modules "
                          f"(those AugLocal's networks/configs.py defines), not {k}")
    return k


# ================================================================================= sites
@dataclass(frozen=True)
class Site:
    """One local head's position: what a method needs to know to build it.

    channels, side: the module's output, B x channels x side x side; side None for a
                    linear block (B x channels).
    in_channels:    the module's input channels (the paper's recon mirrors the conv).
    module:         0-based index of the local module this head trains.
    modules:        K, the network's local modules, the last one (trained by the
                    output loss) included.
    layer:          global index of the module's last layer (0: the first).
    widths:         every layer's output channels, first layer first (AugLocal samples
                    its auxiliary layers from them).
    image_channels, image_size, num_classes, image_mean, image_std: the data (its
                    normalisation, for heads that restore the image).
    kinds, pools:   on the mlp and the VGGs, each layer's kind ('conv' or 'linear')
                    and the 2x2 max-pools in front of it; empty on the ResNets (their
                    layers are residual, their downsampling a stride).
    """
    channels: int
    side: int | None
    in_channels: int
    module: int
    modules: int
    layer: int
    widths: tuple[int, ...]
    image_channels: int
    image_size: int
    num_classes: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    kinds: tuple[str, ...] = ()
    pools: tuple[int, ...] = ()

    @property
    def ratio(self) -> float:
        """Where the module lies between the first (0) and the last local head (1):
        module / (K - 2), 0 for K <= 2 (AugLocal's networks/resnet.py, forward)."""
        return self.module / (self.modules - 2) if self.modules > 2 else 0.0


def interpolate(first: float, last: float, site: Site) -> float:
    """A weight that moves linearly from `first` at the first local head to `last` at
    the last one (InfoPro's lambda schedule over modules; AugLocal's ixx/ixy)."""
    return first * (1 - site.ratio) + last * site.ratio


@dataclass(frozen=True)
class ModuleSpan:
    """A local module of a ResNet: layers [start, stop) and the site of its head."""
    start: int
    stop: int
    site: Site


def resnet_sites(cfg, arch: str, spec, module_count) -> tuple[list[ResidualLayer], list[ModuleSpan]]:
    """The layers and the K - 1 local modules: a head after each of head_layers (by
    --placement: AugLocal's layers 0 .. K-2, or InfoPro's); the layers after the last
    head belong to the output module. module_count: the method's rule (local_modules)."""
    layers = resnet_layers(arch, spec.channels, spec.size)
    k = local_modules(cfg, arch, module_count)
    widths = tuple(l.c_out for l in layers)
    spans = []
    for module, last in enumerate(head_layers(arch, k, getattr(cfg, "placement", "auglocal"))):
        start = spans[-1].stop if spans else 0
        site = Site(channels=layers[last].c_out, side=layers[last].side, in_channels=layers[start].c_in,
                    module=module, modules=k, layer=last, widths=widths, image_channels=spec.channels,
                    image_size=spec.size, num_classes=spec.num_classes, image_mean=spec.mean, image_std=spec.std)
        spans.append(ModuleSpan(start, last + 1, site))
    return layers, spans


# ========================================================================= mlp and VGGs
def block_sites(cfg, spec) -> list[Site]:
    """A Site per hidden block of the mlp or a VGG (every block is a local module with
    its own head; the output layer is the last module, K = blocks + 1): a VGG's convs
    (archspec.vgg_layers), then the linear blocks of the mlp or of a VGG's classifier."""
    kinds, widths, sides, ins, pools = [], [], [], [], []
    if cfg.model == "mlp":
        n_flat = spec.channels * spec.size * spec.size
    else:
        walk = vgg_layers(cfg.model, cfg.feat_mult, spec.channels, spec.size)
        waiting = 0
        for item in walk:
            if isinstance(item, MaxPool):
                waiting += 1
                continue
            kinds.append("conv"), widths.append(item.c_out), sides.append(item.side), ins.append(item.c_in)
            pools.append(waiting)
            waiting = 0
        n_flat, _ = vgg_flat(walk, spec.channels, spec.size)
    n_in = n_flat
    for _ in range(cfg.num_layers):
        kinds.append("linear"), widths.append(cfg.num_hidden), sides.append(None), ins.append(n_in)
        pools.append(0)
        n_in = cfg.num_hidden
    k = len(widths) + 1
    return [Site(channels=widths[i], side=sides[i], in_channels=ins[i], module=i, modules=k, layer=i,
                 widths=tuple(widths), image_channels=spec.channels, image_size=spec.size,
                 num_classes=spec.num_classes, image_mean=spec.mean, image_std=spec.std,
                 kinds=tuple(kinds), pools=tuple(pools)) for i in range(len(widths))]


def hidden_blocks(cfg, module_count) -> int:
    """The hidden blocks of the network `cfg` builds: the units local losses train and a
    pipeline splits (a ResNet's local modules before the output module; the mlp's and a
    VGG's blocks). module_count: the method's rule (local_modules)."""
    spec = run_spec(cfg)
    if cfg.model in RESNET_BLOCKS:
        return len(resnet_sites(cfg, cfg.model, spec, module_count)[1])
    return len(block_sites(cfg, spec))


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
