"""What the paper's datasets and networks are, as plain data (no torch import), so the
workflow can build its DAG and cost model from the same numbers the trainer uses."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    """What the trainer needs to know about a dataset (SPEC.md, Data)."""
    name: str
    num_classes: int
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    hflip: bool
    train_size: int
    test_size: int


SPECS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("MNIST", 10, 1, 28, (0.1307,), (0.3081,), 2, False, 60000, 10000),
    DatasetSpec("FashionMNIST", 10, 1, 28, (0.286,), (0.353,), 2, True, 60000, 10000),
    DatasetSpec("KuzushijiMNIST", 10, 1, 28, (0.1904,), (0.3475,), 0, False, 60000, 10000),
    DatasetSpec("CIFAR10", 10, 3, 32, (0.424, 0.415, 0.384), (0.283, 0.278, 0.284), 4, True, 50000, 10000),
    DatasetSpec("CIFAR100", 100, 3, 32, (0.438, 0.418, 0.377), (0.300, 0.287, 0.294), 4, True, 50000, 10000),
    DatasetSpec("SVHN", 10, 3, 32, (0.431, 0.430, 0.446), (0.197, 0.198, 0.199), 0, False, 604388, 26032),
    DatasetSpec("STL10", 10, 3, 96, (0.447, 0.440, 0.407), (0.260, 0.257, 0.271), 0, False, 5000, 8000),
)}

# 'M' = 2x2 max-pool, stride 2; integers are conv blocks (channels before feat_mult).
VGG_CONFIGS = {
    "vgg6a": [128, "M", 256, "M", 512, "M", 512],
    "vgg6b": [128, "M", 256, "M", 512, "M", 512, "M"],
    "vgg8": [64, "M", 128, "M", 256, "M", 512, "M", 512, "M"],
    "vgg8a": [128, 256, "M", 256, 512, "M", 512, "M", 512],
    "vgg8b": [128, 256, "M", 256, 512, "M", 512, "M", 512, "M"],
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg11b": [128, 128, 128, 256, "M", 256, 512, "M", 512, 512, "M", 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}
