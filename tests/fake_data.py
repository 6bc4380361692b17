"""Tiny datasets in each dataset's real on-disk format, for tests of the real loading code.

`write_fake(name, data_dir)` writes the files torchvision's layout expects (IDX .gz for
the MNIST family, CIFAR's python pickles, SVHN's .mat files, STL-10's binaries) with a
few examples per class, and registers them with `accept_custom_files`, the one explicit
way the loader accepts files that are not the published originals. File names and
formats are written out here independently of locallearn.data.datasets, so a loader looking
in the wrong place or decoding the wrong way fails these tests.

Images are learnable (a fixed template per class plus noise) and reproducible:
`fake_images(labels, name, seed)` returns exactly what `load_split` should give back for
the split written with that seed (train: `seed`, test: `seed + 1`).
"""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from locallearn.data.datasets import accept_custom_files

# name: (classes, channels, size)
SHAPES = {"MNIST": (10, 1, 28), "FashionMNIST": (10, 1, 28), "KuzushijiMNIST": (10, 1, 28),
          "CIFAR10": (10, 3, 32), "CIFAR100": (100, 3, 32), "SVHN": (10, 3, 32), "STL10": (10, 3, 96)}
MNIST_FOLDERS = {"MNIST": "MNIST", "FashionMNIST": "FashionMNIST", "KuzushijiMNIST": "KMNIST"}


def fake_labels(name: str, n: int, seed: int) -> np.ndarray:
    """n labels, every class as often as possible (round robin), in a seeded order."""
    classes = SHAPES[name][0]
    return np.random.default_rng(seed).permutation(np.arange(n) % classes).astype(np.int64)


def fake_images(labels: np.ndarray, name: str, seed: int) -> np.ndarray:
    """uint8 (N, C, H, W): 3/4 a fixed per-class template, 1/4 noise."""
    classes, channels, size = SHAPES[name]
    templates = np.random.default_rng(1000 + classes).integers(0, 256, (classes, channels, size, size))
    noise = np.random.default_rng(seed).integers(0, 256, (len(labels), channels, size, size))
    return ((3 * templates[labels] + noise) // 4).astype(np.uint8)


def write_fake(name: str, data_dir: Path, n_train: int | None = None, n_test: int | None = None,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write a tiny `name` into data_dir; returns (train_labels, test_labels) as loaded.

    Defaults: 4 train and 2 test examples per class.
    """
    data_dir = Path(data_dir)
    classes = SHAPES[name][0]
    n_train = 4 * classes if n_train is None else n_train
    n_test = 2 * classes if n_test is None else n_test
    train_y, test_y = fake_labels(name, n_train, seed), fake_labels(name, n_test, seed + 1)
    train_x, test_x = fake_images(train_y, name, seed), fake_images(test_y, name, seed + 1)
    writer = _WRITERS["MNIST" if name in MNIST_FOLDERS else name]
    written = writer(name, data_dir, (train_x, train_y), (test_x, test_y))
    accept_custom_files(data_dir, [str(p.relative_to(data_dir)) for p in written])
    return train_y, test_y


def _write_mnist(name, data_dir, train, test) -> list[Path]:
    raw = data_dir / MNIST_FOLDERS[name] / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    written = []
    for prefix, (x, y) in (("train", train), ("t10k", test)):
        for kind, array in (("images-idx3", x[:, 0]), ("labels-idx1", y.astype(np.uint8))):
            path = raw / f"{prefix}-{kind}-ubyte.gz"
            header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
            path.write_bytes(gzip.compress(header + array.tobytes(), mtime=0))
            written.append(path)
    return written


def _write_cifar(name, data_dir, train, test) -> list[Path]:
    cifar10 = name == "CIFAR10"
    folder = data_dir / ("cifar-10-batches-py" if cifar10 else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)
    label_key = "labels" if cifar10 else "fine_labels"
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if cifar10 else ["train"]
    k = len(train_files)
    parts = list(zip(train_files, np.array_split(train[0], k), np.array_split(train[1], k)))
    parts.append(("test_batch" if cifar10 else "test", *test))
    written = []
    for fn, x, y in parts:
        entry = {"batch_label": fn, label_key: [int(v) for v in y], "data": x.reshape(len(x), -1),
                 "filenames": [f"img_{i}.png" for i in range(len(x))]}
        if not cifar10:
            entry["coarse_labels"] = [int(v) // 5 for v in y]
        written.append(_pickle(folder / fn, entry))
    if cifar10:
        meta = {"label_names": [f"class_{i}" for i in range(10)], "num_cases_per_batch": 10000, "num_vis": 3072}
        written.append(_pickle(folder / "batches.meta", meta))
    else:
        meta = {"fine_label_names": [f"fine_{i}" for i in range(100)],
                "coarse_label_names": [f"coarse_{i}" for i in range(20)]}
        written.append(_pickle(folder / "meta", meta))
    return written


def _pickle(path: Path, obj) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)   # the originals are Python 2 pickles
    return path


def _write_svhn(name, data_dir, train, test) -> list[Path]:
    """train_32x32.mat takes the first third of the train split, extra_32x32.mat the rest."""
    from scipy.io import savemat
    folder = data_dir / "SVHN"
    folder.mkdir(parents=True, exist_ok=True)
    cut = (len(train[1]) + 2) // 3
    written = []
    for fn, x, y in (("train_32x32.mat", train[0][:cut], train[1][:cut]),
                     ("extra_32x32.mat", train[0][cut:], train[1][cut:]),
                     ("test_32x32.mat", *test)):
        # X is (H, W, C, N); y is (N, 1) with the digit 0 stored as 10.
        mat = {"X": np.ascontiguousarray(np.transpose(x, (2, 3, 1, 0))),
               "y": np.where(y == 0, 10, y).astype(np.uint8).reshape(-1, 1)}
        savemat(folder / fn, mat, do_compression=True)
        written.append(folder / fn)
    return written


def _write_stl10(name, data_dir, train, test) -> list[Path]:
    folder = data_dir / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for prefix, (x, y) in (("train", train), ("test", test)):
        # Each image is stored column-major (W before H); labels are 1-based.
        (folder / f"{prefix}_X.bin").write_bytes(np.ascontiguousarray(x.transpose(0, 1, 3, 2)).tobytes())
        (folder / f"{prefix}_y.bin").write_bytes((y + 1).astype(np.uint8).tobytes())
        written += [folder / f"{prefix}_X.bin", folder / f"{prefix}_y.bin"]
    return written


_WRITERS = {"MNIST": _write_mnist, "CIFAR10": _write_cifar, "CIFAR100": _write_cifar,
            "SVHN": _write_svhn, "STL10": _write_stl10}
