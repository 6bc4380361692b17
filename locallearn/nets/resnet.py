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

from ..recipe.archspec import ResidualLayer, resnet_sites
from ..layers.localnet import Block, LocalNet
from ..methods import registry
from ..layers.localnet import BasicBlock, he_init


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


def residual_layer(layer: ResidualLayer) -> nn.Module:
    """The torch module of one layer of archspec.resnet_layers."""
    if layer.kind == "stem":
        return nn.Sequential(nn.Conv2d(layer.c_in, layer.c_out, 3, padding=1, bias=False),
                             nn.BatchNorm2d(layer.c_out), nn.ReLU())
    return BasicBlock(layer.c_in, layer.c_out, layer.stride)


def build_resnet(arch: str, cfg, spec) -> LocalNet:
    method = registry.get(cfg.method)
    plan, spans = resnet_sites(cfg, arch, spec, method.module_count)
    layers = [residual_layer(l) for l in plan]
    modules = [LocalModule(layers[s.start:s.stop], method.build_head(cfg, s.site), s.site.module, s.site.channels)
               for s in spans]
    start = spans[-1].stop if spans else 0
    output = nn.Sequential(*layers[start:], nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(plan[-1].c_out, spec.num_classes))
    net = LocalNet(modules, output, spec.num_classes)
    he_init(net)
    return net
