"""The methods of InfoPro's Table 2 against InfoPro's own code (blackfeather-wang/InfoPro-Pytorch,
commit a38362a): greedy SL (their 0c1f head, cross-entropy), InfoPro (Softmax) (their
1c2f head, cross-entropy: AugLocal's InfoPro rule, our `infopro`) and InfoPro (Contrast)
(1c2f, SupCon), on ResNet-32 and on ResNet-110 at their K=16 placement (--placement
infopro). From the same starting weights, two SGD steps of our fused engine on the golden
inputs give their per-module losses, output loss, parameter updates and BatchNorm
running statistics, in float64 (tests/golden/infopro/README.md)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import REPO
from methods_golden import assert_tensors_match, build, close, fused_steps, start_from_golden_init, their_names
from locallearn.recipe.config import parse_train_args

GOLDEN = REPO / "tests" / "golden" / "infopro"
CASES = {
    "resnet32-greedysl": ["--model", "resnet32", "--method", "greedysl"],
    "resnet32-softmax": ["--model", "resnet32", "--method", "infopro",
                         "--ixx-1", "5", "--ixy-1", "0.05", "--ixx-2", "0.2", "--ixy-2", "0.5"],
    "resnet32-contrast": ["--model", "resnet32", "--method", "infoprocontrast",
                          "--ixx-1", "5", "--ixy-1", "0.05", "--ixx-2", "0.2", "--ixy-2", "0.5"],
    "resnet110-contrast": ["--model", "resnet110", "--method", "infoprocontrast", "--placement", "infopro",
                           "--local-modules", "16", "--ixx-1", "5", "--ixy-1", "0", "--ixx-2", "0.5", "--ixy-2", "1"],
    "resnet110-greedysl": ["--model", "resnet110", "--method", "greedysl", "--placement", "infopro",
                           "--local-modules", "16"],
}


def run_case(case: str):
    golden = json.loads((GOLDEN / f"{case}.json").read_text())
    s = golden["setup"]
    cfg = parse_train_args(CASES[case] + [
        "--dataset", "CIFAR10", "--optim", "sgd", "--momentum", str(s["momentum"]), "--nesterov",
        "--weight-decay", str(s["weight_decay"]), "--lr", str(s["lr"]), "--batch-size", str(s["batch"])])
    model = build(cfg, golden).to(torch.float64)
    names = their_names(model, cfg.model, golden["heads_after_layers"])
    start_from_golden_init(model, names)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    return golden, model, names, init, fused_steps(cfg, model, golden)


@pytest.mark.parametrize("case", list(CASES))
def test_method_equals_infopros_code(case):
    golden, model, names, init, steps = run_case(case)
    # their network builds a decoder at every head; greedy SL weighs it 0 and has none here
    extra = set(golden["tensors"]) - set(names.values())
    assert all(k.startswith("decoder_") for k in extra) and (not extra or "greedysl" in case), sorted(extra)[:3]
    lam, k = golden["lambdas"], len(golden["heads_after_layers"]) + 1
    for (ce, losses, stats), ref in zip(steps, golden["steps"]):
        close(ce, ref["output_loss"], abs(ref["output_loss"]), "output loss")
        assert len(losses) == len(ref["local"])
        for i, (ours, st, theirs) in enumerate(zip(losses, stats, ref["local"])):
            r = i / (k - 2) if k > 2 else 0
            ixx = lam["ixx_1"] * (1 - r) + lam["ixx_2"] * r
            ixy = lam["ixy_1"] * (1 - r) + lam["ixy_2"] * r
            expected = ixx * theirs["ixx"] + ixy * theirs["ixy"]
            close(ours, expected, abs(expected), f"module {i} loss")
            label = st.get("ce", st.get("contrast"))
            close(float(label), theirs["ixy"], abs(theirs["ixy"]), f"module {i} label loss")
    assert_tensors_match(model, names, init, golden)


def test_heads_sit_where_infopros_configs_put_them_and_count_the_same():
    for case in CASES:
        golden = json.loads((GOLDEN / f"{case}.json").read_text())
        cfg = parse_train_args(CASES[case] + ["--dataset", "CIFAR10"])
        model = build(cfg, golden)
        ends = [sum(len(b.layer) for b in model.blocks[:m + 1]) - 1 for m in range(len(model.blocks))]
        assert ends == golden["heads_after_layers"], case
        backbone, total = model.count_params()
        # their greedy SL network also holds the decoders it weighs 0
        decoders = sum(math.prod(v["shape"]) for n, v in golden["tensors"].items()
                       if n.startswith("decoder_") and "delta_norm" in v)
        heads = golden["head_params"] - (decoders if "greedysl" in case else 0)
        assert (backbone, total - backbone) == (golden["backbone_params"], heads), case
