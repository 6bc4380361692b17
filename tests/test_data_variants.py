"""The data as another paper's code reads it (the field's grid, docs/peers.md): SVHN's
standard split, reflection-padded crops, flips, normalisation and a wider classifier,
each a flag that changes nothing while unset (recipe/specs.py: run_spec)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fake_data import write_fake
from locallearn.data.batches import load_splits, random_crop, reflect_pad
from locallearn.errors import ConfigError
from locallearn.nets.models import describe
from locallearn.recipe.config import config_hash, parse_train_args
from locallearn.recipe.cost import network_cost
from locallearn.recipe.specs import SPECS, run_spec

CPU = torch.device("cpu")


def cfg_of(dataset: str, *flags: str, data_dir=None):
    argv = ["--model", "resnet32", "--dataset", dataset, "--device", "cpu", "--mlflow-uri", ""]
    return parse_train_args(argv + (["--data-dir", str(data_dir)] if data_dir else []) + list(flags))


def test_reflect_pad_by_hand_and_as_float_padding_does_it():
    row = torch.tensor([[[[10, 20, 30, 40, 50]]]], dtype=torch.uint8)        # 1 x 1 x 1 x 5
    assert reflect_pad(row.expand(1, 1, 3, 5).contiguous(), 2)[0, 0, 2].tolist() == [30, 20, 10, 20, 30, 40,
                                                                                     50, 40, 30]
    x = torch.randint(0, 256, (4, 3, 7, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    # AugLocal's CIFAR-10 transform: ToTensor, F.pad(mode='reflect') on floats, ToPILImage
    as_float = (F.pad(x.float().div(255), (4, 4, 4, 4), mode="reflect").mul(255)).byte()
    assert torch.equal(reflect_pad(x, 4), as_float)
    every = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(every.float().div(255).mul(255).byte(), every)     # the round trip keeps every value


def test_a_reflect_crop_is_a_window_of_the_reflected_image():
    x = torch.randint(1, 256, (500, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = random_crop(x, 4, torch.Generator().manual_seed(2), fill="reflect")
    assert (out > 0).all()                         # no zero padding ever shows
    padded = reflect_pad(x, 4)
    for i in range(0, 500, 50):
        windows = [(oy, ox) for oy in range(9) for ox in range(9)
                   if torch.equal(padded[i, :, oy:oy + 8, ox:ox + 8], out[i])]
        assert windows, i


def test_unset_flags_leave_the_dataset_and_the_hash_as_they_were():
    for name in SPECS:
        assert run_spec(cfg_of(name)) is SPECS[name]
    plain = cfg_of("CIFAR10")
    same = cfg_of("CIFAR10", "--crop-fill", "zeros", "--num-classes", "0", "--svhn-split", "train+extra")
    assert config_hash(plain) == config_hash(same)
    assert config_hash(cfg_of("CIFAR10", "--crop-fill", "reflect")) != config_hash(plain)


def test_the_flags_make_the_spec_their_code_reads():
    s = run_spec(cfg_of("CIFAR10", "--crop-fill", "reflect", "--pixel-mean", "125.3", "123.0", "113.9",
                        "--pixel-std", "63.0", "62.1", "66.7"))
    assert s.crop_fill == "reflect" and s.crop_padding == 4 and s.hflip
    assert s.mean == pytest.approx((125.3 / 255, 123.0 / 255, 113.9 / 255), abs=0)
    assert s.std == pytest.approx((63.0 / 255, 62.1 / 255, 66.7 / 255), abs=0)
    s = run_spec(cfg_of("SVHN", "--svhn-split", "train", "--crop-padding", "2", "--hflip", "no"))
    assert (s.train_size, s.crop_padding, s.hflip) == (73257, 2, False) and "73,257" in s.title
    s = run_spec(cfg_of("STL10", "--crop-padding", "4", "--hflip", "yes", "--num-classes", "100"))
    assert (s.crop_padding, s.hflip, s.num_classes) == (4, True, 100)


def test_a_hundred_way_stl10_classifier_is_built_and_counted():
    ten, hundred = cfg_of("STL10"), cfg_of("STL10", "--num-classes", "100")
    d10, d100 = describe(ten), describe(hundred)
    assert d100["num_classes"] == 100
    # ResNet-32's classifier reads 64 features: 90 more outputs are 90 x (64 + 1) parameters
    assert d100["params_backprop"] - d10["params_backprop"] == 90 * 65
    assert network_cost(hundred).backbone_params - network_cost(ten).backbone_params == 90 * 65


@pytest.mark.parametrize("flags, message", [
    (("--dataset", "CIFAR10", "--svhn-split", "train"), "--svhn-split: only SVHN"),
    (("--dataset", "SVHN", "--svhn-split", "standard"), "--svhn-split: unknown value 'standard'"),
    (("--dataset", "CIFAR10", "--crop-fill", "mirror"), "--crop-fill: unknown value"),
    (("--dataset", "CIFAR10", "--hflip", "maybe"), "--hflip: unknown value 'maybe'"),
    (("--dataset", "CIFAR10", "--crop-padding", "-1"), "--crop-padding: must be >= 0"),
    (("--dataset", "CIFAR10", "--pixel-mean", "127.5"), "--pixel-mean: CIFAR10 has 3 channel(s), got 1"),
    (("--dataset", "SVHN", "--pixel-std", "1", "0", "1"), "--pixel-std: must be finite and positive"),
    (("--dataset", "STL10", "--num-classes", "5"), "--num-classes: STL10 has 10 classes"),
])
def test_a_data_flag_that_does_not_fit_is_named(flags, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_train_args(["--model", "resnet32", *flags])


def test_svhn_standard_split_reads_train_only_and_never_extra(tmp_path):
    write_fake("SVHN", tmp_path, n_train=30, n_test=10)     # train_32x32.mat: 10 images, extra: 20
    whole, _, _ = load_splits(cfg_of("SVHN", data_dir=tmp_path), CPU)
    standard, test, spec = load_splits(cfg_of("SVHN", "--svhn-split", "train", data_dir=tmp_path), CPU)
    assert (whole.n, standard.n, test.n) == (30, 10, 10)
    assert torch.equal(standard.images, whole.images[:10]) and spec.train_size == 73257
    (tmp_path / "SVHN" / "extra_32x32.mat").write_bytes(b"not a mat file")
    again, _, _ = load_splits(cfg_of("SVHN", "--svhn-split", "train", data_dir=tmp_path), CPU)
    assert torch.equal(again.images, standard.images)      # the extra file is not even read


def test_their_augmentation_reaches_the_training_batches(tmp_path):
    write_fake("STL10", tmp_path, n_train=20, n_test=10)
    cfg = cfg_of("STL10", "--crop-padding", "4", "--hflip", "yes", "--pixel-mean", "127.5", "127.5", "127.5",
                 "--pixel-std", "127.5", "127.5", "127.5", data_dir=tmp_path)
    train, test, _ = load_splits(cfg, CPU)
    assert (train.augment.crop_padding, train.augment.hflip) == (4, True)
    x, _ = next(test.eval_batches(10))
    # mean = std = 127.5 / 255: every pixel maps to 2 u / 255 - 1, in [-1, 1]
    u = test.images[:10].double()
    np.testing.assert_allclose(x.double().numpy(), (2 * u / 255 - 1).numpy(), atol=1e-6)
    xb, _ = next(train.train_batches(torch.arange(20), 20, seed=1, epoch=1))
    assert (xb.abs() <= 1 + 1e-6).all() and (xb == -1).any()    # zero-padded crops show as -1
    write_fake("CIFAR10", tmp_path, n_train=20, n_test=10)
    train, _, _ = load_splits(cfg_of("CIFAR10", "--crop-fill", "reflect", data_dir=tmp_path), CPU)
    assert (train.augment.crop_padding, train.augment.crop_fill, train.augment.hflip) == (4, "reflect", True)
