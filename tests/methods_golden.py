"""What the golden-number tests share: the name of each of our tensors in AugLocal's
code, the deterministic starting values both sides use, and the golden cases as our
flags (tests/golden/auglocal/README.md)."""
from __future__ import annotations

import dataclasses
import json
import math
import zlib

import torch
import torch.nn.functional as F

from conftest import REPO
from locallearn.recipe.config import parse_train_args
from locallearn.data.datasets import SPECS
from locallearn.host import precision
from locallearn.nets.resnet import build_resnet
from locallearn.recipe.specs import RESNET_BLOCKS
from locallearn.train.engines import FusedEngine

GOLDEN = REPO / "tests" / "golden" / "auglocal"

# Each golden case as our command line (their train.py arguments in the JSON).
CASES = {
    "resnet32-bp": ["--model", "resnet32", "--local-modules", "1"],
    "resnet32-dgl": ["--model", "resnet32", "--method", "dgl"],
    "resnet32-infopro": ["--model", "resnet32", "--method", "infopro",
                         "--ixx-1", "5", "--ixy-1", "0.05", "--ixx-2", "0.2", "--ixy-2", "0.5"],
    "resnet32-predsim": ["--model", "resnet32", "--method", "paper", "--loss-sup", "predsim", "--beta", "0.99",
                         "--dim-in-decoder", "512", "--no-output-scale"],
    "resnet32-auglocal-d1": ["--model", "resnet32", "--method", "auglocal", "--aux-depth", "1",
                             "--pyramid-coeff", "0.5"],
    "resnet32-auglocal-d3": ["--model", "resnet32", "--method", "auglocal", "--aux-depth", "3",
                             "--pyramid-coeff", "0.5"],
    "resnet110-infopro": ["--model", "resnet110", "--method", "infopro",
                          "--ixx-1", "5", "--ixy-1", "0", "--ixx-2", "0.5", "--ixy-2", "1"],
    "resnet110-auglocal-d3": ["--model", "resnet110", "--method", "auglocal", "--aux-depth", "3",
                              "--pyramid-coeff", "0.5"],
}


def load(case: str) -> dict:
    return json.loads((GOLDEN / f"{case}.json").read_text())


def cfg_for(case: str, golden: dict):
    s = golden["setup"]
    return parse_train_args(CASES[case] + [
        "--dataset", "CIFAR10", "--optim", "sgd", "--momentum", str(s["momentum"]), "--nesterov",
        "--weight-decay", str(s["weight_decay"]), "--lr", str(s["lr"]), "--batch-size", str(s["batch"])])


def build(cfg, golden: dict):
    """Our network, on their CIFAR normalisation (InfoPro restores the image with it)."""
    s = golden["setup"]
    spec = dataclasses.replace(SPECS["CIFAR10"], mean=tuple(s["image_mean"]), std=tuple(s["image_std"]))
    return build_resnet(cfg.model, cfg, spec)


