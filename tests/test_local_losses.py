"""The paper's maths: similarity matrix, the decoder pooling rule, how a block's
losses combine (alpha, recon in first layers)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import batches, flags
from locallearn.layers.local_losses import LocalHead, decoder_pooling, similarity_matrix
from locallearn.nets.models import build_model


def test_similarity_matrix_properties():
    x = torch.randn(16, 8, 5, 5)
    s = similarity_matrix(x)
    assert s.shape == (16, 16)
    torch.testing.assert_close(s, s.t())
    torch.testing.assert_close(torch.diagonal(s), torch.ones(16))
    assert s.min() >= -1 and s.max() <= 1


def test_label_similarity_target():
    C = 10
    y = torch.tensor([0, 1, 1, 3, 9, 0])
    s = similarity_matrix(F.one_hot(y, C).float())
    same = y[:, None] == y[None, :]
    torch.testing.assert_close(s[same], torch.ones(int(same.sum())))
    torch.testing.assert_close(s[~same], torch.full((int((~same).sum()),), -1 / (C - 1)))


def test_similarity_uses_channel_std_for_maps():
    x = torch.randn(6, 8, 4, 4)
    by_std = similarity_matrix(x)
    manual = similarity_matrix(x.reshape(6, 8, -1).std(dim=2))
    torch.testing.assert_close(by_std, manual)
    # 3 channels or fewer (an RGB input), or height 1: flattened instead
    rgb = torch.randn(6, 3, 4, 4)
    torch.testing.assert_close(similarity_matrix(rgb), similarity_matrix(rgb.reshape(6, -1)))
    torch.testing.assert_close(similarity_matrix(x, use_std=False), similarity_matrix(x.reshape(6, -1)))


def test_decoder_pooling_rule():
    # vgg8b / CIFAR, D = 2048 (docs/method.md's example), first layer: 128 x 32 x 32
    assert decoder_pooling(128, 32, 2048) == ((8, 8), (0, 0), 2048)
    assert decoder_pooling(256, 32, 2048)[0] == (16, 8)
    # odd sides pad so the output side is ceil(S / k): 512 x 7 x 7 with D = 1024
    kernel, pad, size = decoder_pooling(512, 7, 1024)
    assert size <= 1024
    out = torch.nn.AvgPool2d(kernel, padding=pad)(torch.zeros(1, 512, 7, 7))
    assert out.flatten(1).shape[1] == size
    # already small enough: no pooling
    assert decoder_pooling(16, 2, 4096) == ((1, 1), (0, 0), 64)


def _local_losses(cfg, shape, model=None):
    torch.manual_seed(0)
    model = model or build_model(cfg, shape[0], shape[1], 10)
    (x, y), = batches(1, shape)
    _, losses, _ = model(x, y, F.one_hot(y, 10).float())
    return model, losses


def test_recon_is_skipped_in_the_first_conv_and_the_first_linear_block_of_a_vgg():
    """The reference builds a VGG's classifier head as its mlp (`Net`), whose first block
    is a first layer: recon is skipped there as in the network's first conv."""
    cfg = flags("--model", "vgg8b", "--feat-mult", "0.0625", "--num-layers", "2", "--num-hidden", "32",
                "--dim-in-decoder", "64", "--loss-sup", "pred", "--loss-unsup", "recon", "--alpha", "0.5")
    model, losses = _local_losses(cfg, (3, 16, 16))
    sum(losses).backward()
    reconstructs = [b.head.recon.weight.grad is not None for b in model.blocks]
    first_linear = [b.conv for b in model.blocks].index(False)
    assert reconstructs == [k not in (0, first_linear) for k in range(len(model.blocks))]
    assert first_linear == 6 and len(model.blocks) == 8


@pytest.mark.parametrize("unsup", ["none", "recon"])
def test_alpha_weighs_the_supervised_loss_where_there_is_no_unsupervised_one(unsup):
    """As the reference: alpha * 0 + (1 - alpha) * sup, with no unsupervised loss at all
    or where recon is skipped (the first layer)."""
    cfg = flags("--loss-sup", "predsim", "--loss-unsup", unsup, "--alpha", "0.25")
    weighted, w = _local_losses(cfg, (1, 28, 28))
    plain = build_model(flags("--loss-sup", "predsim"), 1, 28, 10)
    plain.load_state_dict(weighted.state_dict(), strict=False)  # the same weights, no recon layers
    _, p = _local_losses(None, (1, 28, 28), plain)
    torch.testing.assert_close(w[0], 0.75 * p[0])
    if unsup == "none":
        torch.testing.assert_close(w[1], 0.75 * p[1])
    else:  # the second block reconstructs its input
        assert abs(w[1].item() - 0.75 * p[1].item()) > 1e-4


def _similarity_np(a: np.ndarray) -> np.ndarray:
    """The paper's adjusted cosine similarity of a batch's rows (docs/method.md), in numpy."""
    c = a - a.mean(axis=1, keepdims=True)
    n = c / (1e-8 + np.sqrt((c ** 2).sum(axis=1, keepdims=True)))
    return np.clip(n @ n.T, -1, 1)


@pytest.mark.parametrize("beta", [0.0, 0.01, 0.99])
def test_predsim_loss_of_a_linear_block_by_hand(beta):
    """predsim = (1 - beta) * cross-entropy of the block's linear decoder + beta * mean
    squared difference between the similarity matrix of the block's learned similarity
    layer and that of the one-hot labels; the oracle is numpy on the block's weights."""
    cfg = flags("--loss-sup", "predsim", "--beta", str(beta))
    loss = LocalHead(cfg, 8, None, 8, 10, first=False)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():   # a decoder as after some training (the reference starts it at zero)
        loss.decoder.weight.copy_(torch.randn(10, 8, generator=g))
        loss.decoder.bias.copy_(torch.randn(10, generator=g))
    h = torch.randn(6, 8, generator=g)
    y = torch.tensor([0, 1, 1, 3, 9, 0])
    got, _ = loss(h, h, y, F.one_hot(y, 10).float())

    H, Y = h.double().numpy(), y.numpy()
    Wd, bd = loss.decoder.weight.detach().double().numpy(), loss.decoder.bias.detach().double().numpy()
    z = H @ Wd.T + bd
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    pred = -logp[np.arange(len(Y)), Y].mean()
    feats = H @ loss.sim_layer.weight.detach().double().numpy().T
    sim = ((_similarity_np(feats) - _similarity_np(np.eye(10)[Y])) ** 2).mean()
    assert got.item() == pytest.approx((1 - beta) * pred + beta * sim, rel=1e-5)


def test_supcon_by_hand():
    """InfoPro's contrastive loss (methods/infoprocontrast.supcon) on three unit vectors,
    computed here from its definition in float64: anchors 0 and 1 share a label, 2 has no
    positive (it counts 0); t = 0.5."""
    import math

    from locallearn.methods.infoprocontrast import supcon
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([3, 3, 7])
    t = 0.5
    dot = [[1.0, 0.6, 0.0], [0.6, 1.0, 0.8], [0.0, 0.8, 1.0]]

    def term(i, p):   # -log(exp(z_i.z_p / t) / sum over a != i of exp(z_i.z_a / t))
        return -(dot[i][p] / t - math.log(sum(math.exp(dot[i][a] / t) for a in range(3) if a != i)))
    expected = (term(0, 1) + term(1, 0) + 0.0) / 3
    assert float(supcon(z, y, t)) == pytest.approx(expected, rel=1e-12)
    assert float(supcon(z, torch.tensor([1, 2, 3]), t)) == 0.0            # no positives anywhere
