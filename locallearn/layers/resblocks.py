"""The residual BasicBlock of He et al. (2016), CIFAR variant: two 3x3 convs with
BatchNorm, a 1x1 conv + BatchNorm projection shortcut where the shape changes,
ReLU after the sum. Shared by the ResNets (nets/resnet.py) and AugLocal's auxiliary
networks (methods/auglocal.py), whose layout it follows (ChenxiangMA/AugLocal,
networks/resnet.py BasicBlock, commit 98c90d6), submodule names included."""
from __future__ import annotations

import math

import torch.nn as nn


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.downsample = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
                           if stride != 1 or c_in != c_out else None)
        self.out_channels = c_out

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


def he_init(model: nn.Module) -> None:
    """Their initialisation, over every module of the model, local heads included (their
    loop runs over self.modules() after the heads are built): conv weights
    normal(0, sqrt(2 / (k*k*out_channels))), BatchNorm2d weight 1 and bias 0; linear
    layers keep PyTorch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
