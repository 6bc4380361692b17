"""The paper's maths: the local losses that train every hidden block.

Nøkland & Eidnes (2019), section 3. Each hidden block's activation h (after the
nonlinearity, before dropout) feeds small heads whose losses train only that block:

  pred     cross-entropy of a linear decoder of (average-pooled) h     -> `PredHead`
  sim      || S(conv_or_linear(h)) - S(onehot(y)) ||^2                  -> `SimHead`
  predsim  (1 - beta) * pred + beta * sim
  unsup    alpha * unsup + (1 - alpha) * sup, unsup in {sim, recon}; 0 where there is
           none (--loss-unsup none, or recon in a first layer), as in the reference
  bio      labels replaced by a fixed random projection; pred through feedback alignment

`LocalHead` combines them for one block and returns one scalar loss plus statistics.
Nothing here steps an optimizer: the engines in train/engines.py decide how losses become
updates (docs/method.md, "The update").
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..recipe.archspec import decoder_pooling  # the architecture walk: the cost model counts the same pooling


# --------------------------------------------------------------------------- similarity
def similarity_matrix(x: torch.Tensor, use_std: bool = True) -> torch.Tensor:
    """Adjusted cosine similarity of the batch, B x B, in [-1, 1].

    A 4-D tensor with more than 3 channels and height > 1 is first reduced to the
    standard deviation of each channel over positions (B x C); otherwise it is
    flattened. Each row is centred by its own mean and scaled to unit norm.
    """
    if x.dim() == 4:
        if use_std and x.size(1) > 3 and x.size(2) > 1:
            x = x.reshape(x.size(0), x.size(1), -1).std(dim=2)
        else:
            x = x.reshape(x.size(0), -1)
    xc = x - x.mean(dim=1, keepdim=True)
    xn = xc / (1e-8 + xc.pow(2).sum(dim=1, keepdim=True).sqrt())
    return (xn @ xn.t()).clamp(-1, 1)


# ------------------------------------------------------------- decoder input pooling
class DecoderPool(nn.Module):
    """Average pooling before the pred decoder (identity when the kernel is 1x1).
    Padded zeros count in the average (count_include_pad), as in the reference."""

    def __init__(self, channels: int, side: int, dim_in_decoder: int):
        super().__init__()
        self.kernel, self.padding, self.out_features = decoder_pooling(channels, side, dim_in_decoder)
        self.pool = None if self.kernel == (1, 1) else nn.AvgPool2d(self.kernel, padding=self.padding)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h if self.pool is None else self.pool(h)


# ------------------------------------------------------------ feedback alignment
class _LinearFAFunction(torch.autograd.Function):
    """y = x W^T + b, but the gradient to x goes through a fixed random matrix B."""

    @staticmethod
    def forward(ctx, x, weight, bias, weight_fa):
        ctx.save_for_backward(x, weight_fa)
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def backward(ctx, grad_out):
        x, weight_fa = ctx.saved_tensors
        return grad_out @ weight_fa, grad_out.t() @ x, grad_out.sum(0), None


class LinearFA(nn.Module):
    """Feedback-alignment linear layer (Lillicrap et al., 2016) as the bio decoder."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))  # starts at zero
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.register_buffer("weight_fa", torch.empty(out_features, in_features).uniform_(-bound, bound))

    def forward(self, x):
        return _LinearFAFunction.apply(x, self.weight, self.bias, self.weight_fa)


