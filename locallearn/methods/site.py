"""Where a local head sits: what a method needs to know to build one."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Site:
    """One local module's head position.

    channels, side: the module's output (B x channels x side x side).
    in_channels:    the module's input channels (the paper's recon mirrors the conv).
    module:         0-based index of the local module this head trains.
    modules:        K, the network's local modules, the last one (trained by the
                    output loss) included.
    layer:          global index of the module's last layer (0: the stem).
    widths:         every layer's output channels, stem first (AugLocal samples its
                    auxiliary layers from them).
    image_channels, image_size, num_classes, image_mean, image_std: the data (its
                    normalisation, for heads that restore the image).
    """
    channels: int
    side: int
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

    @property
    def ratio(self) -> float:
        """Where the module lies between the first (0) and the last local head (1):
        module / (K - 2), 0 for K <= 2 (AugLocal's networks/resnet.py, forward)."""
        return self.module / (self.modules - 2) if self.modules > 2 else 0.0


def interpolate(first: float, last: float, site: Site) -> float:
    """A weight that moves linearly from `first` at the first local head to `last` at
    the last one (InfoPro's lambda schedule over modules; AugLocal's ixx/ixy)."""
    return first * (1 - site.ratio) + last * site.ratio
