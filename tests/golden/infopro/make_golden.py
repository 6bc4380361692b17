"""Golden numbers from InfoPro's own code (blackfeather-wang/InfoPro-Pytorch), run on the CPU.

Usage: python make_golden.py INFOPRO_SRC OUT_DIR [CASE ...]
INFOPRO_SRC: the folder "Experiments on CIFAR-SVHN-STL10" of a checkout of their
repository (its networks/). Nothing of theirs is written to OUT_DIR: only numbers.
The procedure is tests/golden/auglocal/make_golden.py's (README here).
"""
import json
import math
import sys
import zlib
from pathlib import Path

import torch
import torch.nn as nn

SRC, OUT = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(SRC))
torch.Tensor.cuda = lambda self, *a, **k: self      # their network moves its mean/std to CUDA
nn.Module.cuda = lambda self, *a, **k: self
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
torch.set_default_dtype(torch.float64)   # float64 throughout, as tests/golden/auglocal

import networks.resnet as R  # noqa: E402

MEAN = [x / 255.0 for x in [125.3, 123.0, 113.9]]   # their cifar normalisation
STD = [x / 255.0 for x in [63.0, 62.1, 66.7]]
B, STEPS, LR, MOMENTUM, WD, SEED = 8, 2, 0.1, 0.9, 1e-4, 0


def init_value(key, t):
    """The deterministic starting value of every tensor, from its name (as auglocal's)."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    if key.endswith(("running_mean", "num_batches_tracked")):
        return torch.zeros_like(t)
    if key.endswith("running_var"):
        return torch.ones_like(t)
    n = torch.randn(t.shape, generator=g, dtype=torch.float64)
    if t.dim() >= 2:
        return n * math.sqrt(2.0 / (t.numel() // t.shape[0]))
    return 1 + 0.1 * n if key.endswith("weight") else 0.1 * n


def checksum(t):
    t = t.detach().double().flatten()
    return float((t * torch.cos(torch.arange(t.numel(), dtype=torch.float64))).sum())


def batches():
    g = torch.Generator().manual_seed(SEED)
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    out = []
    for _ in range(STEPS):
        u = torch.rand(B, 3, 32, 32, generator=g, dtype=torch.float64)
        out.append(((u - mean) / std, torch.randint(0, 10, (B,), generator=g)))
    return out


# case: (name, layers, --local_module_num, --aux_net_config, --local_loss_mode, ixx_1, ixy_1, ixx_2, ixy_2)
# Contrast weights: their comand.sh for K=16; greedy SL: ixx 0, ixy 1 (no command of theirs).
CASES = [
    ("resnet32-greedysl", 32, 16, "0c1f", "cross_entropy", 0, 1, 0, 1),
    ("resnet32-softmax", 32, 16, "1c2f", "cross_entropy", 5, 0.05, 0.2, 0.5),
    ("resnet32-contrast", 32, 16, "1c2f", "contrast", 5, 0.05, 0.2, 0.5),
    ("resnet110-contrast", 110, 16, "1c2f", "contrast", 5, 0, 0.5, 1),
    ("resnet110-greedysl", 110, 16, "0c1f", "cross_entropy", 0, 1, 0, 1),
]


def run_case(name, layers, k, aux, mode, ixx_1, ixy_1, ixx_2, ixy_2):
    lam = {"ixx_1": ixx_1, "ixy_1": ixy_1, "ixx_2": ixx_2, "ixy_2": ixy_2}
    model = getattr(R, f"resnet{layers}")(
        local_module_num=k, batch_size=B, image_size=32, balanced_memory=False, dataset="cifar10", class_num=10,
        wide_list=(16, 16, 32, 64), dropout_rate=0, aux_net_config=aux, local_loss_mode=mode,
        aux_net_widen=1, aux_net_feature_dim=128)
    init = {key: init_value(key, t) for key, t in model.state_dict().items()}
    model.load_state_dict(init)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WD)
    n = layers // 6                         # BasicBlocks per stage
    places = [0 if s == 0 else 1 + n * (s - 1) + j for s, j in model.infopro_config]
    record = {}

    def hook(tag, layer):
        def fn(mod, inp, out):
            record.setdefault(layer, {})[tag] = float(out.detach())
        return fn

    for (s, j), layer in zip(model.infopro_config, places):
        getattr(model, f"aux_classifier_{s}_{j}").register_forward_hook(hook("ixy", layer))
        getattr(model, f"decoder_{s}_{j}").register_forward_hook(hook("ixx", layer))
    steps = []
    for x, y in batches():
        model.train()
        record.clear()
        opt.zero_grad()
        logits, loss = model(img=x, target=y, **lam)
        opt.step()
        steps.append({"output_loss": float(loss.detach()),
                      "local": [{"layer": layer, **record[layer]} for layer in sorted(record)]})
    tensors = {}
    for key, t in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            tensors[key] = {"value": int(t)}
        elif key.endswith(("running_mean", "running_var")):
            tensors[key] = {"shape": list(t.shape), "norm": float(t.double().norm()), "checksum": checksum(t)}
        else:
            d = t - init[key]
            tensors[key] = {"shape": list(t.shape), "delta_norm": float(d.double().norm()),
                            "delta_checksum": checksum(d)}
    heads = ("aux_classifier", "decoder")
    return {"case": name, "layers": layers, "local_module_num": k, "aux_net_config": aux, "local_loss_mode": mode,
            "lambdas": lam, "heads_after_layers": places, "steps": steps, "tensors": tensors,
            "backbone_params": sum(p.numel() for m, p in model.named_parameters() if not m.startswith(heads)),
            "head_params": sum(p.numel() for m, p in model.named_parameters() if m.startswith(heads))}


def rounded(obj):
    """15 significant digits: float64 carries about 16, and the tests allow 1e-9."""
    if isinstance(obj, float):
        return float(f"{obj:.15g}")
    if isinstance(obj, dict):
        return {k: rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rounded(v) for v in obj]
    return obj


OUT.mkdir(parents=True, exist_ok=True)
meta = {"dtype": "float64", "batch": B, "steps": STEPS, "lr": LR, "momentum": MOMENTUM, "nesterov": True,
        "weight_decay": WD, "seed": SEED, "image_mean": MEAN, "image_std": STD, "torch": torch.__version__}
for case in CASES:
    if len(sys.argv) > 3 and case[0] not in sys.argv[3:]:
        continue
    res = run_case(*case)
    res["setup"] = meta
    (OUT / f"{case[0]}.json").write_text(json.dumps(rounded(res), sort_keys=True, separators=(",", ":")) + "\n")
    print(case[0], res["backbone_params"], res["head_params"], res["steps"][0]["output_loss"], flush=True)
