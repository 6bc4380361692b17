"""Every method against AugLocal's own code (BP, DGL, InfoPro, PredSim, AugLocal):
from the same starting weights, two SGD steps of our fused engine on the golden inputs
give their per-module losses, output loss, parameter updates and BatchNorm running
statistics (tests/golden/auglocal: numbers of their code, README there). Both sides
run in float64, so the comparison holds on any CPU: float32 results of either code differ
between CPU kinds by up to ~1e-4 relative after two steps, float64 ones by ~1e-12."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from methods_golden import (CASES, assert_tensors_match, build, cfg_for, close, fused_steps, load,
                            start_from_golden_init, their_names)


def run_case(case: str, dtype: torch.dtype = torch.float64):
    """Two steps of our fused engine on the case, in `dtype` (float64 for the golden
    comparison; float32 for the float32 path's own test)."""
    golden = load(case)
    cfg = cfg_for(case, golden)
    model = build(cfg, golden).to(dtype)
    names = their_names(model, cfg.model)
    assert sorted(names.values()) == sorted(golden["tensors"]), "not the same tensors as their network"
    start_from_golden_init(model, names)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    return golden, model, names, init, fused_steps(cfg, model, golden, dtype)


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
    assert_tensors_match(model, names, init, golden)


def test_same_counts_and_head_places_as_their_code():
    from locallearn.methods import registry
    from locallearn.recipe.archspec import local_modules
    for case in CASES:
        golden = load(case)
        cfg = cfg_for(case, golden)
        model = build(cfg, golden)
        backbone, total = model.count_params()
        assert (backbone, total - backbone) == (golden["backbone_params"], golden["head_params"]), case
        assert local_modules(cfg, cfg.model, registry.get(cfg.method).module_count) - 1 == \
            len(golden["heads_after_layers"]), case
        assert [b.index for b in model.blocks] == golden["heads_after_layers"], case
        if golden["aux_depths"] is not None:
            assert [b.head.depth for b in model.blocks] == golden["aux_depths"][:len(model.blocks)], case


def test_float32_path_tracks_float64():
    """The engines' float32 code, which every real run uses, against the same engine in
    float64 on one golden case. Measured here: losses within 5e-7 relative, the whole
    update within 1.1e-4 (two steps with BatchNorm amplify float32's 6e-8); the
    tolerances leave a margin of about 100, and bfloat16 arithmetic (eps 4e-3) would fail."""
    case = "resnet32-infopro"
    _, model32, _, init32, steps32 = run_case(case, torch.float32)
    _, model64, _, init64, steps64 = run_case(case, torch.float64)
    for (ce32, losses32, _), (ce64, losses64, _) in zip(steps32, steps64):
        for ours, ref in zip([ce32, *losses32], [ce64, *losses64]):
            assert abs(ours - ref) <= 1e-4 * abs(ref), (ours, ref)
    keys = [k for k in init64 if not k.endswith(("num_batches_tracked", "running_mean", "running_var"))]
    d32 = torch.cat([(model32.state_dict()[k].double() - init32[k].double()).flatten() for k in keys])
    d64 = torch.cat([(model64.state_dict()[k] - init64[k]).flatten() for k in keys])
    assert float((d32 - d64).norm() / d64.norm()) <= 1e-2


@pytest.mark.slow
def test_golden_cases_hold_on_other_cpu_kernels():
    """The comparison does not depend on the CPU's kernels: two cases again with ATen's
    kernels forced to their portable build (ATEN_CPU_CAPABILITY=default), oneDNN held to
    SSE4.1 and MKL to SSE4.2, as on an older or other vendor's CPU (README there)."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
           "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}
    code = ("import sys, torch; sys.path.insert(0, 'tests'); import test_methods_golden as t; "
            "assert torch.backends.cpu.get_cpu_capability() == 'DEFAULT'; "
            "[t.test_method_equals_their_code(c) for c in ('resnet32-bp', 'resnet32-infopro')]")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
