"""What a run records about where it ran: package versions, git revision, peak memory."""
from __future__ import annotations

import platform
import resource
import subprocess
from pathlib import Path

import torch

from . import __version__


def environment_info() -> dict:
    import torchvision
    rev = None
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "torchvision": torchvision.__version__, "locallearn": __version__},
            "git_revision": rev}


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
