"""Batches on the training device: the whole split as uint8, augmented in batches.

The reference spends a quarter of an MNIST-family epoch in per-sample PIL transforms.
Here a split lives as one uint8 tensor (N, C, H, W) on the device; each batch is
gathered by index, randomly cropped (zero padding, as torchvision's RandomCrop pads
the uint8 image), flipped, normalised and cut out in a handful of tensor ops.

Every random number comes from generators seeded by (seed, epoch, stream), so an
epoch's batches are a pure function of the run seed and the epoch: a resumed run
sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..seeding import derive_seed

# Streams of randomness within one epoch (see derive_seed).
ORDER_STREAM, SAMPLER_STREAM, AUGMENT_STREAM = 1, 2, 3


# ----------------------------------------------------------------- augmentations
def reflect_pad(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Reflection padding (F.pad's mode='reflect', the edge pixel not repeated) of a
    uint8 batch, by indexing: F.pad reflects floating-point tensors only. A float copy
    would give the same bytes: ToTensor then ToPILImage returns every uint8 value as it
    was (tests/test_augment.py)."""
    h, w = x.shape[-2:]

    def index(n: int) -> torch.Tensor:
        i = torch.arange(-padding, n + padding, device=x.device).abs()
        return torch.where(i > n - 1, 2 * (n - 1) - i, i)
    return x[..., index(h)[:, None], index(w)[None, :]]


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator, fill: str = "zeros") -> torch.Tensor:
    """RandomCrop(size, padding): pad (zeros, or by reflection), then a uniform offset per image."""
    b, _, h, w = x.shape
    xp = reflect_pad(x, padding) if fill == "reflect" else F.pad(x, (padding,) * 4)
    oy = torch.randint(0, 2 * padding + 1, (b,), device=x.device, generator=gen)
    ox = torch.randint(0, 2 * padding + 1, (b,), device=x.device, generator=gen)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # B x H x 1
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # B x 1 x W
    batch = torch.arange(b, device=x.device)[:, None, None]
    return xp[batch, :, rows, cols].permute(0, 3, 1, 2)  # advanced indexing puts C last


