"""How long the class-per-batch sampler takes to order one epoch (docs/speed.md).

    python benchmarks/sampler.py [--repeats 5]

Prints the best of a few timings of `class_batch_order` (n=20, batch 128) for an epoch
of CIFAR-100's 50,000 labels and of SVHN's size (604,390, about its train + extra), with the same
batches as the reference's sampler (tests/test_sampler.py checks that, not the time).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the checkout's package
from locallearn.data.sampler import class_batch_order  # noqa: E402

# name: (classes, examples per class) of a balanced stand-in for the training labels
EPOCHS = {"CIFAR-100": (100, 500), "SVHN": (10, 60439)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timings per epoch; the best is printed")
    args = parser.parse_args(argv)
    for name, (classes, per_class) in EPOCHS.items():
        labels = np.repeat(np.arange(classes), per_class)
        best = float("inf")
        for seed in range(args.repeats):
            start = time.perf_counter()
            class_batch_order(labels, 20, 128, np.random.default_rng(seed))
            best = min(best, time.perf_counter() - start)
        print(f"class_batch_order: {name} epoch ({len(labels):,} labels, n=20, batch 128) in {best:.3f} s")


if __name__ == "__main__":
    main()
