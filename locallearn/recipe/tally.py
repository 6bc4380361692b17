"""Counting a run of layers' multiply-adds and parameters, layer by layer (no torch
import): the cost model (recipe/cost.py) and every method's head plan (methods/) add up
their layers with it. What is counted is what torch's FlopCounterMode counts: matrix
products and convolutions; BatchNorm adds parameters only (recipe/cost.py says why).
"""
from __future__ import annotations

from dataclasses import dataclass

from .archspec import ResidualLayer


@dataclass
class Tally:
    """MACs (forward; forward + backward) and parameters of a run of layers, added up
    layer by layer. input_grad: whether the layer's input requires a gradient (its
    backward then computes one: 2x forward, else 1x, the weight gradient alone)."""
    forward: float = 0.0
    train: float = 0.0
    params: int = 0

    def op(self, macs: float, weights: int, input_grad: bool) -> None:
        self.forward += macs
        self.train += macs * (2 + input_grad)
        self.params += weights

    def conv(self, c_in: int, c_out: int, k: int, side: int, input_grad: bool, bias: bool = False) -> None:
        """A k x k convolution with a side x side output."""
        self.op(side * side * c_in * c_out * k * k, c_in * c_out * k * k + (c_out if bias else 0), input_grad)

    def linear(self, n_in: int, n_out: int, input_grad: bool, bias: bool = True) -> None:
        self.op(n_in * n_out, n_in * n_out + (n_out if bias else 0), input_grad)

    def norm(self, channels: int) -> None:
        """A BatchNorm's weight and bias (its running statistics are buffers)."""
        self.params += 2 * channels

    def residual(self, layer: ResidualLayer, input_grad: bool) -> None:
        """The ResNets' stem (conv 3x3 + BN) or a BasicBlock (two 3x3 conv + BN, the
        1x1 conv + BN projection shortcut where the shape changes), layers/localnet.py."""
        self.conv(layer.c_in, layer.c_out, 3, layer.side, input_grad)
        self.norm(layer.c_out)
        if layer.kind == "stem":
            return
        self.conv(layer.c_out, layer.c_out, 3, layer.side, True)
        self.norm(layer.c_out)
        if layer.projection:
            self.conv(layer.c_in, layer.c_out, 1, layer.side, input_grad)
            self.norm(layer.c_out)
