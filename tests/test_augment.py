"""Batched augmentation on the device: crop, flip, cutout, normalisation."""
from __future__ import annotations

import torch

from locallearn.data.batches import cutout, normalize, random_crop, random_hflip


def test_crop_offsets_uniform_and_content_shifted():
    # each image is a single bright pixel at (2, 2) of a 5x5 map; after a crop with
    # padding 2 it moves to (2 + 2 - oy, 2 + 2 - ox) -> recover the offsets.
    n, pad = 20000, 2
    x = torch.zeros(n, 1, 5, 5, dtype=torch.uint8)
    x[:, 0, 2, 2] = 255
    out = random_crop(x, pad, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    pos = out.flatten(1).argmax(1)
    assert (out.flatten(1).max(1).values == 255).all()  # the pixel always stays in view
    oy, ox = 2 + pad - pos // 5, 2 + pad - pos % 5
    for o in (oy, ox):
        counts = torch.bincount(o, minlength=2 * pad + 1).float()
        assert counts.numel() == 2 * pad + 1
        expected = n / (2 * pad + 1)
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < 20.5  # 4 dof, p ~ 0.0004


def test_crop_pads_with_zeros():
    x = torch.full((4000, 1, 4, 4), 7, dtype=torch.uint8)
    out = random_crop(x, 2, torch.Generator().manual_seed(1))
    # some crops show padding (0), never any other value
    assert set(out.unique().tolist()) == {0, 7}


def test_hflip_half_and_exact():
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(10000, 1, 1, 1)
    out = random_hflip(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(3)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert (flipped ^ same).all()
    assert abs(flipped.float().mean().item() - 0.5) < 0.02


def test_normalize_constants():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
    out = normalize(x, torch.tensor([0.286]).view(1, 1, 1, 1), torch.tensor([0.353]).view(1, 1, 1, 1))
    torch.testing.assert_close(out.flatten(), torch.tensor([-0.286 / 0.353, (1 - 0.286) / 0.353]))


def test_cutout_square_all_channels_clipped():
    n, side, length = 3000, 32, 16
    x = torch.ones(n, 3, side, side)
    out = cutout(x, length, 1, torch.Generator().manual_seed(0))
    zero = out == 0
    assert (zero.all(1) == zero.any(1)).all()  # all channels alike
    area = zero[:, 0].flatten(1).sum(1)
    assert area.max() == length * length  # full square where not clipped
    assert (area > 0).all() and area.min() < length * length  # clipped at borders
    # the zeroed region is a rectangle: rows x cols
    rows, cols = zero[:, 0].any(2).sum(1), zero[:, 0].any(1).sum(1)
    assert (rows * cols == area).all() and rows.max() == length


def test_train_batches_are_a_function_of_seed_and_epoch():
    from locallearn.data.batches import Augment, DeviceSplit
    from locallearn.recipe.specs import SPECS
    imgs = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (300,))
    split = DeviceSplit(imgs, labels, SPECS["FashionMNIST"], torch.device("cpu"),
                        Augment(crop_padding=2, hflip=True, cutout_length=14))

    def epoch(seed, e):
        return [b for b in split.train_batches(split.order(seed, e), 128, seed, e)]

    a, b, c = epoch(1, 3), epoch(1, 3), epoch(1, 4)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    assert sum(y.numel() for _, y in a) == 300


def test_split_streams_from_host_when_the_device_is_short(monkeypatch):
    """A split too big for the device (SVHN's 604,388 images on a small card) stays in host
    memory and is copied per batch: same batches as the device-resident split."""
    from locallearn.data import batches
    from locallearn.data.batches import Augment, DeviceSplit
    from locallearn.recipe.specs import SPECS
    imgs = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (300,))
    aug = Augment(crop_padding=4, hflip=True, cutout_length=16)
    resident = DeviceSplit(imgs, labels, SPECS["SVHN"], torch.device("cpu"), aug)
    monkeypatch.setattr(batches, "_fits_on_device", lambda images, device: False)
    streamed = DeviceSplit(imgs, labels, SPECS["SVHN"], torch.device("cpu"), aug)
    assert resident.on_device and not streamed.on_device
    for split in (resident, streamed):
        split.batches = list(split.train_batches(split.order(1, 1), 128, 1, 1)) + list(split.eval_batches(128))
    for (x1, y1), (x2, y2) in zip(resident.batches, streamed.batches):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
