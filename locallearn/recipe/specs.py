"""What the paper's datasets and networks are, as plain data (no torch import), so the
workflow can build its DAG and cost model from the same numbers the trainer uses."""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class DatasetSpec:
    """Everything about one dataset, in one row (docs/method.md, Data). Every other place that
    needs a dataset derives it from SPECS: the readers and file layouts (data/datasets.py),
    the augmentation (data/batches.py), the table captions (report/tables.py), the workflow schemas'
    dataset enums (locallearn/workflow/plan.py), the flags' choices (recipe/config.py)."""
    name: str                     # as on the command line and in cells.tsv
    title: str                    # the caption of its results table (the paper's README)
    num_classes: int
    channels: int                 # image shape: channels x size x size
    size: int
    mean: tuple[float, ...]       # normalisation, per channel
    std: tuple[float, ...]
    crop_padding: int             # train augmentation: random crop with this padding (0: none)
    hflip: bool                   # ... and random horizontal flips
    train_size: int               # images per split (SVHN's train: train + extra)
    test_size: int
    # The files. `format` picks both how they lie in the data dir and how they are read
    # (data/datasets.py: idx, cifar, svhn, stl10); the file names, URLs and md5 checksums of
    # the originals are those of torchvision's class `torchvision`, the source of truth
    # for what a download fetches.
    format: str
    torchvision: str
    # md5 of the decompressed content of .gz originals, for copies that were
    # re-compressed (their .gz md5 differs, their content does not): file name -> md5.
    content_md5: tuple[tuple[str, str], ...] = ()
    # Folders of original files that a machine may already have: imported (verified)
    # before anything asks for a download.
    offline_sources: tuple[str, ...] = ()
    # A file of the training split that a recipe may leave out, and its images (SVHN's
    # extra_32x32.mat: --svhn-split train trains on the 73,257 of the standard split).
    extra_train_file: str = ""
    extra_train_size: int = 0
    crop_fill: str = "zeros"      # how the random crop pads: zeros | reflect (--crop-fill)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"dataset {self.name}: format {self.format!r} is not one of {', '.join(FORMATS)} "
                             "(a new format needs a layout and a reader in locallearn/data/datasets.py)")
        if not len(self.mean) == len(self.std) == self.channels:
            raise ValueError(f"dataset {self.name}: mean and std need one value per channel ({self.channels})")


FORMATS = ("idx", "cifar", "svhn", "stl10")   # the file formats data/datasets.py reads


SPECS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("MNIST", "MNIST with 2 pixel jittering",
                10, 1, 28, (0.1307,), (0.3081,), 2, False, 60000, 10000, "idx", "MNIST"),
    DatasetSpec("FashionMNIST", "Fashion-MNIST with 2 pixel jittering and horizontal flipping",
                10, 1, 28, (0.286,), (0.353,), 2, True, 60000, 10000, "idx", "FashionMNIST",
                # the values other Fashion-MNIST loaders list for the unpacked originals;
                # Debian's dataset-fashion-mnist files match them
                content_md5=(("train-images-idx3-ubyte.gz", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
                             ("train-labels-idx1-ubyte.gz", "9018921c3c673c538a1fc5bad174d6f9"),
                             ("t10k-images-idx3-ubyte.gz", "8181f5470baa50b63fa0f6fddb340f0a"),
                             ("t10k-labels-idx1-ubyte.gz", "15d484375f8d13e6eb1aabb0c3f46965")),
                offline_sources=("/usr/share/datasets/fashion-mnist",)),   # Debian: dataset-fashion-mnist
    DatasetSpec("KuzushijiMNIST", "Kuzushiji-MNIST with no data augmentation",   # the real one, never MNIST
                10, 1, 28, (0.1904,), (0.3475,), 0, False, 60000, 10000, "idx", "KMNIST"),
    DatasetSpec("CIFAR10", "CIFAR-10 with data augmentation",
                10, 3, 32, (0.424, 0.415, 0.384), (0.283, 0.278, 0.284), 4, True, 50000, 10000,
                "cifar", "CIFAR10"),
    DatasetSpec("CIFAR100", "CIFAR-100 with data augmentation",
                100, 3, 32, (0.438, 0.418, 0.377), (0.300, 0.287, 0.294), 4, True, 50000, 10000,
                "cifar", "CIFAR100"),
    DatasetSpec("SVHN", "SVHN with extra training data, but no augmentation",
                10, 3, 32, (0.431, 0.430, 0.446), (0.197, 0.198, 0.199), 0, False, 604388, 26032,
                "svhn", "SVHN", extra_train_file="extra_32x32.mat", extra_train_size=531131),
    DatasetSpec("STL10", "STL-10 with no data augmentation",
                10, 3, 96, (0.447, 0.440, 0.407), (0.260, 0.257, 0.271), 0, False, 5000, 8000,
                "stl10", "STL10"),
)}

SVHN_SPLITS = ("train+extra", "train")   # --svhn-split: the paper's, torchvision's split='train'
CROP_FILLS = ("zeros", "reflect")        # --crop-fill


def run_spec(cfg) -> DatasetSpec:
    """The dataset as one run's recipe reads it: its DatasetSpec with the data flags that
    a recipe may set applied (--svhn-split, --crop-padding, --crop-fill, --hflip,
    --pixel-mean, --pixel-std, --num-classes; docs/flags.md). Unset, they leave the
    paper's dataset as it is. Everything a run builds or counts from its data (the
    network's classifier, the batches, the cost model) reads this, never SPECS directly."""
    spec = SPECS[cfg.dataset]
    changes = {}
    if getattr(cfg, "svhn_split", "train+extra") == "train":
        changes.update(train_size=spec.train_size - spec.extra_train_size, extra_train_file="",
                       extra_train_size=0, title=f"{spec.name}, standard split ({spec.train_size - spec.extra_train_size:,} training images)")
    if getattr(cfg, "crop_padding", None) is not None:
        changes["crop_padding"] = cfg.crop_padding
    if getattr(cfg, "crop_fill", "zeros") != "zeros":
        changes["crop_fill"] = cfg.crop_fill
    if getattr(cfg, "hflip", None) is not None:
        changes["hflip"] = cfg.hflip == "yes"
    if getattr(cfg, "pixel_mean", None):
        changes["mean"] = tuple(m / 255 for m in cfg.pixel_mean)
    if getattr(cfg, "pixel_std", None):
        changes["std"] = tuple(s / 255 for s in cfg.pixel_std)
    if getattr(cfg, "num_classes", 0):
        changes["num_classes"] = cfg.num_classes
    return replace(spec, **changes) if changes else spec


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

# The CIFAR ResNets (nets/resnet.py): BasicBlocks per stage.
RESNET_BLOCKS = {"resnet32": 5, "resnet110": 18}

# Every network name, torch-free (recipe/config.py checks --model against it); models.MODELS
# registers a builder for each (tests/test_models.py keeps the two equal).
MODEL_NAMES = ("mlp", *VGG_CONFIGS, *RESNET_BLOCKS)
