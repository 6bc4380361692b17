"""How a pipelined run is cut into stages (train/pipeline.py): the pipeline's config
check, the balance of the layers' cost over the stages (recipe/cost.py's FLOP count, or
the layers' measured times), and the line that describes the split.
"""
from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F

from ..recipe.config import stage_count_error
from ..recipe.cost import network_cost
from ..errors import ConfigError
from ..layers.localnet import Block, LocalNet


# ======================================================================== configuration
def check_config(cfg) -> None:
    s = cfg.pipeline_stages
    problem = stage_count_error(cfg, s)  # stage count, backprop, no-detach: recipe/config.py
    if problem:
        raise ConfigError(problem)
    if s == 1:
        return
    if cfg.engine != "fused":
        raise ConfigError(f"--engine {cfg.engine}: the pipeline reproduces the fused engine; use --engine fused")
    if cfg.stage_devices and len(cfg.stage_devices) != s:
        raise ConfigError(f"--stage-devices: {len(cfg.stage_devices)} devices given for {s} stages")
    if cfg.stage_devices and len({torch.device(d).type for d in cfg.stage_devices}) > 1:
        raise ConfigError(f"--stage-devices {' '.join(cfg.stage_devices)}: all stages must be on CPUs (gloo) "
                          "or all on GPUs (NCCL)")


# ============================================================================ balancing
def layer_costs(cfg) -> tuple[list[float], list[tuple], float]:
    """(multiply-adds of forward + local loss + backward per layer and example, each
    layer's output shape per example, the output layer's multiply-adds): recipe/cost.py."""
    cost = network_cost(cfg)
    return [l.train for l in cost.layers], [l.shape for l in cost.layers], cost.output.train


def balance(costs: list[float], stages: int) -> list[tuple[int, int]]:
    """Contiguous split of costs into `stages` non-empty slices minimising the largest
    slice sum (dynamic programming); returns [(start, stop), ...]."""
    n = len(costs)
    if stages > n:
        raise ConfigError(f"--pipeline-stages {stages}: the network has only {n} layers to split")
    pre = [0.0]
    for c in costs:
        pre.append(pre[-1] + c)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for s in range(1, stages + 1):
        for j in range(s, n + 1):
            for i in range(s - 1, j):
                v = max(best[s - 1][i], pre[j] - pre[i])
                if v < best[s][j]:
                    best[s][j], cut[s][j] = v, i
    bounds, j = [], n
    for s in range(stages, 0, -1):
        i = cut[s][j]
        bounds.append((i, j))
        j = i
    return bounds[::-1]


def split_layers(model: LocalNet, costs: list[float], stages: int) -> list[tuple[int, int]]:
    """Balanced contiguous split of model.layers: a parameter-free step (max-pool,
    flatten) stays with the block before it (a leading one with the first block), so
    every stage owns at least one block."""
    starts = [i for i, m in enumerate(model.layers) if isinstance(m, Block)]  # check_config bounds stages
    starts[0] = 0
    ends = starts[1:] + [len(model.layers)]
    unit_costs = [sum(costs[a:b]) for a, b in zip(starts, ends)]
    return [(starts[a], ends[b - 1]) for a, b in balance(unit_costs, stages)]


def layer_times(model: LocalNet, spec, cfg, device, reps: int = 3) -> list[float]:
    """Seconds per layer (forward + local loss + backward, at the training batch size)
    on `device`, the output layer's added to the last; a copy of the model is timed."""
    m = copy.deepcopy(model).to(device).train()
    for b in m.blocks:
        b.seed_dropout(0)
    g = torch.Generator().manual_seed(0)
    bs = cfg.batch_size
    x0 = torch.randn(bs, spec.channels, spec.size, spec.size, generator=g).to(device)
    y = (torch.arange(bs) % spec.num_classes).to(device)
    yo = F.one_hot(y, spec.num_classes).float()
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    times = [0.0] * (len(m.layers) + 1)
    for rep in range(reps + 1):  # the first pass warms up (allocator, kernels)
        x = x0
        for i, layer in enumerate(list(m.layers) + [m.output]):
            sync()
            t0 = time.perf_counter()
            if isinstance(layer, Block):
                h, out = layer(x)
                (layer.head(h, x, y, yo)[0] if layer.head is not None else out.sum()).backward()
            elif layer is m.output:
                out = layer(x)
                F.cross_entropy(out, y).backward()
            else:
                out = layer(x)
            sync()
            if rep:
                times[i] += (time.perf_counter() - t0) / reps
            x = out.detach()
    times[-2] += times.pop()
    return times


def describe_split(model: LocalNet, bounds, costs, how: str) -> str:
    total = sum(costs) or 1.0
    lines = [f"pipeline: {len(bounds)} stages (split by {how})"]
    for k, (a, b) in enumerate(bounds):
        blocks = [m.index for m in model.layers[a:b] if isinstance(m, Block)]
        names = f"blocks {blocks[0]}-{blocks[-1]}" if blocks else "no blocks"
        out = " + output layer" if k == len(bounds) - 1 else ""
        lines.append(f"  stage {k}: layers {a}-{b - 1} ({names}{out}): {100 * sum(costs[a:b]) / total:.1f}%")
    return "\n".join(lines)