def random_hflip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def normalize(x_u8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """ToTensor + Normalize: uint8 -> [0, 1] -> (x - mean) / std, per channel."""
    return (x_u8.float().div_(255) - mean).div_(std).contiguous()


def cutout(x: torch.Tensor, length: int, n_holes: int, gen: torch.Generator) -> torch.Tensor:
    """DeVries & Taylor (2017), after normalisation: per hole a square of side `length`
    centred at a uniform pixel, clipped at the borders, zeroed in all channels."""
    b, _, h, w = x.shape
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    keep = torch.ones(b, h, w, dtype=torch.bool, device=x.device)
    for _ in range(n_holes):
        cy = torch.randint(0, h, (b, 1, 1), device=x.device, generator=gen)
        cx = torch.randint(0, w, (b, 1, 1), device=x.device, generator=gen)
        y1, y2 = (cy - length // 2).clamp(0, h), (cy + length // 2).clamp(0, h)
        x1, x2 = (cx - length // 2).clamp(0, w), (cx + length // 2).clamp(0, w)
        keep &= ~((ys >= y1) & (ys < y2) & (xs >= x1) & (xs < x2))
    return x * keep[:, None].to(x.dtype)


# ---------------------------------------------------------------------- the splits
@dataclass
class Augment:
    crop_padding: int = 0
    crop_fill: str = "zeros"  # zeros | reflect
    hflip: bool = False
    cutout_length: int = 0  # 0 = no cutout
    n_holes: int = 1


class DeviceSplit:
    """One split held as uint8. It lives on the training device when it fits (most of
    the free memory is left for the network); otherwise it stays in (pinned) host
    memory and each batch is copied over, so a big split (SVHN's 604,388 images on a
    small card) streams instead of failing."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, spec, device: torch.device,
                 augment: Augment | None = None):
        self.n = images.shape[0]
        self.spec = spec
        self.device = device
        self.augment = augment or Augment()
        self.on_device = _fits_on_device(images, device)
        if self.on_device:
            self.images = images.to(device)
            self.labels = labels.to(device)
        else:  # pinned pages copy to the GPU asynchronously
            pin = torch.cuda.is_available()
            self.images = images.pin_memory() if pin else images
            self.labels = labels.pin_memory() if pin else labels
        self.labels_np = labels.numpy()
        self.validation: DeviceSplit | None = None   # a training split's held-out part (--val-examples)
        self.validation_record: dict | None = None
        self.mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)

    def _fetch(self, idx: torch.Tensor):
        if self.on_device:
            idx = idx.to(self.device)
            return self.images[idx], self.labels[idx]
        return (self.images[idx].to(self.device, non_blocking=True),
                self.labels[idx].to(self.device, non_blocking=True))

    def order(self, seed: int, epoch: int, classes_per_batch: int = 0, batch_size: int = 128) -> torch.Tensor:
        """This epoch's example order: a shuffle, or the class-per-batch sampler's."""
        if classes_per_batch > 0:
            from .sampler import class_batch_order
            rng = np.random.default_rng(derive_seed(seed, epoch, SAMPLER_STREAM))
            return torch.from_numpy(class_batch_order(self.labels_np, classes_per_batch, batch_size, rng))
        gen = torch.Generator().manual_seed(derive_seed(seed, epoch, ORDER_STREAM))
        return torch.randperm(self.n, generator=gen)

    def train_batches(self, order: torch.Tensor, batch_size: int, seed: int, epoch: int):
        """Augmented, normalised training batches in `order`. A last batch of one example
        is dropped: BatchNorm cannot normalise a single example."""
        gen = torch.Generator(device=self.device).manual_seed(derive_seed(seed, epoch, AUGMENT_STREAM))
        a = self.augment
        for start in range(0, self.n, batch_size):
            idx = order[start:start + batch_size]
            if idx.numel() < 2:
                break
            x, y = self._fetch(idx)
            if a.crop_padding:
                x = random_crop(x, a.crop_padding, gen, a.crop_fill)
            if a.hflip:
                x = random_hflip(x, gen)
            x = normalize(x, self.mean, self.std)
            if a.cutout_length:
                x = cutout(x, a.cutout_length, a.n_holes, gen)
            yield x, y

    def eval_batches(self, batch_size: int):
        """Normalised only, in file order (test sets are never augmented)."""
        for start in range(0, self.n, batch_size):
            idx = torch.arange(start, min(start + batch_size, self.n))
            x, y = self._fetch(idx)
            yield normalize(x, self.mean, self.std), y


def _fits_on_device(images: torch.Tensor, device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return images.numel() * images.element_size() < 0.4 * free


def load_splits(cfg, device: torch.device):
    """(train, test, spec) for the run's dataset, with the recipe's augmentation."""
    from .datafetch import ready
    from ..recipe.specs import SPECS, run_spec
    from .datasets import load_split
    from ..errors import DatasetError
    from ..layout import resolve_data_dir

    spec = run_spec(cfg)
    data_dir = resolve_data_dir(cfg.data_dir)
    # --svhn-split train: run_spec has dropped SVHN's extra file, which is then not read
    left_out = tuple({SPECS[cfg.dataset].extra_train_file} - {spec.extra_train_file})

    def both_splits():   # every file is checksummed once, as it is read
        return [load_split(cfg.dataset, data_dir, train, without=left_out if train else ())
                for train in (True, False)]

    try:
        (xtr, ytr), (xte, yte) = both_splits()
    except DatasetError:   # missing or corrupt: put in place if they can be, else ready's error
        ready(cfg.dataset, data_dir, download=cfg.download)
        (xtr, ytr), (xte, yte) = both_splits()
    if cfg.max_train_examples:
        xtr, ytr = xtr[:cfg.max_train_examples], ytr[:cfg.max_train_examples]
    if cfg.max_test_examples:
        xte, yte = xte[:cfg.max_test_examples], yte[:cfg.max_test_examples]
    aug = Augment(crop_padding=spec.crop_padding, crop_fill=spec.crop_fill, hflip=spec.hflip,
                  cutout_length=cfg.length if cfg.cutout else 0, n_holes=cfg.n_holes)
    n_val = cfg.val_examples
    if not n_val:
        return DeviceSplit(xtr, ytr, spec, device, aug), DeviceSplit(xte, yte, spec, device), spec
    from ..errors import ConfigError
    if n_val > len(xtr) - 2:
        raise ConfigError(f"--val-examples {n_val}: the training set has only {len(xtr)} examples "
                          "(at least 2 must remain to train)")
    keep, val, record = held_out(len(xtr), n_val)
    keep, val = torch.from_numpy(keep), torch.from_numpy(val)
    train = DeviceSplit(xtr[keep], ytr[keep], spec, device, aug)
    train.validation = DeviceSplit(xtr[val], ytr[val], spec, device)   # evaluated as the test set is
    train.validation_record = record
    return train, DeviceSplit(xte, yte, spec, device), spec


SPLIT_SEED = 0   # the held-out permutation's seed: one split for every run and seed


def held_out(n_train: int, n_val: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """The validation split of --val-examples: (training indices, validation indices, the
    record of the choice, which metrics.json keeps): the first n_val of a fixed
    permutation of range(n_train) are held out, the same for every seed and every run;
    both index lists are sorted, so the remaining training examples keep their file order."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n_train)
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    record = {"examples": int(n_val), "of": int(n_train),
              "rule": f"numpy default_rng({SPLIT_SEED}).permutation(of)[:examples], the same for every seed",
              "indices_sha256": hashlib.sha256(val.astype("<i8").tobytes()).hexdigest()}
    return train, val, record
