"""InfoPro with its contrastive head (Wang et al., ICLR 2021, "InfoPro (Contrast)" of
its Table 2): InfoPro's reconstruction of the image (I(h; x)), and for I(h; y) a
supervised contrastive loss on a 128-dimensional projection instead of a classifier.

As InfoPro's code builds it (blackfeather-wang/InfoPro-Pytorch, commit a38362a,
"Experiments on CIFAR-SVHN-STL10/networks/": auxiliary_nets.py Decoder and AuxClassifier
with `--aux_net_config 1c2f --local_loss_mode contrast --aux_net_feature_dim 128`,
losses.py SupConLoss, resnet.py forward; the flags every line of its comand.sh passes):
  reconstruction: InfoPro's (methods/infopro.py);
  projection: infopro.py's classifier with its last linear layer 128 -> 128 instead of
    128 -> classes; z = the projection L2-normalised;
  contrast: SupCon with temperature 0.07 over the whole batch (`supcon`);
  loss = ixx(module) * bce + ixy(module) * contrast.

The whole method is this file: its cost, its loss, its head (`build_head`, the only
place torch is imported) and `METHOD`. It shares infopro.py's plan and its --ixx-1/--ixx-2 flags.
"""
from __future__ import annotations

import functools
from dataclasses import replace

from ..recipe.archspec import Site, interpolate
from ..recipe.tally import Tally
from . import infopro
from .method import Method

FEATURE_DIM = 128     # --aux_net_feature_dim of every comand.sh line
TEMPERATURE = 0.07    # AuxClassifier.forward passes it; SupConLoss's base temperature is the same


def head_cost(cfg, site: Site) -> Tally:
    """infopro's head with its last linear layer to FEATURE_DIM outputs instead of the
    classes, and the batch's similarities: z_i . z_a for every a, B x FEATURE_DIM
    multiply-adds per example (a batch of B costs B^2 x FEATURE_DIM)."""
    t = infopro.head_cost(cfg, replace(site, num_classes=FEATURE_DIM))
    t.op(cfg.batch_size * FEATURE_DIM, 0, True)
    return t


def supcon(z, y, temperature: float = TEMPERATURE):
    """The supervised contrastive loss (Khosla et al., 2020) as InfoPro's losses.py
    computes it for one view: for each anchor i, the mean over its positives p (same label,
    not i) of -log(exp(z_i.z_p / t) / sum over a != i of exp(z_i.z_a / t)); an anchor
    without positives counts 0; the mean over the batch. z: B x D, L2-normalised."""
    import torch
    b = z.shape[0]
    logits = z @ z.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()   # their numerical shift
    others = 1 - torch.eye(b, dtype=z.dtype, device=z.device)
    positive = (y[:, None] == y[None, :]).to(z.dtype) * others
    log_prob = logits - torch.log((torch.exp(logits) * others).sum(1, keepdim=True))
    count = positive.sum(1)
    count = torch.where(count == 0, torch.ones_like(count), count)
    return -((positive * log_prob).sum(1) / count).mean()


@functools.cache
def head_class():
    """InfoProContrastHead, defined on first use: importing this file imports no torch."""
    import torch.nn as nn
    import torch.nn.functional as F

    class InfoProContrastHead(infopro.head_class()):
        def __init__(self, site: Site, ixx: float, ixy: float):
            super().__init__(site, ixx, ixy)
            self.classifier[-1] = nn.Linear(infopro.HIDDEN, FEATURE_DIM)   # the projection

        def forward(self, h, x, y, y_onehot, image=None):
            bce = self.reconstruction_loss(h, image)
            contrast = supcon(F.normalize(self.classifier(h), dim=1), y)
            return self.ixx * bce + self.ixy * contrast, {"contrast": contrast.detach(), "recon": bce.detach()}

    return InfoProContrastHead


def build_head(cfg, site: Site):
    return head_class()(site, interpolate(cfg.ixx_1, cfg.ixx_2, site), interpolate(cfg.ixy_1, cfg.ixy_2, site))


METHOD = Method(
    "infoprocontrast", "InfoPro's reconstruction plus its supervised contrastive head (InfoPro (Contrast))",
    build_head, head_cost, check=infopro.check, needs_image=True)
