"""The class-per-batch sampler: the reference's batches, every example once (its speed:
benchmarks/sampler.py, docs/speed.md)."""
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from locallearn.data.sampler import arrange_batches, class_batch_order

CIFAR100_LABELS = np.repeat(np.arange(100), 500)


def reference_order(targets, ts_i, n, batch_size, min_classes=10):
    """The reference NClassRandomSampler.__iter__ from its shuffled list on (10 -> min_classes)."""
    ts, ts_i, out = list(targets), list(ts_i), []
    while len(ts_i) > 0:
        idxs, ts_i = ts_i[:n], ts_i[n:]
        t_slice_set = set([ts[i] for i in idxs])
        k = 0
        while len(t_slice_set) < min_classes and k < n * 10 and k < len(ts_i):
            if ts[ts_i[k]] not in t_slice_set:
                idxs.append(ts_i.pop(k))
                t_slice_set = set([ts[i] for i in idxs])
            else:
                k += 1
        j = 0
        while j < len(ts_i) and len(idxs) < batch_size:
            if ts[ts_i[j]] in t_slice_set:
                idxs.append(ts_i.pop(j))
            else:
                j += 1
        if len(idxs) < batch_size:
            needed = batch_size - len(idxs)
            idxs += ts_i[:needed]
            ts_i = ts_i[needed:]
        out += idxs
    return np.array(out, dtype=np.int64)


def batches(order, batch_size):
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def test_same_batches_as_the_reference_loop():
    rng = np.random.default_rng(1)
    for _ in range(300):
        total, classes = int(rng.integers(1, 300)), int(rng.integers(1, 30))
        labels = rng.choice(classes, total, p=rng.dirichlet(np.ones(classes) * rng.choice([0.2, 1, 5])))
        n, batch_size, min_classes = int(rng.integers(0, 40)), int(rng.integers(1, 64)), int(rng.integers(0, 15))
        order = rng.permutation(total)
        np.testing.assert_array_equal(arrange_batches(labels, order, n, batch_size, min_classes),
                                      reference_order(labels, order, n, batch_size, min_classes))


def test_cifar100_epoch_matches_reference():
    order = np.random.default_rng(0).permutation(len(CIFAR100_LABELS))
    np.testing.assert_array_equal(arrange_batches(CIFAR100_LABELS, order, 20, 128),
                                  reference_order(CIFAR100_LABELS, order, 20, 128))


@pytest.mark.parametrize("n,batch_size", [(0, 128), (1, 7), (20, 128), (128, 128), (500, 128)])
def test_every_example_exactly_once(n, batch_size):
    labels = np.random.default_rng(0).integers(0, 37, 3001)
    order = class_batch_order(labels, n, batch_size, np.random.default_rng(2))
    assert order.dtype == np.int64
    np.testing.assert_array_equal(np.sort(order), np.arange(len(labels)))


def test_at_least_ten_classes_per_batch_and_fewer_than_shuffling():
    order = class_batch_order(CIFAR100_LABELS, 20, 128, np.random.default_rng(0))
    distinct = [len(np.unique(CIFAR100_LABELS[b])) for b in batches(order, 128)]
    assert min(distinct[:-1]) >= 10        # the last, partial batch takes what is left
    plain = np.random.default_rng(0).permutation(len(CIFAR100_LABELS))
    plain_distinct = [len(np.unique(CIFAR100_LABELS[b])) for b in batches(plain, 128)]
    assert np.mean(distinct) < 20 < 60 < np.mean(plain_distinct)


def test_n_zero_is_a_plain_shuffle():
    labels = np.random.default_rng(0).integers(0, 10, 1000)
    np.testing.assert_array_equal(class_batch_order(labels, 0, 128, np.random.default_rng(5)),
                                  np.random.default_rng(5).permutation(1000))


def test_seeded_by_the_rng():
    a = class_batch_order(CIFAR100_LABELS, 20, 128, np.random.default_rng(7))
    b = class_batch_order(CIFAR100_LABELS, 20, 128, np.random.default_rng(7))
    c = class_batch_order(CIFAR100_LABELS, 20, 128, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_labels_need_not_be_contiguous_ints():
    labels = np.array([5, -3, 100, 5, 5, -3, 7] * 20)
    order = class_batch_order(labels, 2, 16, np.random.default_rng(0), min_classes=3)
    np.testing.assert_array_equal(np.sort(order), np.arange(len(labels)))


def test_bad_arguments():
    with pytest.raises(ValueError):
        class_batch_order(np.zeros((2, 2)), 1, 8, np.random.default_rng(0))
    with pytest.raises(ValueError):
        class_batch_order(np.zeros(8), -1, 8, np.random.default_rng(0))
    with pytest.raises(ValueError):
        class_batch_order(np.zeros(8), 1, 0, np.random.default_rng(0))


def test_benchmark_prints_its_figures():
    """benchmarks/sampler.py (docs/speed.md) runs and prints one timing per epoch; the
    figures themselves are not asserted."""
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "sampler.py"), "--repeats", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.findall(r"^class_batch_order: (\S+) epoch \([\d,]+ labels, n=20, batch 128\) in [\d.]+ s$",
                      r.stdout, re.M) == ["CIFAR-100", "SVHN"], r.stdout
