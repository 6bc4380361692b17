"""What a run records about where it ran: the git revision, peak memory, and (describe)
the package versions, the resolved device and its name, the CPU, the threads and the
precision. (metrics.json files written before describe held the versions keep them under
"versions"; tracking.mlflow_tags reads either.)

The run loop stores describe(...) in metrics.json under "environment"; the MLflow tags of
a run are derived from that record (tracking.mlflow_tags), so a run logged live and the same
run mirrored later from its metrics.json, on another machine, carry the same tags.

    env = describe(device, threads=torch.get_num_threads(), precision=cfg.precision)
"""
from __future__ import annotations

import getpass
import platform
import resource
import subprocess
from pathlib import Path

import torch

from .. import __version__


def git_revision() -> str | None:
    """The commit of the package's checkout (None outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def cpu_model() -> str:
    """The CPU's model name ("Intel(R) Xeon(R) ..."), else the platform's processor."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_name(device) -> str:
    """The GPU's name for a CUDA device, the CPU's model name for the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(torch.cuda.current_device() if device.index is None else device.index)
    return cpu_model()


def describe(device, threads: int, precision: str) -> dict:
    """The environment of a run on `device` (a torch.device or its string, resolved: never
    "auto"): JSON-ready, every value a string or an int."""
    import torchvision

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    try:
        user = getpass.getuser()
    except (KeyError, OSError):   # no passwd entry (some containers)
        user = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "locallearn": __version__, "cuda": torch.version.cuda or "none",
            "cudnn": str(cudnn) if cudnn else "none", "device": str(device), "device_name": device_name(device),
            "cpu_model": cpu_model(), "threads": int(threads), "precision": precision,
            "platform": platform.platform(), "user": user}
