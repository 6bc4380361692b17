"""InfoPro (Wang et al., ICLR 2021): each local module's output must keep the
information needed to reconstruct the input image (I(h; x)) and to predict the label
(I(h; y)); their weights lambda_1 (ixx) and lambda_2 (ixy) move linearly over the
modules from (--ixx-1, --ixy-1) at the first head to (--ixx-2, --ixy-2) at the last.

As AugLocal's code builds it (ChenxiangMA/AugLocal, commit 98c90d6: networks/resnet.py
LocalResNet._local_forward and forward; networks/auxiliary_nets.py Decoder_InfoPro
'2c' and AuxNetwork 'InfoPro'; train.py sets '2c' for the rule):
  reconstruction: h resized bilinearly (align_corners) to the image size, conv 3x3 to
    12 channels, BatchNorm, ReLU, conv 3x3 to the image's channels, sigmoid; binary
    cross-entropy against the image restored to [0, 1] (un-normalised);
  classifier: conv 3x3 (16 -> 32 and 32 -> 64 with stride 2, 64 -> 64 stride 1),
    BatchNorm, ReLU, global average pool, linear to 128, ReLU, linear to the classes.
  loss = ixx(module) * bce + ixy(module) * cross-entropy.
On a VGG's convs the same head, its classifier conv by the rule behind their widths
(headplans.infopro_classifier_conv). Linear blocks (the mlp, a VGG's classifier
blocks) have no feature map to decode into an image: refused (docs/methods.md).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..recipe.headplans import INFOPRO_HIDDEN as HIDDEN
from ..recipe.headplans import INFOPRO_RECON_WIDTH as RECON_WIDTH
from ..recipe.headplans import infopro_classifier_conv, infopro_refusal
from .site import Site, interpolate


class InfoProHead(nn.Module):
    def __init__(self, site: Site, ixx: float, ixy: float):
        super().__init__()
        refusal = infopro_refusal(site)
        if refusal:
            raise ConfigError(refusal)
        width, stride = infopro_classifier_conv(site)
        self.image_size = site.image_size
        self.reconstruction = nn.Sequential(
            nn.Conv2d(site.channels, RECON_WIDTH, 3, padding=1), nn.BatchNorm2d(RECON_WIDTH), nn.ReLU(),
            nn.Conv2d(RECON_WIDTH, site.image_channels, 3, padding=1), nn.Sigmoid())
        self.classifier = nn.Sequential(
            nn.Conv2d(site.channels, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, HIDDEN), nn.ReLU(),
            nn.Linear(HIDDEN, site.num_classes))
        self.ixx, self.ixy = ixx, ixy
        # the data's normalisation, to restore the image to [0, 1]; kept in float64 and
        # cast to the image's dtype in forward, so a float64 run (the golden tests) gets
        # the exact constants and a float32 one the same float32 values as always
        for name, value in (("mean", site.image_mean), ("std", site.image_std)):
            self.register_buffer(name, torch.tensor(value, dtype=torch.float64).view(1, -1, 1, 1), persistent=False)

    def forward(self, h, x, y, y_onehot, image=None):
        if image is None:
            raise ConfigError("--method infopro: the head needs the network's input image")
        up = F.interpolate(h, size=[self.image_size, self.image_size], mode="bilinear", align_corners=True)
        # the restored image lies in [0, 1] for real data; the clamp (an identity there)
        # keeps synthetic inputs from stopping binary cross-entropy
        target = (image * self.std.to(image.dtype) + self.mean.to(image.dtype)).clamp(0, 1)
        bce = F.binary_cross_entropy(self.reconstruction(up), target)
        logits = self.classifier(h)
        ce = F.cross_entropy(logits, y)
        return self.ixx * bce + self.ixy * ce, {"pred_logits": logits, "ce": ce.detach(), "recon": bce.detach()}


def build_head(cfg, site: Site) -> InfoProHead:
    return InfoProHead(site, interpolate(cfg.ixx_1, cfg.ixx_2, site), interpolate(cfg.ixy_1, cfg.ixy_2, site))
