"""The reference's class-per-batch sampler (`--classes-per-batch n`), without its O(N^2).

The reference (NClassRandomSampler) shuffles the training set, then builds each batch
from the front of what is left:

  1. take the next n examples;
  2. scan on, taking every example whose class is not yet in the batch, until the batch
     holds `min_classes` classes (10 in the reference, whatever n is); give up after
     skipping n*10 examples of classes already present;
  3. scan on from the front, taking examples of classes already present, until the
     batch has batch_size examples;
  4. if still short, take the next examples, whatever their class.

It yields one flat stream that the DataLoader cuts into batches of batch_size, and so
does `class_batch_order`: for n <= batch_size - min_classes + 1 every batch but the
last is exactly one of the batches above.

Every step takes, for each class, the earliest examples of that class still left in the
shuffled order. So each class's remaining examples are always a suffix of its own
positions, and one pointer per class replaces the reference's list pops. Steps 1, 2 and
4 read the front of the shuffled order (a window of the first untaken positions); step 3
merges the queues of the batch's classes. Measured on a 2-core CPU (n=20, batch 128):
an epoch order of CIFAR-100 takes 0.05 s (the reference's loop: 0.3 s), of SVHN's
604,388 images 0.5 s (the reference's: 23 s), and is the same order element for element.
"""
from __future__ import annotations

import numpy as np


def classes_per_batch_at(n: int, until_epoch: int, epoch: int) -> int:
    """The sampler's n in this epoch (1-based), 0 where batches are plain shuffles.

    The reference attaches the sampler to its loader once and takes it off only when
    until_epoch > 0 and the epoch is past it, so until_epoch 0 keeps it for the whole
    run (its help: "default: 0, until end of training").
    """
    return n if until_epoch == 0 or epoch <= until_epoch else 0


def class_batch_order(labels: np.ndarray, n: int, batch_size: int, rng: np.random.Generator,
                      min_classes: int = 10) -> np.ndarray:
    """A permutation of range(len(labels)) in the reference sampler's batch order.

    Seeded by `rng` alone (one permutation drawn). n = 0 gives a plain shuffle.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    return arrange_batches(labels, rng.permutation(len(labels)), n, batch_size, min_classes)


def arrange_batches(labels: np.ndarray, order: np.ndarray, n: int, batch_size: int,
                    min_classes: int = 10) -> np.ndarray:
    """The deterministic part: the reference's batches built from the shuffled `order`.

    Equal, element for element, to the reference's list-pop loop started from the same
    shuffled list (tests compare the two).
    """
    if n < 0 or batch_size < 1 or min_classes < 0:
        raise ValueError(f"need n >= 0, batch_size >= 1, min_classes >= 0; got {n}, {batch_size}, {min_classes}")
    labels, order = np.asarray(labels), np.asarray(order)
    total = len(order)
    _, cls = np.unique(labels[order], return_inverse=True)   # class of each shuffled position
    cls = cls.reshape(-1)
    # Per-class queues: the positions of each class in shuffled order, and a pointer each.
    by_class = np.argsort(cls, kind="stable")
    starts = np.concatenate(([0], np.cumsum(np.bincount(cls))))
    ptr = starts[:-1].copy()
    taken = np.zeros(total, dtype=bool)
    head = 0                       # no untaken position lies before head
    out = np.empty(total, dtype=np.int64)
    filled = 0

    def front(count: int) -> np.ndarray:
        """The first `count` untaken positions (fewer at the end), moving head up to them."""
        nonlocal head
        width = max(2 * count, 1024)
        while True:
            window = head + np.flatnonzero(~taken[head:head + width])
            if len(window) >= count or head + width >= total:
                if len(window):
                    head = int(window[0])
                return window[:count]
            width *= 4

    def take(positions: np.ndarray) -> None:
        nonlocal filled
        taken[positions] = True
        ptr[:] += np.bincount(cls[positions], minlength=len(ptr))
        out[filled:filled + len(positions)] = positions
        filled += len(positions)

    while filled < total:
        batch_start = filled
        window = front(n + n * 10 + min_classes)
        first = window[:n]                                                     # step 1
        take(first)
        present = np.unique(cls[first])
        if len(present) < min_classes:                                         # step 2
            rest = window[n:]
            new_cls, first_at = np.unique(cls[rest], return_index=True)
            is_new = ~np.isin(new_cls, present)
            first_at = np.sort(first_at[is_new])
            # The i-th new class is reached after first_at[i] - i skips; the scan stops
            # once that count hits n*10, or once min_classes classes are present.
            first_at = first_at[:min_classes - len(present)]
            first_at = first_at[first_at - np.arange(len(first_at)) < n * 10]
            take(rest[first_at])
            present = np.union1d(present, cls[rest[first_at]])
        room = batch_size - (filled - batch_start)
        if room > 0 and len(present):                                          # step 3
            queued = np.concatenate([by_class[ptr[c]:min(ptr[c] + room, starts[c + 1])] for c in present])
            take(np.sort(queued)[:room])
        room = batch_size - (filled - batch_start)
        if room > 0:                                                           # step 4
            take(front(room))
    return order[out]
