"""The dataset layer: real on-disk formats, checksums, clear errors, offline import."""
import gzip
import hashlib
import shutil
import tarfile
import urllib.error
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from torchvision.datasets import utils as tv_utils

from conftest import FMNIST_DEBIAN, needs_fmnist
from fake_data import SHAPES, fake_images, write_fake
from locallearn.atomic import atomic_write_bytes
from locallearn.data import datafetch, datasets
from locallearn.data.datafetch import prepare, ready
from locallearn.data.datasets import load_split
from locallearn.recipe.specs import SPECS
from locallearn.layout import resolve_data_dir
from locallearn.errors import ConfigError, DatasetError

NAMES = list(SPECS)


@pytest.fixture(autouse=True)
def no_offline_sources(monkeypatch):
    """Tests see only what they write, unless they put an offline source back."""
    monkeypatch.setattr(datafetch, "OFFLINE_SOURCES", {})


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- specs and data dir

def test_specs_follow_spec_md():
    assert NAMES == ["MNIST", "FashionMNIST", "KuzushijiMNIST", "CIFAR10", "CIFAR100", "SVHN", "STL10"]
    assert {n: (s.num_classes, s.channels, s.size) for n, s in SPECS.items()} == SHAPES
    assert SPECS["SVHN"].train_size == 73257 + 531131 == 604388
    assert (SPECS["STL10"].train_size, SPECS["STL10"].test_size) == (5000, 8000)
    assert (SPECS["CIFAR100"].mean, SPECS["CIFAR100"].std) == ((0.438, 0.418, 0.377), (0.300, 0.287, 0.294))
    assert [n for n, s in SPECS.items() if s.hflip] == ["FashionMNIST", "CIFAR10", "CIFAR100"]
    assert {n: s.crop_padding for n, s in SPECS.items() if s.crop_padding} == {
        "MNIST": 2, "FashionMNIST": 2, "CIFAR10": 4, "CIFAR100": 4}
    assert all(len(s.mean) == len(s.std) == s.channels for s in SPECS.values())


def test_one_table_says_each_dataset_once():
    """SPECS is the one place: readers, layouts, checksum extras, offline folders and
    table captions are all derived from its rows; every format it may name is readable."""
    from dataclasses import replace as with_
    from locallearn.report import tables
    from locallearn.recipe.specs import FORMATS, DatasetSpec

    assert set(datasets._LAYOUT_OF_FORMAT) == set(datasets._READER_OF_FORMAT) == set(FORMATS)
    assert set(datasets.LAYOUTS) == set(datasets._READERS) == set(SPECS)
    assert datasets.LAYOUTS["KuzushijiMNIST"].files[0].rel.startswith("KMNIST/raw/")   # torchvision's KMNIST
    assert set(datasets._CONTENT_MD5) == {f.rel for f in datasets.LAYOUTS["FashionMNIST"].files}
    assert [n for n, s in SPECS.items() if s.offline_sources] == ["FashionMNIST"]  # (OFFLINE_SOURCES: patched here)
    assert not hasattr(tables, "DATASET_TITLES") and SPECS["SVHN"].title.startswith("SVHN with extra")
    with pytest.raises(ValueError, match="dataset EMNIST: format 'emnist' is not one of idx, cifar, svhn, stl10"):
        with_(SPECS["MNIST"], name="EMNIST", format="emnist")
    with pytest.raises(ValueError, match="dataset X: mean and std need one value per channel"):
        DatasetSpec("X", "X", 10, 3, 32, (0.5,), (0.5,), 0, False, 1, 1, "cifar", "CIFAR10")


