"""Golden numbers from AugLocal's own code (ChenxiangMA/AugLocal), run on the CPU.

Usage: python make_golden.py AUGLOCAL_SRC OUT_DIR
AUGLOCAL_SRC: a checkout of github.com/ChenxiangMA/AugLocal (its networks/ and utils/,
train.py). Nothing of theirs is written to OUT_DIR: only numbers.
"""
import ast
import json
import math
import sys
import zlib
from pathlib import Path

import torch
import torch.nn as nn

SRC, OUT = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(SRC))
torch.Tensor.cuda = lambda self, *a, **k: self      # their InfoPro moves its mean/std to CUDA
nn.Module.cuda = lambda self, *a, **k: self
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
# float64 throughout: float32 results of the same code differ between CPU kinds (AVX2
# against AVX-512 kernels, oneDNN's convolutions), and two SGD steps with BatchNorm
# amplify the last bits to ~1e-4 relative; in float64 the same spread stays near 1e-12.
torch.set_default_dtype(torch.float64)

import networks.resnet as R  # noqa: E402

MEAN = [x / 255.0 for x in [125.3, 123.0, 113.9]]   # their cifar normalisation
STD = [x / 255.0 for x in [63.0, 62.1, 66.7]]
B, STEPS, LR, MOMENTUM, WD, SEED = 8, 2, 0.1, 0.9, 1e-4, 0


