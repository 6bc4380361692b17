"""Every dataset of the paper through `locallearn train`, from small files in its real
on-disk format: shapes, classes, normalisation and augmentation per docs/method.md."""
from __future__ import annotations

import pytest
import torch

from conftest import CELLS_TSV
from fake_data import write_fake
from locallearn.train import trainer as train_mod
from locallearn.recipe.cells import read_cells, recipe_args
from locallearn.nets.models import describe
from locallearn.recipe.config import parse_train_args
from locallearn.data.batches import load_splits
from locallearn.data.datasets import SPECS
from locallearn.train.epochs import epoch_batches

SHAPES = {"MNIST": (1, 28, 10), "FashionMNIST": (1, 28, 10), "KuzushijiMNIST": (1, 28, 10),
          "CIFAR10": (3, 32, 10), "CIFAR100": (3, 32, 100), "SVHN": (3, 32, 10), "STL10": (3, 96, 10)}
# docs/method.md, Data: augmentation per dataset (crop padding, horizontal flip)
AUGMENT = {"MNIST": (2, False), "FashionMNIST": (2, True), "KuzushijiMNIST": (0, False),
           "CIFAR10": (4, True), "CIFAR100": (4, True), "SVHN": (0, False), "STL10": (0, False)}


def cfg_for(name, tmp_path, *extra):
    return parse_train_args(["--model", "mlp", "--dataset", name, "--num-layers", "1", "--num-hidden", "16",
                             "--epochs", "1", "--batch-size", "32", "--data-dir", str(tmp_path / "data"),
                             "--out", str(tmp_path / "run"), "--mlflow-uri", "", *extra])


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_train_one_epoch_on_real_format_files(name, tmp_path):
    train_labels, test_labels = write_fake(name, tmp_path / "data")
    cfg = cfg_for(name, tmp_path, "--cutout", "--length", "8")
    train, test, spec = load_splits(cfg, torch.device("cpu"))
    c, s, k = SHAPES[name]
    assert train.images.shape[1:] == (c, s, s) and train.images.dtype == torch.uint8
    assert train.n == len(train_labels) and test.n == len(test_labels)
    assert int(train.labels.max()) < k and spec.num_classes == k
    assert (spec.crop_padding, spec.hflip) == AUGMENT[name]
    assert (train.augment.crop_padding, train.augment.hflip, train.augment.cutout_length) == (*AUGMENT[name], 8)
    assert test.augment.cutout_length == 0 and test.augment.crop_padding == 0  # test: normalised only
    # normalisation with the dataset's constants
    x, _ = next(test.eval_batches(4))
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    torch.testing.assert_close(x, (test.images[:4].float() / 255 - mean) / std)
    m = train_mod.run(cfg)
    [epoch] = m["history"]
    assert m["epochs"] == epoch["epoch"] == 1
    # every training example once (no batch of one to drop here), every test example scored
    assert round(epoch["images_per_second"] * epoch["epoch_seconds"]) == len(train_labels)
    wrong = m["test_error"] * len(test_labels) / 100
    assert abs(wrong - round(wrong)) < 1e-9


def test_a_short_run_on_learnable_files_learns(tmp_path):
    """The fake images are a class template plus noise: 3 epochs of 5 steps take the test
    error from chance (90%) to well below it. Fails if a step changes nothing."""
    write_fake("KuzushijiMNIST", tmp_path / "data")          # no augmentation: the easiest to learn
    m = train_mod.run(cfg_for("KuzushijiMNIST", tmp_path, "--epochs", "3", "--lr", "1e-2", "--batch-size", "8"))
    assert m["epochs"] == 3 and m["test_error"] <= 40


def test_classes_per_batch_sampler_on_cifar100(tmp_path):
    """--classes-per-batch changes which examples share a batch, and so the sim loss and
    every update: the same recipe without it trains to another history."""
    write_fake("CIFAR100", tmp_path / "data")
    recipe = ["--loss-sup", "sim", "--classes-per-batch-until-epoch", "1", "--batch-size", "128"]
    sampled = train_mod.run(cfg_for("CIFAR100", tmp_path, *recipe, "--classes-per-batch", "20"))
    shuffled = train_mod.run(cfg_for("CIFAR100", tmp_path, *recipe, "--out", str(tmp_path / "plain")))
    assert sampled["epochs"] == shuffled["epochs"] == 1
    assert sampled["config"]["classes_per_batch"] == 20 and shuffled["config"]["classes_per_batch"] == 0
    assert sampled["history"][0]["train_loss"] != shuffled["history"][0]["train_loss"]
    assert sampled["history"][0]["local_loss"] != shuffled["history"][0]["local_loss"]


@pytest.mark.parametrize("row", read_cells(CELLS_TSV), ids=lambda r: r["cell"])
def test_describe_reports_input_and_classes(row):
    d = describe(parse_train_args(recipe_args(row)))
    c, s, k = SHAPES[row["dataset"]]
    assert d["input_shape"] == [c, s, s] and d["num_classes"] == k == SPECS[row["dataset"]].num_classes


@pytest.mark.parametrize("until, epoch, sampled", [(0, 1, True), (0, 400, True), (2, 2, True), (2, 3, False)])
def test_sampler_until_epoch_zero_keeps_it_for_the_whole_run(until, epoch, sampled, tmp_path):
    """As the reference: --classes-per-batch-until-epoch 0 (its default) never takes the
    sampler off; a positive value takes it off after that epoch."""
    write_fake("CIFAR100", tmp_path / "data")
    cfg = cfg_for("CIFAR100", tmp_path, "--classes-per-batch", "20", "--classes-per-batch-until-epoch", str(until))
    train, _, _ = load_splits(cfg, torch.device("cpu"))
    got = torch.cat([y for _, y in epoch_batches(cfg, train, epoch)])
    sampler = train.labels[train.order(cfg.seed, epoch, 20, cfg.batch_size)]
    shuffle = train.labels[train.order(cfg.seed, epoch, 0, cfg.batch_size)]
    assert not torch.equal(sampler, shuffle)
    assert torch.equal(got, sampler if sampled else shuffle)


def test_save_dir_is_an_alias_of_out(tmp_path):
    """The reference's --save-dir names where a run writes; here the folder itself."""
    write_fake("MNIST", tmp_path / "data")
    argv = ["--model", "mlp", "--dataset", "MNIST", "--num-layers", "1", "--num-hidden", "16", "--epochs", "1",
            "--data-dir", str(tmp_path / "data"), "--mlflow-uri", ""]
    assert parse_train_args(argv).out == "runs/last"
    cfg = parse_train_args(argv + ["--save-dir", str(tmp_path / "saved")])
    assert cfg.out == str(tmp_path / "saved")
    assert parse_train_args(argv + ["--save-dir", str(tmp_path / "saved"), "--out", str(tmp_path / "saved/")]).out
    train_mod.run(cfg)
    assert (tmp_path / "saved" / "metrics.json").exists()