def test_resolve_data_dir(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOCALLEARN_DATA", raising=False)
    assert resolve_data_dir(None) == tmp_path / "data"
    monkeypatch.setenv("LOCALLEARN_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir("flag") == tmp_path / "flag"


def test_unknown_dataset_is_a_config_error(data_dir):
    with pytest.raises(ConfigError, match="unknown dataset 'ImageNet'"):
        load_split("ImageNet", data_dir, True)


# ---------------------------------------------------------------- loading the real formats

@pytest.mark.parametrize("name", NAMES)
def test_load_split_from_real_format_files(name, data_dir):
    classes, channels, size = SHAPES[name]
    train_y, test_y = write_fake(name, data_dir, seed=3)
    for train, labels, seed in ((True, train_y, 3), (False, test_y, 4)):
        images, got = load_split(name, data_dir, train)
        assert images.dtype == torch.uint8 and got.dtype == torch.int64
        assert images.shape == (len(labels), channels, size, size) and images.is_contiguous()
        assert torch.bincount(got, minlength=classes).tolist() == np.bincount(labels, minlength=classes).tolist()
        np.testing.assert_array_equal(got.numpy(), labels)
        np.testing.assert_array_equal(images.numpy(), fake_images(labels, name, seed))
    prepare(name, data_dir)   # already there and verified: nothing to fetch, both splits load


@pytest.mark.parametrize("name", NAMES)
def test_torchvision_reads_the_fake_files_the_same_way(name, data_dir, monkeypatch):
    """The fakes are the real formats: torchvision's own readers (md5 checks off) agree."""
    write_fake(name, data_dir)
    for module in (tvd.cifar, tvd.svhn, tvd.stl10, tvd.mnist):
        monkeypatch.setattr(module, "check_integrity", lambda *args, **kwargs: True, raising=False)
    for train in (True, False):
        images, labels = load_split(name, data_dir, train)
        if name in ("MNIST", "FashionMNIST", "KuzushijiMNIST"):
            raw = data_dir / {"KuzushijiMNIST": "KMNIST"}.get(name, name) / "raw"
            for gz in raw.glob("*.gz"):   # torchvision reads the unpacked copies
                gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
            ds = {"MNIST": tvd.MNIST, "FashionMNIST": tvd.FashionMNIST, "KuzushijiMNIST": tvd.KMNIST}[name](
                data_dir, train=train)
            tv_images, tv_labels = ds.data[:, None], ds.targets
        elif name in ("CIFAR10", "CIFAR100"):
            ds = getattr(tvd, name)(data_dir, train=train)
            tv_images, tv_labels = ds.data.transpose(0, 3, 1, 2), ds.targets
        elif name == "SVHN":
            parts = [tvd.SVHN(data_dir / "SVHN", split=s) for s in (("train", "extra") if train else ("test",))]
            tv_images = np.concatenate([p.data for p in parts])
            tv_labels = np.concatenate([p.labels for p in parts])
        else:
            ds = tvd.STL10(data_dir, split="train" if train else "test")
            tv_images, tv_labels = ds.data, ds.labels
        np.testing.assert_array_equal(images.numpy(), np.asarray(tv_images))
        np.testing.assert_array_equal(labels.numpy(), np.asarray(tv_labels))


def test_svhn_train_is_train_then_extra(data_dir):
    from scipy.io import loadmat
    write_fake("SVHN", data_dir, n_train=30, n_test=12)
    parts = [loadmat(data_dir / "SVHN" / f) for f in ("train_32x32.mat", "extra_32x32.mat")]
    assert [len(p["y"]) for p in parts] == [10, 20]
    images, labels = load_split("SVHN", data_dir, True)
    expected = np.concatenate([p["y"].reshape(-1) for p in parts]).astype(np.int64)
    np.testing.assert_array_equal(labels.numpy(), np.where(expected == 10, 0, expected))
    np.testing.assert_array_equal(images[10].numpy(), parts[1]["X"][..., 0].transpose(2, 0, 1))
    assert 0 in labels and labels.max() == 9
    assert load_split("SVHN", data_dir, False)[0].shape == (12, 3, 32, 32)


def test_stl10_uses_the_labelled_splits_only(data_dir):
    write_fake("STL10", data_dir, n_train=50, n_test=80)
    assert not (data_dir / "stl10_binary" / "unlabeled_X.bin").exists()
    assert load_split("STL10", data_dir, True)[0].shape == (50, 3, 96, 96)
    assert load_split("STL10", data_dir, False)[0].shape == (80, 3, 96, 96)
    assert [Path(f.rel).name for f in datasets.LAYOUTS["STL10"].files] == [
        "train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"]


def test_kuzushiji_mnist_reads_kmnist_not_mnist(data_dir):
    write_fake("MNIST", data_dir, seed=0)
    with pytest.raises(DatasetError, match="KMNIST/raw/train-images-idx3-ubyte.gz"):
        load_split("KuzushijiMNIST", data_dir, True)
    kmnist_train, _ = write_fake("KuzushijiMNIST", data_dir, seed=10)
    images, labels = load_split("KuzushijiMNIST", data_dir, True)
    np.testing.assert_array_equal(images.numpy(), fake_images(kmnist_train, "KuzushijiMNIST", 10))
    assert not np.array_equal(images.numpy(), load_split("MNIST", data_dir, True)[0].numpy())
    layout = datasets.LAYOUTS["KuzushijiMNIST"]
    assert [f.md5 for f in layout.files] == [md5 for _, md5 in tvd.KMNIST.resources]
    assert all("kmnist" in url for f in layout.files for url in f.urls)


# ---------------------------------------------------------------- missing and corrupt data

@pytest.mark.parametrize("name", NAMES)
def test_missing_dataset_gives_one_clear_line(name, data_dir):
    with pytest.raises(DatasetError) as excinfo:
        load_split(name, data_dir, True)
    message = one_line_error(excinfo)
    assert message.startswith(f"{name}: dataset not found")
    assert str(data_dir) in message
    for f in datasets.LAYOUTS[name].split_files(True):
        assert f.rel in message
    assert f"locallearn data prepare {name} --download" in message
    assert f"locallearn data prepare {name} --source DIR" in message
    assert not data_dir.exists()   # looking creates nothing


def test_truncated_gz_is_corrupt(data_dir):
    write_fake("MNIST", data_dir)
    path = data_dir / "MNIST/raw/train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError) as excinfo:
        load_split("MNIST", data_dir, True)
    message = one_line_error(excinfo)
    assert f"MNIST: {path} is corrupt" in message and "--download" in message
    load_split("MNIST", data_dir, False)   # the other split is intact


def test_bit_flipped_file_is_corrupt(data_dir):
    write_fake("CIFAR10", data_dir)
    path = data_dir / "cifar-10-batches-py/data_batch_3"
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x10
    path.write_bytes(bytes(content))
    with pytest.raises(DatasetError, match=f"CIFAR10: {path} is corrupt .*torchvision's is 54ebc095f3ab1f0389bbae665268c751"):
        load_split("CIFAR10", data_dir, True)
    with pytest.raises(DatasetError, match="is corrupt"):
        prepare("CIFAR10", data_dir)   # nothing to fetch from: reports the problem


@pytest.mark.parametrize("name,rel,content", [
    ("KuzushijiMNIST", "KMNIST/raw/train-labels-idx1-ubyte.gz", gzip.compress(b"\0\0\x08\x01\0\0\0\x09" + bytes(3), mtime=0)),   # mtime: the same id in every worker
    ("FashionMNIST", "FashionMNIST/raw/train-images-idx3-ubyte.gz", b"not gzip at all"),
    ("STL10", "stl10_binary/train_X.bin", bytes(1000)),
    ("CIFAR100", "cifar-100-python/train", b"not a pickle"),
    ("SVHN", "SVHN/extra_32x32.mat", b"MATLAB 5.0 MAT-file, truncated"),
])
def test_file_that_cannot_be_parsed(name, rel, content, data_dir):
    """Accepted by checksum (by hand), still caught when it is decoded."""
    write_fake(name, data_dir)
    (data_dir / rel).write_bytes(content)
    datasets.accept_custom_files(data_dir, [rel])
    with pytest.raises(DatasetError) as excinfo:
        load_split(name, data_dir, True)
    assert one_line_error(excinfo).startswith(f"{name}: ")
    assert "cannot read" in str(excinfo.value) or "hold images" in str(excinfo.value)



@pytest.mark.parametrize("header", [
    b"\0\0\x08\x03" + (9).to_bytes(4, "big") + (1).to_bytes(4, "big") * 2,   # 3-D images, 9 x 1 x 1
    b"\0\0\x0d\x01" + (9).to_bytes(4, "big"),                                  # 1-D float32 (type 0x0D)
], ids=["images-header", "float-header"])
def test_an_idx_file_of_another_kind_is_named(header, data_dir):
    """A labels file whose IDX header says another shape or type is refused for what it
    is, even where its length happens to fit 9 uint8 labels."""
    write_fake("MNIST", data_dir)
    rel = "MNIST/raw/train-labels-idx1-ubyte.gz"
    (data_dir / rel).write_bytes(gzip.compress(header + bytes(17 - len(header)), mtime=0))
    datasets.accept_custom_files(data_dir, [rel])
    with pytest.raises(DatasetError, match="not an IDX file of 1-D uint8 data"):
        load_split("MNIST", data_dir, True)

def test_labels_out_of_range(data_dir):
    write_fake("STL10", data_dir)
    (data_dir / "stl10_binary/test_y.bin").write_bytes(bytes([11]) * 20)
    datasets.accept_custom_files(data_dir, ["stl10_binary/test_y.bin"])
    with pytest.raises(DatasetError, match="labels .* outside 0..9"):
        load_split("STL10", data_dir, False)


# ---------------------------------------------------------------- download and import

def test_offline_download_fails_clearly_and_leaves_nothing(data_dir, monkeypatch):
    def offline(url, root, filename=None, md5=None):
        Path(root, filename).write_bytes(b"partial")   # as an interrupted transfer would
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(tv_utils, "download_url", offline)
    with pytest.raises(DatasetError) as excinfo:
        ready("SVHN", data_dir, download=True)
    message = one_line_error(excinfo)
    assert message.startswith("SVHN: download failed (http://ufldl.stanford.edu/housenumbers/train_32x32.mat")
    assert "Temporary failure in name resolution" in message
    assert "locallearn data prepare SVHN --source DIR" in message
    assert files_under(data_dir) == []


def fake_originals(name, tmp_path, monkeypatch):
    """Fake files and their tarball, made the 'originals' by patching the known md5s."""
    origin = tmp_path / "origin"
    write_fake(name, origin)
    layout = datasets.LAYOUTS[name]
    md5 = lambda p: hashlib.md5(p.read_bytes()).hexdigest()   # noqa: E731
    tarball = tmp_path / "archives" / layout.archive.filename
    tarball.parent.mkdir()
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(origin / Path(layout.files[0].rel).parent, arcname=Path(layout.files[0].rel).parent.name)
    patched = replace(layout, files=tuple(replace(f, md5=md5(origin / f.rel)) for f in layout.files),
                      archive=replace(layout.archive, md5=md5(tarball)))
    monkeypatch.setitem(datasets.LAYOUTS, name, patched)
    return origin, tarball


def test_download_of_a_tarball_installs_verified_files(data_dir, tmp_path, monkeypatch):
    origin, tarball = fake_originals("CIFAR10", tmp_path, monkeypatch)
    fetched = []

    def download_url(url, root, filename=None, md5=None):
        fetched.append(url)
        shutil.copy(tarball, Path(root, filename))
    monkeypatch.setattr(tv_utils, "download_url", download_url)
    ready("CIFAR10", data_dir, download=True)
    images, _ = load_split("CIFAR10", data_dir, True)
    assert fetched == [tvd.CIFAR10.url]
    np.testing.assert_array_equal(images.numpy(), load_split("CIFAR10", origin, True)[0].numpy())
    assert files_under(data_dir) == ["cifar-10-batches-py"] + [
        f"cifar-10-batches-py/{f}" for f in sorted(["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)])]


def test_download_replaces_a_corrupt_file(data_dir, tmp_path, monkeypatch):
    origin, tarball = fake_originals("CIFAR100", tmp_path, monkeypatch)
    monkeypatch.setattr(tv_utils, "download_url", lambda url, root, filename=None, md5=None:
                        shutil.copy(tarball, Path(root, filename)))
    prepare("CIFAR100", data_dir, download=True)
    (data_dir / "cifar-100-python/test").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="is corrupt"):
        load_split("CIFAR100", data_dir, False)
    ready("CIFAR100", data_dir, download=True)
    images, labels = load_split("CIFAR100", data_dir, False)
    assert torch.equal(labels, load_split("CIFAR100", origin, False)[1])


def test_import_from_a_folder_holding_the_tarball(data_dir, tmp_path, monkeypatch):
    _, tarball = fake_originals("STL10", tmp_path, monkeypatch)
    prepare("STL10", data_dir, source=tarball.parent)
    assert load_split("STL10", data_dir, False)[0].shape == (20, 3, 96, 96)


def test_import_rejects_files_that_are_not_the_originals(data_dir, tmp_path):
    write_fake("MNIST", tmp_path / "elsewhere")
    with pytest.raises(DatasetError) as excinfo:
        prepare("MNIST", data_dir, source=tmp_path / "elsewhere")
    message = one_line_error(excinfo)
    assert "is not the original file" in message and "nothing was imported" in message
    assert files_under(data_dir) == []
    with pytest.raises(DatasetError, match=r"lacks train_32x32.mat, extra_32x32.mat, test_32x32.mat"):
        prepare("SVHN", data_dir, source=tmp_path)


def test_an_interrupted_write_leaves_no_file(tmp_path):
    class Broken:
        def read(self, size=-1):
            raise OSError("disk full")
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "x" / "file", Broken())   # the writer the data layer uses
    assert files_under(tmp_path) == ["x"]


# ---------------------------------------------------------------- the real Fashion-MNIST

@needs_fmnist
def test_real_fashion_mnist_import_verifies_checksums(data_dir):
    prepare("FashionMNIST", data_dir, source=FMNIST_DEBIAN)
    for train, size in ((True, 60000), (False, 10000)):
        images, labels = load_split("FashionMNIST", data_dir, train)
        assert images.shape == (size, 1, 28, 28)
        assert torch.bincount(labels).tolist() == [size // 10] * 10
    assert abs(images.float().mean().item() / 255 - SPECS["FashionMNIST"].mean[0]) < 0.005
    # torchvision's own class reads the same data from the same folder.
    ds = tvd.FashionMNIST(data_dir, train=False)
    assert torch.equal(ds.data, images[:, 0]) and torch.equal(ds.targets, labels)
    assert not (data_dir / datasets.CUSTOM_CHECKSUMS).exists()


@needs_fmnist
def test_real_fashion_mnist_with_a_flipped_bit_is_rejected(data_dir, tmp_path):
    source = tmp_path / "copy"
    shutil.copytree(FMNIST_DEBIAN, source)
    path = source / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(path.read_bytes())
    content[-12] ^= 0x01
    path.write_bytes(bytes(content))
    with pytest.raises(DatasetError, match=f"{path} is not the original file .*nothing was imported"):
        prepare("FashionMNIST", data_dir, source=source)
    assert files_under(data_dir) == []


@needs_fmnist
def test_missing_fashion_mnist_is_imported_from_debian_automatically(data_dir, monkeypatch):
    monkeypatch.setattr(datafetch, "OFFLINE_SOURCES", {"FashionMNIST": (FMNIST_DEBIAN,)})
    ready("FashionMNIST", data_dir)
    images, labels = load_split("FashionMNIST", data_dir, False)
    assert images.shape == (10000, 1, 28, 28) and len(labels.unique()) == 10
    assert (data_dir / "FashionMNIST/raw/train-images-idx3-ubyte").stat().st_size == 47040016