def init_value(key: str, t: torch.Tensor) -> torch.Tensor:
    """The starting value of the tensor named `key` in their code (their README: the
    same rule in make_golden.py)."""
    if key.endswith(("running_mean", "num_batches_tracked")):
        return torch.zeros_like(t)
    if key.endswith("running_var"):
        return torch.ones_like(t)
    n = torch.randn(t.shape, generator=torch.Generator().manual_seed(zlib.crc32(key.encode())),
                    dtype=torch.float64).to(t.dtype)
    if t.dim() >= 2:
        return n * math.sqrt(2.0 / (t.numel() // t.shape[0]))
    return 1 + 0.1 * n if key.endswith("weight") else 0.1 * n


def their_names(model, arch: str, heads_after: list[int] | None = None) -> dict[str, str]:
    """Our state-dict key -> theirs. Layers: their conv1/bn1 (the stem) and
    layer{stage}.{j}; heads: aux_classifier_{stage}_{j} (a classifier's `head`
    Sequential) and decoder_{stage}_{j} (InfoPro's reconstruction, PredSim's sim conv),
    module m's head after layer heads_after[m] (default: layer m, AugLocal's placement)."""
    per_stage = RESNET_BLOCKS[arch]
    units = [f"layers.{m}.layer.{j}." for m, mod in enumerate(model.layers) for j in range(len(mod.layer))]
    units += [f"output.{j}." for j in range(len(model.output) - 3)]   # less pool, flatten, linear
    fc = f"output.{len(model.output) - 1}."

    def place(g: int) -> tuple[int, int]:
        return (0, 0) if g == 0 else ((g - 1) // per_stage + 1, (g - 1) % per_stage)

    head_parts = {"classifier.": "aux_classifier_{}_{}.head.", "reconstruction.": "decoder_{}_{}.decoder.",
                  "decoder.": "aux_classifier_{}_{}.head.2.", "sim_layer.": "decoder_{}_{}.decoder.0."}
    names = {}
    for key in model.state_dict():
        if key.startswith(fc):
            names[key] = "fc." + key[len(fc):]
            continue
        unit = next((g for g, p in enumerate(units) if key.startswith(p)), None)
        if unit is not None:
            rest = key[len(units[unit]):]
            if unit == 0:
                rest = {"0": "conv1", "1": "bn1"}[rest.split(".")[0]] + "." + rest.split(".", 1)[1]
                names[key] = rest
            else:
                s, j = place(unit)
                names[key] = f"layer{s}.{j}.{rest}"
            continue
        m = int(key.split(".")[1])          # layers.{m}.head.…: module m's head
        m = heads_after[m] if heads_after else m
        rest = key.split(".head.", 1)[1]
        part = next(p for p in head_parts if rest.startswith(p))
        names[key] = head_parts[part].format(*place(m)) + rest[len(part):]
    return names


def start_from_golden_init(model, names: dict[str, str]) -> None:
    model.load_state_dict({k: init_value(names[k], t) for k, t in model.state_dict().items()})


def inputs(golden: dict):
    s = golden["setup"]
    g = torch.Generator().manual_seed(s["seed"])
    mean = torch.tensor(s["image_mean"], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(s["image_std"], dtype=torch.float64).view(1, 3, 1, 1)
    out = []
    for _ in range(s["steps"]):
        u = torch.rand(s["batch"], 3, 32, 32, generator=g, dtype=torch.float64)
        out.append(((u - mean) / std, torch.randint(0, 10, (s["batch"],), generator=g)))
    return out


def checksum(t: torch.Tensor) -> float:
    t = t.detach().double().flatten()
    return float((t * torch.cos(torch.arange(t.numel(), dtype=torch.float64))).sum())


# float64 on the CPU. Their code run with ATEN_CPU_CAPABILITY default / avx2 / avx512 and
# oneDNN limited to SSE4.1 spreads by at most 4.4e-12 relative (a decoder's bias update,
# resnet110-infopro; README there): 1e-9 leaves a margin of 200, and a real mistake in a
# rule moves these numbers by 1e-3 or more.
RTOL = 1e-9


def close(ours: float, theirs: float, scale: float, what: str) -> None:
    assert abs(ours - theirs) <= RTOL * scale + 1e-12, f"{what}: ours {ours!r}, theirs {theirs!r}"


def fused_steps(cfg, model, golden: dict, dtype: torch.dtype = torch.float64) -> list:
    """Our fused engine's steps on the golden inputs, in `dtype`: (output loss, local
    losses, each head's stats) per step."""
    engine = FusedEngine(cfg, model, torch.device("cpu"))
    autocast = precision.autocast("fp32", torch.device("cpu"))
    steps = []
    for x, y in inputs(golden):
        _, ce, losses, stats = engine.step(x.to(dtype), y, F.one_hot(y, 10).to(dtype), autocast)
        steps.append((float(ce.detach()), [float(v) for v in losses], stats))
    return steps


def assert_tensors_match(model, names: dict[str, str], init: dict, golden: dict) -> None:
    """Every parameter's update, running statistic and batch count of ours against
    theirs (norm and checksum), within RTOL."""
    for key, t in model.state_dict().items():
        ref = golden["tensors"][names[key]]
        if key.endswith("num_batches_tracked"):
            assert int(t) == ref["value"], key
        elif key.endswith(("running_mean", "running_var")):
            close(float(t.double().norm()), ref["norm"], ref["norm"], f"{key} norm")
            close(checksum(t), ref["checksum"], ref["norm"] * math.sqrt(t.numel()), f"{key} checksum")
        else:
            d = t - init[key]
            close(float(d.double().norm()), ref["delta_norm"], ref["delta_norm"], f"{key} update norm")
            close(checksum(d), ref["delta_checksum"], ref["delta_norm"] * math.sqrt(t.numel()),
                  f"{key} update checksum")
