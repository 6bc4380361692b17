"""`--precision fp32 | tf32 | bf16`: the arithmetic a run uses, as an explicit choice.

  fp32  float32 everywhere, TF32 off for CUDA matrix products and cuDNN convolutions
        (PyTorch's own default lets cuDNN run convolutions in TF32; the paper ran
        float32). The default, on every device, until GPU evidence says otherwise.
  tf32  float32 tensors, but CUDA matrix products and cuDNN convolutions in TF32
        (10-bit mantissa inputs, float32 accumulation) on GPUs that have it (Ampere
        and later). No effect on the CPU.
  bf16  bfloat16 autocast for the forward pass and the local losses (CPU and CUDA);
        what autocast leaves in float32 runs with TF32 off, as fp32.

`apply` sets the process-wide switches and returns what it set, which a run writes
into metrics.json ("precision") so every result says how it was computed.

How the convolutions run on a GPU, behind flags (issue 18, item 2): settings that
change which kernels compute a step, not the recipe, so they are not part of the config
hash (config.NON_RECIPE) and a run may be resumed with or without them (`configure`).

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

from ..recipe.config import CHOICES

PRECISIONS = CHOICES["precision"]   # --precision's choices, the one list of them


def apply(precision: str) -> dict:
    """Set torch's TF32 switches for `precision`; return the record of what is in effect."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})")
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return record(precision)


def record(precision: str) -> dict:
    """What a run of `precision` computes in, read back from torch's switches."""
    return {"name": precision,
            "autocast": "bfloat16" if precision == "bf16" else None,
            "cuda_matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_conv_tf32": bool(torch.backends.cudnn.allow_tf32)}


def autocast(precision: str, device: torch.device):
    """A factory of the autocast context the engines and evaluation enter."""
    enabled = precision == "bf16"
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def loss_input(logits: torch.Tensor) -> torch.Tensor:
    """Logits as the output loss reads them: bfloat16/float16 ones upcast to float32,
    float32 and float64 kept (the golden tests run the engines in float64)."""
    return logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits


def activation_dtype(precision: str) -> torch.dtype:
    """The dtype of the activations a block passes on (pipeline messages)."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def graphable(precision: str) -> bool:
    """Whether the fused step is captured as a CUDA graph in this precision: the
    float32 paths are (tested bitwise equal to eager on an H200); the bf16 path is not
    yet measured there, so it runs eagerly."""
    return precision in ("fp32", "tf32")


def configure(cfg, model: nn.Module) -> nn.Module:
    """Apply the flags to torch and to `model` (already on its device); returns it."""
    torch.backends.cudnn.benchmark = bool(cfg.cudnn_benchmark)
    if cfg.channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)
    return model
