"""How the convolutions run on a GPU, behind flags (issue 18, item 2): settings that
change which kernels compute a step, not the recipe, so they are not part of the config
hash (config.NON_RECIPE) and a run may be resumed with or without them.

  --channels-last    conv weights, and with them every conv block's activations, in
                     NHWC order (cuDNN's tensor-core layout); linear layers untouched
  --cudnn-benchmark  cuDNN times its algorithms per input shape once and keeps the
                     fastest (torch.backends.cudnn.benchmark)

Both are off by default: their speed on the GPU is not yet measured (docs/speed.md),
and the rounding of another layout or algorithm is another float32 rounding, equal
only to within tolerance (tests/test_kernels.py checks that on the CPU).
"""
from __future__ import annotations

import torch
import torch.nn as nn


def configure(cfg, model: nn.Module) -> nn.Module:
    """Apply the flags to torch and to `model` (already on its device); returns it."""
    torch.backends.cudnn.benchmark = bool(getattr(cfg, "cudnn_benchmark", False))
    if getattr(cfg, "channels_last", False) and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)
    return model