# -------------------------------------------------------------------- one block's head
class LocalHead(nn.Module):
    """All local losses of one hidden block.

    side:     the output map's side for a conv block (h is B x C x S x S); None for a
              linear block (h is B x C).
    first:    the block is its network's first layer (recon is skipped there): the first
              conv of a VGG, and the first linear block of the mlp and of a VGG's head,
              as the reference builds its head as a network of its own.
    conv_geometry: (kernel, stride, padding) of the block's conv, mirrored by recon.
    """

    def __init__(self, cfg, channels: int, side: int | None, in_channels: int, num_classes: int,
                 first: bool, conv_geometry: tuple[int, int, int] = (3, 1, 1)):
        super().__init__()
        self.loss_sup, self.loss_unsup = cfg.loss_sup, cfg.loss_unsup
        self.alpha, self.beta, self.bio = cfg.alpha, cfg.beta, cfg.bio
        self.use_std = not cfg.no_similarity_std
        self.first = first
        self.conv = side is not None
        uses_pred = self.loss_sup in ("pred", "predsim")
        uses_sim = self.loss_sup in ("sim", "predsim") or self.loss_unsup == "sim"

        # Average pooling bounds the decoder input (conv); bio's sim also sees it.
        self.pool = DecoderPool(channels, side, cfg.dim_in_decoder) if self.conv else None
        dec_in = self.pool.out_features if self.conv else channels
        if uses_pred:
            self.decoder = LinearFA(dec_in, cfg.target_proj_size) if self.bio else nn.Linear(dec_in, num_classes)
            nn.init.zeros_(self.decoder.weight)  # zero-initialised decoders, as the reference
        if uses_sim and not self.bio:  # the learned layer under the similarity loss
            self.sim_layer = (nn.Conv2d(channels, channels, 3, padding=1, bias=False) if self.conv
                              else nn.Linear(channels, channels, bias=False))
        if self.bio:  # fixed random label projection, never trained
            proj = nn.Linear(num_classes, cfg.target_proj_size, bias=False)
            self.register_buffer("label_proj", proj.weight.detach().clone())
        if self.loss_unsup == "recon":
            k, stride, pad = conv_geometry
            self.recon = (nn.ConvTranspose2d(channels, in_channels, k, stride, pad, output_padding=stride - 1)
                          if self.conv else nn.Linear(channels, in_channels))
        self.nonlin = nn.LeakyReLU(0.01) if cfg.nonlin == "leakyrelu" else nn.ReLU()

    # The parts -----------------------------------------------------------------
    def _label_code(self, y_onehot):
        return y_onehot @ self.label_proj.t() if self.bio else y_onehot

    def sim_features(self, h):
        if self.bio:
            return self.pool(h) if self.conv else h
        return self.sim_layer(h)

    def pred_loss(self, h, y, y_onehot):
        """Returns (loss, logits) of the local decoder."""
        z = self.pool(h) if self.conv else h
        logits = self.decoder(z.flatten(1))
        if self.bio:
            target = (self._label_code(y_onehot) > 0).to(logits.dtype)
            return F.binary_cross_entropy_with_logits(logits, target), logits
        return F.cross_entropy(logits, y), logits

    def sim_loss(self, h, y_onehot):
        target = similarity_matrix(self._label_code(y_onehot), self.use_std).detach()
        return F.mse_loss(similarity_matrix(self.sim_features(h), self.use_std), target)

    # The whole -----------------------------------------------------------------
    def forward(self, h, x, y, y_onehot, image=None):
        """h: block activation before dropout; x: block input (image: the network's
        input, unused by the paper's losses). Returns (loss, stats)."""
        stats = {}
        if self.loss_sup == "pred":
            sup, logits = self.pred_loss(h, y, y_onehot)
            stats["pred_logits"] = logits
        elif self.loss_sup == "sim":
            sup = self.sim_loss(h, y_onehot)
        else:  # predsim
            pred, logits = self.pred_loss(h, y, y_onehot)
            stats["pred_logits"] = logits
            sup = (1 - self.beta) * pred + self.beta * self.sim_loss(h, y_onehot)
        if self.alpha == 0:
            return sup, stats
        if self.loss_unsup == "none" or (self.loss_unsup == "recon" and self.first):
            # The reference still weighs: alpha * 0 + (1 - alpha) * sup. Under Adam the
            # factor cancels (up to eps); under SGD it is the effective learning rate.
            return (1 - self.alpha) * sup, stats
        if self.loss_unsup == "sim":
            target = similarity_matrix(x, self.use_std).detach()
            unsup = F.mse_loss(similarity_matrix(self.sim_features(h), self.use_std), target)
        else:  # recon: reconstruct the block input after the nonlinearity
            unsup = F.mse_loss(self.nonlin(self.recon(h)), x.detach())
        return self.alpha * unsup + (1 - self.alpha) * sup, stats
