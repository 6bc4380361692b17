"""The paper's maths: similarity matrix and the decoder pooling rule."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from locallearn.local import decoder_pooling, similarity_matrix


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
    # vgg8b / CIFAR, D = 2048 (SPEC.md's example), first layer: 128 x 32 x 32
    assert decoder_pooling(128, 32, 2048) == ((8, 8), (0, 0), 2048)
    assert decoder_pooling(256, 32, 2048)[0] == (16, 8)
    # odd sides pad so the output side is ceil(S / k): 512 x 7 x 7 with D = 1024
    kernel, pad, size = decoder_pooling(512, 7, 1024)
    assert size <= 1024
    out = torch.nn.AvgPool2d(kernel, padding=pad)(torch.zeros(1, 512, 7, 7))
    assert out.flatten(1).shape[1] == size
    # already small enough: no pooling
    assert decoder_pooling(16, 2, 4096) == ((1, 1), (0, 0), 64)
