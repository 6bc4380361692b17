"""The seven datasets of the paper, read from their original files on disk.

One data dir holds every dataset in torchvision's layout, so a folder torchvision
downloaded can be used as it is:

    <data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz   (+ unpacked copies)
    <data_dir>/FashionMNIST/raw/...             same four files
    <data_dir>/KMNIST/raw/...                   same four files (torchvision's KMNIST class)
    <data_dir>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}
    <data_dir>/cifar-100-python/{train,test,meta}
    <data_dir>/SVHN/{train,extra,test}_32x32.mat
    <data_dir>/stl10_binary/{train_X,train_y,test_X,test_y}.bin
    <data_dir>/locallearn-custom-checksums.json   (only where files were accepted by hand)

torchvision supplies the layout, the URLs and the md5 checksums (read from its dataset
classes, so they are the ones it knows). Reading is done here, in a few lines per
format, because torchvision's constructors do not fit: CIFAR and SVHN re-check the
md5s of the real files on every load (tiny test files can never pass), STL10 insists on
the 2.6 GB unlabelled split that the paper does not use, and the MNIST classes read the
unpacked copies, which no checksum covers. Here every file that is read is verified
first, against:

  * torchvision's md5 of the original file;
  * for a re-compressed .gz (Debian's Fashion-MNIST package re-gzips the originals), the
    md5 of its decompressed content (`_CONTENT_MD5`);
  * or, the one explicit way to use other files (the tests' tiny fakes, a user's own
    variant), the md5 recorded for that path in `<data_dir>/locallearn-custom-checksums.json`
    by `accept_custom_files`.

A missing or corrupt file raises `DatasetError` with one line that says which dataset,
which files, where they were looked for and how to get them. Files are only ever put in
place by renaming a complete, verified temporary file, so nothing half-written can look
complete. Decoded arrays are not cached: the slowest split, SVHN's train + extra
(604,388 images), verifies in 2 s and decodes from its .mat files in about 20 s with a
4.3 GB peak (measured on a 2-core CPU), nothing beside runs of hours, while a cache
would cost 1.9 GB of disk per data dir and rules for when it is stale.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.datasets as tvd
from torchvision.datasets import utils as tv_utils

from ..atomic import atomic_write_bytes
from ..errors import ConfigError, DatasetError
from ..recipe.specs import SPECS


# --------------------------------------------------------------------------- layout

@dataclass(frozen=True)
class DataFile:
    rel: str                      # path under the data dir (torchvision's layout)
    md5: str                      # torchvision's md5 of the original file
    split: str                    # "train", "test", or "meta" (kept for torchvision, never read)
    urls: tuple[str, ...] = ()    # direct download URLs (mirrors); empty: comes in the archive


@dataclass(frozen=True)
class Archive:
    filename: str
    url: str
    md5: str


@dataclass(frozen=True)
class Layout:
    files: tuple[DataFile, ...]
    archive: Archive | None = None   # one tarball that holds every file (CIFAR, STL10)

    def split_files(self, train: bool) -> list[DataFile]:
        return [f for f in self.files if f.split == ("train" if train else "test")]


def _mnist_layout(cls: type[tvd.MNIST]) -> Layout:
    folder = f"{cls.__name__}/raw"
    return Layout(tuple(
        DataFile(f"{folder}/{fn}", md5, "train" if fn.startswith("train") else "test",
              tuple(m + fn for m in cls.mirrors))
        for fn, md5 in cls.resources))


def _tarball_layout(cls, files: list[tuple[str, str, str]]) -> Layout:
    return Layout(tuple(DataFile(f"{cls.base_folder}/{fn}", md5, split) for fn, md5, split in files),
                   Archive(cls.filename, cls.url, cls.tgz_md5))


def _cifar_layout(cls: type[tvd.CIFAR10]) -> Layout:
    return _tarball_layout(cls, [(fn, md5, "train") for fn, md5 in cls.train_list]
                           + [(fn, md5, "test") for fn, md5 in cls.test_list]
                           + [(cls.meta["filename"], cls.meta["md5"], "meta")])


def _svhn_layout(cls: type[tvd.SVHN]) -> Layout:
    # train first, then extra: the order the two are concatenated in.
    return Layout(tuple(
        DataFile(f"{cls.__name__}/{fn}", md5, "test" if split == "test" else "train", (url,))
        for split in ("train", "extra", "test")
        for url, fn, md5 in [cls.split_list[split]]))


def _stl10_layout(cls: type[tvd.STL10]) -> Layout:
    # The labelled splits only: unlabeled_X.bin (2.6 GB) is never used by the paper.
    listed = dict(cls.train_list + cls.test_list)
    return _tarball_layout(cls, [(fn, listed[fn], fn.split("_")[0])
                                 for fn in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")])


# A DatasetSpec's `format`: how its files lie (from its torchvision class) and how they
# are read (the readers below).
_LAYOUT_OF_FORMAT = {"idx": _mnist_layout, "cifar": _cifar_layout, "svhn": _svhn_layout, "stl10": _stl10_layout}

LAYOUTS: dict[str, Layout] = {
    name: _LAYOUT_OF_FORMAT[spec.format](getattr(tvd, spec.torchvision)) for name, spec in SPECS.items()}

# md5 of the decompressed content of re-compressed .gz originals, by path in the data dir.
_CONTENT_MD5: dict[str, str] = {
    f.rel: md5 for name, spec in SPECS.items() for fn, md5 in spec.content_md5
    for f in LAYOUTS[name].files if Path(f.rel).name == fn}

CUSTOM_CHECKSUMS = "locallearn-custom-checksums.json"


def layout_of(name: str) -> Layout:
    if name not in LAYOUTS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


# --------------------------------------------------------------------------- verification

def how_to_get(name: str) -> str:
    archive = LAYOUTS[name].archive
    originals = "the original files" + (f", or {archive.filename}" if archive else "")
    return (f"to fix, run `locallearn data prepare {name} --download` (needs internet) or "
            f"`locallearn data prepare {name} --source DIR` (DIR: a folder holding {originals})")


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def md5_of(path: Path) -> str:
    return tv_utils.calculate_md5(path)


def _gz_content_md5(path: Path) -> str | None:
    h = hashlib.md5(usedforsecurity=False)
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return h.hexdigest()


def _custom_checksums(root: Path) -> dict[str, str]:
    path = root / CUSTOM_CHECKSUMS
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text())["files"])
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{path} cannot be read ({one_line(e)}); fix or delete it") from e


def file_problem(path: Path, f: DataFile, custom: dict[str, str]) -> str | None:
    """None when `path` holds a known-good copy of `f`, else what is wrong with it."""
    if not path.is_file():
        return "missing"
    got = md5_of(path)
    if got in (f.md5, custom.get(f.rel)):
        return None
    if f.rel in _CONTENT_MD5 and _gz_content_md5(path) == _CONTENT_MD5[f.rel]:
        return None
    return f"md5 {got} matches no known checksum (torchvision's is {f.md5})"


def problems_in(data_dir: Path, files: list[DataFile]) -> dict[DataFile, str]:
    custom = _custom_checksums(data_dir)
    found = {f: file_problem(data_dir / f.rel, f, custom) for f in files}
    return {f: problem for f, problem in found.items() if problem}


def dataset_error(name: str, data_dir: Path, files: list[DataFile], problems: dict[DataFile, str]) -> DatasetError:
    """The one-line error for the first thing wrong among `files` (all missing: one message)."""
    missing = [f.rel for f, problem in problems.items() if problem == "missing"]
    if missing:
        what = "not found" if len(missing) == len(files) else f"incomplete: missing {', '.join(missing)}"
        return DatasetError(f"{name}: dataset {what} in data dir {data_dir} (expects "
                            f"{', '.join(f.rel for f in files)}); {how_to_get(name)}")
    f, problem = next(iter(problems.items()))
    return DatasetError(f"{name}: {data_dir / f.rel} is corrupt ({problem}); {how_to_get(name)}")


def accept_custom_files(data_dir: Path, rel_paths: list[str]) -> None:
    """Record the md5 of files under data_dir as accepted in place of torchvision's.

    The one explicit way to load files that are not the published originals: the tests'
    tiny fakes, or a dataset a user rebuilt. A file changed after this is still caught.
    """
    data_dir = Path(data_dir)
    files = _custom_checksums(data_dir)
    files.update({rel: md5_of(data_dir / rel) for rel in rel_paths})
    doc = {"comment": "files accepted by locallearn.data.datasets.accept_custom_files instead of "
                      "the originals' checksums", "files": dict(sorted(files.items()))}
    atomic_write_bytes(data_dir / CUSTOM_CHECKSUMS, json.dumps(doc, indent=1).encode())


# --------------------------------------------------------------------------- decoding

def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file (the MNIST family's format): big-endian header, uint8 payload."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0:2] != b"\0\0" or raw[2] != 0x08 or raw[3] != ndim:
        raise ValueError(f"not an IDX file of {ndim}-D uint8 data")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    if len(raw) != start + int(np.prod(dims)):
        raise ValueError(f"IDX header says {dims}, payload has {len(raw) - start} bytes")
    return np.frombuffer(raw, np.uint8, offset=start).reshape(dims)


def _read_mnist(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    images = next(p for p in paths if "images" in p.name)
    labels = next(p for p in paths if "labels" in p.name)
    return _read_idx(images, 3)[:, None], _read_idx(labels, 1)


def _read_cifar(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for p in paths:
        with open(p, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        images.append(np.asarray(entry["data"], np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"]))
    return np.concatenate(images), np.concatenate(labels)


def _read_svhn(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat
    mats = [loadmat(p) for p in paths]
    # X is (H, W, C, N); torchvision's SVHN transposes it the same way. Label 10 is digit 0.
    images = np.concatenate([np.transpose(m["X"], (3, 2, 0, 1)) for m in mats])
    labels = np.concatenate([m["y"].astype(np.int64).reshape(-1) for m in mats])
    return images, np.where(labels == 10, 0, labels)


def _read_stl10(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    x_path = next(p for p in paths if p.name.endswith("_X.bin"))
    y_path = next(p for p in paths if p.name.endswith("_y.bin"))
    images = np.fromfile(x_path, np.uint8)
    if images.size % (3 * 96 * 96):
        raise ValueError(f"{images.size} bytes is not a whole number of 3x96x96 images")
    # Column-major images, as torchvision's STL10 reads them; labels are 1-based.
    images = images.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
    return images, np.fromfile(y_path, np.uint8).astype(np.int64) - 1


_READER_OF_FORMAT = {"idx": _read_mnist, "cifar": _read_cifar, "svhn": _read_svhn, "stl10": _read_stl10}
_READERS = {name: _READER_OF_FORMAT[spec.format] for name, spec in SPECS.items()}


def decode(name: str, data_dir: Path, files: list[DataFile]) -> tuple[torch.Tensor, torch.Tensor]:
    spec = SPECS[name]
    paths = [data_dir / f.rel for f in files]
    where = ", ".join(str(p) for p in paths)
    try:
        images, labels = _READERS[name](paths)
    except MemoryError:
        raise
    except Exception as e:  # any failure to parse a file on disk is a data problem
        raise DatasetError(f"{name}: cannot read {where} ({one_line(e)}); "
                           f"{how_to_get(name)}") from e
    shape = (spec.channels, spec.size, spec.size)
    if images.shape[1:] != shape or labels.shape != (len(images),) or len(images) == 0:
        raise DatasetError(f"{name}: {where} hold images {images.shape[1:]} x {len(images)} and "
                           f"{labels.shape} labels, expected (N, {shape}) and N labels; {how_to_get(name)}")
    if labels.min() < 0 or labels.max() >= spec.num_classes:
        raise DatasetError(f"{name}: labels in {where} outside 0..{spec.num_classes - 1}; "
                           f"{how_to_get(name)}")
    # C-contiguous and writable (IDX payloads are read-only views of the file's bytes).
    return (torch.from_numpy(np.require(images, np.uint8, ["C", "W"])),
            torch.from_numpy(labels.astype(np.int64)))


# --------------------------------------------------------------------------- reading

def load_split(name: str, data_dir: Path, train: bool, without: tuple[str, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """One split as (uint8 images (N, C, H, W), int64 labels (N,)), verified on every load.

    SVHN's train split is train + extra, or train alone with `without` ("extra_32x32.mat",
    --svhn-split train); STL10's is the 5,000 labelled images. A missing or corrupt file
    raises DatasetError saying how to get it (putting files in place is
    data/datafetch.py's: `locallearn data prepare`, or a run's datafetch.ready)."""
    data_dir = Path(data_dir)
    files = [f for f in layout_of(name).split_files(train) if Path(f.rel).name not in without]
    problems = problems_in(data_dir, files)
    if problems:
        raise dataset_error(name, data_dir, files, problems)
    return decode(name, data_dir, files)