def init_value(key, t):
    """The deterministic starting value of every tensor, from its name (the test
    applies the same rule through its name mapping)."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    if key.endswith("running_mean"):
        return torch.zeros_like(t)
    if key.endswith("running_var"):
        return torch.ones_like(t)
    if key.endswith("num_batches_tracked"):
        return torch.zeros_like(t)
    n = torch.randn(t.shape, generator=g, dtype=torch.float64)
    if t.dim() >= 2:
        return n * math.sqrt(2.0 / (t.numel() // t.shape[0]))
    if key.endswith("weight"):
        return 1 + 0.1 * n
    return 0.1 * n


def checksum(t):
    t = t.detach().double().flatten()
    return float((t * torch.cos(torch.arange(t.numel(), dtype=torch.float64))).sum())


def batches(size):
    g = torch.Generator().manual_seed(SEED)
    out = []
    for _ in range(STEPS):
        u = torch.rand(B, 3, size, size, generator=g, dtype=torch.float64)
        x = (u - torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / \
            torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
        out.append((x, torch.randint(0, 10, (B,), generator=g)))
    return out


# case: (name, layers, rule, --local_module_num, extra args as train.py would pass them)
CASES = [
    ("resnet32-bp", 32, "BP", 1, {}),
    ("resnet32-dgl", 32, "DGL", 16, {}),
    ("resnet32-infopro", 32, "InfoPro", 16, {"ixx_1": 5, "ixy_1": 0.05, "ixx_2": 0.2, "ixy_2": 0.5}),
    ("resnet32-predsim", 32, "PredSim", 16, {"ixx_1": 0.99, "ixy_1": 0.01, "ixx_2": 0.99, "ixy_2": 0.01}),
    ("resnet32-auglocal-d1", 32, "AugLocal", 16, {"aux_net_depth": 1, "pyramid": True, "pyramid_coeff": 0.5}),
    ("resnet32-auglocal-d3", 32, "AugLocal", 16, {"aux_net_depth": 3, "pyramid": True, "pyramid_coeff": 0.5}),
    ("resnet110-infopro", 110, "InfoPro", 55, {"ixx_1": 5, "ixy_1": 0, "ixx_2": 0.5, "ixy_2": 1}),
    ("resnet110-auglocal-d3", 110, "AugLocal", 55, {"aux_net_depth": 3, "pyramid": True, "pyramid_coeff": 0.5}),
]
AUX_CONFIG = {"AugLocal": ("unifSamp", "0c1f"), "DGL": ("DGL", "0c1f"), "PredSim": ("PredSim", "0c1f"),
              "InfoPro": ("InfoPro", "2c"), "BP": ("0c1f", "0c1f")}


def run_case(name, layers, rule, k, extra):
    lam = {k_: extra.get(k_, d) for k_, d in (("ixx_1", 0.0), ("ixy_1", 1.0), ("ixx_2", 0.0), ("ixy_2", 1.0))}
    depth = extra.get("aux_net_depth", 0)
    modules = k - depth if rule == "AugLocal" else k       # train.py
    aux, aux_loss = AUX_CONFIG[rule]
    model = getattr(R, f"resnet{layers}")(
        local_module_num=modules, batch_size=B, image_size=32, dataset="cifar10", class_num=10,
        wide_list=(16, 16, 32, 64), dropout_rate=0, aux_net_config=aux, aux_net_config_aux_loss=aux_loss,
        aux_net_widen=1, aux_net_widen_aux_loss=1, aux_net_feature_dim=128, hidden_dim=512,
        hidden_dim_aux_loss=512, rule=rule, aux_net_depth=depth, is_pyramid=extra.get("pyramid", False),
        paramid_coeff=extra.get("pyramid_coeff", 0.5))
    init = {key: init_value(key, t) for key, t in model.state_dict().items()}
    model.load_state_dict(init)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WD)
    record = {}

    def hook(tag, key):
        def fn(mod, inp, out):
            record.setdefault(key, {})[tag] = float((out[0] if isinstance(out, tuple) else out).detach())
        return fn

    handles = []
    for i, (s, l, num) in enumerate(model.net_config):
        for tag, attr in (("ixy", f"aux_classifier_{s}_{l}"), ("ixx", f"decoder_{s}_{l}")):
            if hasattr(model, attr):
                handles.append(getattr(model, attr).register_forward_hook(hook(tag, num)))
    steps = []
    for x, y in batches(32):
        model.train()
        record.clear()
        opt.zero_grad()
        logits, loss, *_ = model(img=x, target=y, **lam)
        opt.step()
        steps.append({"output_loss": float(loss.detach()),
                      "local": [{"layer": num, **record[num]} for num in sorted(record)]})
    final = model.state_dict()
    tensors = {}
    for key, t in final.items():
        if key.endswith("num_batches_tracked"):
            tensors[key] = {"value": int(t)}
        elif key.endswith(("running_mean", "running_var")):
            tensors[key] = {"shape": list(t.shape), "norm": float(t.double().norm()), "checksum": checksum(t)}
        else:
            d = t - init[key]
            tensors[key] = {"shape": list(t.shape), "delta_norm": float(d.double().norm()),
                            "delta_checksum": checksum(d)}
    return {"case": name, "layers": layers, "rule": rule, "local_module_num": k, "train_py_args": extra,
            "lambdas": lam, "heads_after_layers": [c[2] for c in model.net_config],
            "aux_depths": getattr(model, "aux_depth_list", None), "steps": steps, "tensors": tensors,
            "backbone_params": sum(p.numel() for n, p in model.named_parameters()
                                   if not n.startswith(("aux_classifier", "decoder"))),
            "head_params": sum(p.numel() for n, p in model.named_parameters()
                               if n.startswith(("aux_classifier", "decoder")))}


def lr_schedule():
    """Their adjust_learning_rate (train.py), lifted out by its syntax tree and run
    with --cos_lr, --lr 0.8, --epochs 400 on a stand-in optimizer."""
    tree = ast.parse((SRC / "train.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "adjust_learning_rate")
    ns = {"math": math, "print": lambda *a: None,
          "args": type("A", (), {"cos_lr": True, "model": "resnet"}),
          "training_configurations": {"resnet": {"epochs": 400, "initial_learning_rate": 0.8}}}
    exec(compile(ast.Module([fn], []), "train.py", "exec"), ns)
    opt = type("O", (), {"param_groups": [{"lr": 0.8}]})
    out = {}
    for e in list(range(1, 13)) + [100, 200, 399, 400]:
        ns["adjust_learning_rate"](opt, e)
        out[e] = opt.param_groups[0]["lr"]
    return {"lr": 0.8, "epochs": 400, "lr_at_epoch": out}


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
meta = {"dtype": "float64", "batch": B, "steps": STEPS, "lr": LR, "momentum": MOMENTUM, "nesterov": True, "weight_decay": WD,
        "seed": SEED, "image_mean": MEAN, "image_std": STD, "torch": torch.__version__}
for case in CASES:
    if len(sys.argv) > 3 and case[0] not in sys.argv[3:]:
        continue
    res = run_case(*case)
    res["setup"] = meta
    (OUT / f"{case[0]}.json").write_text(json.dumps(rounded(res), sort_keys=True, separators=(",", ":")) + "\n")
    print(case[0], res["backbone_params"], res["head_params"], res["steps"][0]["output_loss"], flush=True)
(OUT / "lr_schedule.json").write_text(json.dumps(lr_schedule(), indent=1) + "\n")
