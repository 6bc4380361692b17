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
(`classifier_conv`). Linear blocks (the mlp, a VGG's classifier blocks) have no
feature map to decode into an image: refused (docs/methods.md).

The whole method is this file: its plan in plain numbers, its cost, its flags and
checks, its head (`build_head`, the only place torch is imported) and `METHOD`.
"""
from __future__ import annotations

import functools

from ..errors import ConfigError
from ..recipe.archspec import Site, conv_side, interpolate
from ..recipe.specs import RESNET_BLOCKS
from ..recipe.tally import Tally
from .method import Flag, Method

RECON_WIDTH = 12
HIDDEN = 128


# ------------------------------------------------------------------------------ plan
def classifier_conv(site: Site) -> tuple[int, int]:
    """(out channels, stride) of the classifier's 3x3 conv. Their code defines it for
    the ResNets' widths only: 16 -> 32 and 32 -> 64 with stride 2, 64 -> 64 with
    stride 1 (InfoPro's AuxClassifier, AugLocal's AuxNetwork 'InfoPro'). The rule behind
    it, used on any network: the next wider width among the network's conv layers,
    with stride 2; at the widest, the same width with stride 1."""
    convs = [w for w, kind in zip(site.widths, site.kinds or ("conv",) * len(site.widths)) if kind == "conv"]
    wider = [w for w in convs if w > site.channels]
    return (min(wider), 2) if wider else (site.channels, 1)


def refusal(site: Site) -> str | None:
    """Why InfoPro's head cannot sit at `site`, or None."""
    if site.side is None:
        return ("--method infopro: its decoder upsamples a feature map to the image, and a linear block "
                "(the mlp's, a VGG's classifier blocks) has none; on a VGG use --num-layers 0")
    return None


def head_cost(cfg, site: Site) -> Tally:
    t, c = Tally(), site.channels
    if refusal(site):
        raise ConfigError(refusal(site))
    r, size = RECON_WIDTH, site.image_size
    t.conv(c, r, 3, size, True, bias=True)            # on h upsampled to the image's size
    t.norm(r)
    t.conv(r, site.image_channels, 3, size, True, bias=True)
    width, stride = classifier_conv(site)
    t.conv(c, width, 3, conv_side(site.side, 3, stride, 1), True)
    t.norm(width)
    t.linear(width, HIDDEN, True)
    t.linear(HIDDEN, site.num_classes, True)
    return t


def check(cfg) -> str | None:
    """The network must have feature maps at every head: the ResNets, or a VGG without linear blocks."""
    if cfg.model not in RESNET_BLOCKS and (cfg.model == "mlp" or cfg.num_layers > 0):
        return (f"--method: infopro's decoder upsamples a feature map to the image, and {cfg.model}'s linear "
                "blocks have none" + ("" if cfg.model == "mlp" else "; add --num-layers 0"))
    return None


# ------------------------------------------------------------------------------ head
@functools.cache
def head_class():
    """InfoProHead, defined on first use: importing this file imports no torch."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class InfoProHead(nn.Module):
        def __init__(self, site: Site, ixx: float, ixy: float):
            super().__init__()
            if refusal(site):
                raise ConfigError(refusal(site))
            width, stride = classifier_conv(site)
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
                self.register_buffer(name, torch.tensor(value, dtype=torch.float64).view(1, -1, 1, 1),
                                     persistent=False)

        def reconstruction_loss(self, h, image):
            """Binary cross-entropy of the image decoded from h against the image restored to [0, 1]."""
            if image is None:
                raise ConfigError("--method infopro: the head needs the network's input image")
            up = F.interpolate(h, size=[self.image_size, self.image_size], mode="bilinear", align_corners=True)
            # the restored image lies in [0, 1] for real data; the clamp (an identity there)
            # keeps synthetic inputs from stopping binary cross-entropy
            target = (image * self.std.to(image.dtype) + self.mean.to(image.dtype)).clamp(0, 1)
            return F.binary_cross_entropy(self.reconstruction(up), target)

        def forward(self, h, x, y, y_onehot, image=None):
            bce = self.reconstruction_loss(h, image)
            logits = self.classifier(h)
            ce = F.cross_entropy(logits, y)
            return self.ixx * bce + self.ixy * ce, {"pred_logits": logits, "ce": ce.detach(), "recon": bce.detach()}

    return InfoProHead


def build_head(cfg, site: Site):
    return head_class()(site, interpolate(cfg.ixx_1, cfg.ixx_2, site), interpolate(cfg.ixy_1, cfg.ixy_2, site))


METHOD = Method(
    "infopro", "InfoPro's image reconstruction plus classifier, lambda schedule over modules",
    build_head, head_cost, check=check, needs_image=True,
    flags=(Flag("--ixx-1", float, 0.0, "infopro: weight of the reconstruction loss at the first local head "
                                       "(predsim's sim weight in their code)"),
           Flag("--ixx-2", float, 0.0, "infopro: ... at the last local head; linear in between")))
