"""Every method against AugLocal's own code (BP, DGL, InfoPro, PredSim, AugLocal):
from the same starting weights, two SGD steps of our fused engine on the golden inputs
give their per-module losses, output loss, parameter updates and BatchNorm running
statistics (tests/golden/auglocal: numbers of their code, README there)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from methods_golden import CASES, build, cfg_for, checksum, inputs, load, start_from_golden_init, their_names
from locallearn.host import precision
from locallearn.train.engines import FusedEngine

RTOL = 1e-5   # float32 on the CPU, the same operations in another order


def close(ours: float, theirs: float, scale: float, what: str) -> None:
    assert abs(ours - theirs) <= RTOL * scale + 1e-12, f"{what}: ours {ours!r}, theirs {theirs!r}"


def run_case(case: str):
    golden = load(case)
    cfg = cfg_for(case, golden)
    model = build(cfg, golden)
    names = their_names(model, cfg.model)
    assert sorted(names.values()) == sorted(golden["tensors"]), "not the same tensors as their network"
    start_from_golden_init(model, names)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    engine = FusedEngine(cfg, model, torch.device("cpu"))
    autocast = precision.autocast("fp32", torch.device("cpu"))
    steps = []
    for x, y in inputs(golden):
        _, ce, losses, stats = engine.step(x, y, F.one_hot(y, 10).float(), autocast)
        ce = ce.detach()
        steps.append((float(ce), [float(v) for v in losses], stats))
    return golden, model, names, init, steps


@pytest.mark.parametrize("case", list(CASES))
def test_method_equals_their_code(case):
    golden, model, names, init, steps = run_case(case)
    lam = golden["lambdas"]
    k = len(golden["heads_after_layers"]) + 1
    for (ce, losses, stats), ref in zip(steps, golden["steps"]):
        close(ce, ref["output_loss"], abs(ref["output_loss"]), "output loss")
        assert len(losses) == len(ref["local"])
        for i, (ours, st, theirs) in enumerate(zip(losses, stats, ref["local"])):
            r = i / (k - 2) if k > 2 else 0
            ixx = lam["ixx_1"] * (1 - r) + lam["ixx_2"] * r
            ixy = lam["ixy_1"] * (1 - r) + lam["ixy_2"] * r
            expected = ixx * theirs.get("ixx", 0.0) + ixy * theirs["ixy"]
            close(ours, expected, abs(expected), f"module {i} loss")
            if "ce" in st:
                close(float(st["ce"]), theirs["ixy"], theirs["ixy"], f"module {i} cross-entropy")
            if "recon" in st:
                close(float(st["recon"]), theirs["ixx"], theirs["ixx"], f"module {i} reconstruction")
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


def test_same_counts_and_head_places_as_their_code():
    from locallearn.recipe.archspec import local_modules
    for case in CASES:
        golden = load(case)
        cfg = cfg_for(case, golden)
        model = build(cfg, golden)
        backbone, total = model.count_params()
        assert (backbone, total - backbone) == (golden["backbone_params"], golden["head_params"]), case
        assert local_modules(cfg, cfg.model) - 1 == len(golden["heads_after_layers"]), case
        assert [b.index for b in model.blocks] == golden["heads_after_layers"], case
        if golden["aux_depths"] is not None:
            assert [b.head.depth for b in model.blocks] == golden["aux_depths"][:len(model.blocks)], case
