"""CIFAR ResNet-32 and ResNet-110 (He et al., 2016) cut into K gradient-isolated local
modules, as the local-learning peers train them (AugLocal, InfoPro, DGL).

Layers: layer 0 is the stem (conv 3x3 to 16 channels, BatchNorm, ReLU), then three
stages of n BasicBlocks of 16, 32, 64 channels (stride 2 entering stages 2 and 3);
n = 5 (ResNet-32), 18 (ResNet-110). The output part is global average pooling and a
linear classifier. A local head follows layers 0 .. K-2 (ChenxiangMA/AugLocal
networks/configs.py, commit 98c90d6: every K it defines puts the heads there); the
layers after the last head, the pooling and the classifier form the last module,
trained by the output loss alone. K = 1 is end-to-end backprop.

Each local module is a `LocalModule`: a Block of the flat LocalNet whose layer is a run
of residual layers; its head comes from the method registry (methods/).
"""
from __future__ import annotations

import torch.nn as nn

from .errors import ConfigError
from .localnet import Block, LocalNet
from .methods import METHODS, Site
from .resblocks import BasicBlock, he_init
from .specs import RESNET_BLOCKS

DEPTHS = RESNET_BLOCKS   # blocks per stage
WIDTHS = (16, 32, 64)

# The local-module counts networks/configs.py defines for each network (K = 1:
# end-to-end). AugLocal slices its full list instead: any K - d from 1 to the layer
# count (methods/auglocal.py).
DEFINED_K = {"resnet32": (1, *range(2, 14), 16), "resnet110": (1, *range(47, 56))}
DEFAULT_K = {"resnet32": 16, "resnet110": 55}


class LocalModule(Block):
    """A run of residual layers with one local head on its output. Shares Block's
    interface (head, index, dropout seeding: none here) but not its layer -> BN ->
    nonlinearity: the residual layers carry their own."""

    def __init__(self, layers: list[nn.Module], head: nn.Module | None, index: int, channels: int):
        nn.Module.__init__(self)  # Block.__init__ builds the paper's BN and nonlinearity
        self.layer = nn.Sequential(*layers)
        self.head, self.index, self.channels = head, index, channels
        self.bn, self.p, self.conv = None, 0.0, True
        self._gen, self._gen_seed = None, 0

    def forward(self, x):
        h = self.layer(x)
        return h, h


def residual_layers(arch: str, in_channels: int) -> tuple[list[nn.Module], list[int], list[int]]:
    """Layer 0 (the stem) and the BasicBlocks, with each layer's output width and the
    downsampling factor of its output."""
    stem = nn.Sequential(nn.Conv2d(in_channels, WIDTHS[0], 3, padding=1, bias=False), nn.BatchNorm2d(WIDTHS[0]),
                         nn.ReLU())
    layers, widths, scales = [stem], [WIDTHS[0]], [1]
    c, scale = WIDTHS[0], 1
    for stage, width in enumerate(WIDTHS):
        for j in range(DEPTHS[arch]):
            stride = 2 if stage > 0 and j == 0 else 1
            scale *= stride
            layers.append(BasicBlock(c, width, stride))
            widths.append(width)
            scales.append(scale)
            c = width
    return layers, widths, scales


def local_modules(cfg, arch: str) -> int:
    """K, the local modules built: --local-modules (0: the network's default), 1 under
    --backprop, less the auxiliary depth for AugLocal (methods/auglocal.py)."""
    if cfg.backprop:
        return 1
    k = cfg.local_modules or DEFAULT_K[arch]
    method = METHODS[cfg.method]
    if method.modules is not None:
        k = method.modules(cfg, k)
        if not 1 <= k <= len(residual_layers(arch, 3)[0]):
            raise ConfigError(f"--local-modules: {cfg.local_modules or DEFAULT_K[arch]} less --aux-depth "
                              f"{cfg.aux_depth} leaves {k} local modules")
    elif k not in DEFINED_K[arch]:
        raise ConfigError(f"--local-modules: {arch} is split into {', '.join(map(str, DEFINED_K[arch]))} modules "
                          f"(those AugLocal's networks/configs.py defines), not {k}")
    return k


def build_resnet(arch: str, cfg, spec) -> LocalNet:
    layers, widths, scales = residual_layers(arch, spec.channels)
    k = local_modules(cfg, arch)
    method = METHODS[cfg.method]
    modules, start = [], 0
    for last in range(k - 1):   # a head after layers 0 .. K-2: module m ends at layer m
        m = last
        site = Site(channels=widths[last], side=spec.size // scales[last],
                    in_channels=widths[start - 1] if start else spec.channels, module=m, modules=k, layer=last,
                    widths=tuple(widths), image_channels=spec.channels, image_size=spec.size,
                    num_classes=spec.num_classes, image_mean=spec.mean, image_std=spec.std)
        modules.append(LocalModule(layers[start:last + 1], method.build_head(cfg, site), m, widths[last]))
        start = last + 1
    output = nn.Sequential(*layers[start:], nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(widths[-1], spec.num_classes))
    net = LocalNet(modules, output, spec.num_classes)
    he_init(net)
    return net
