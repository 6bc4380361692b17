"""What a run records about where it ran: package versions, git revision, peak memory,
and (describe) the resolved device and its name, the CPU, the threads and the precision.

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


def cpu_model() -> str:
    """The CPU's model name ("Intel(R) Xeon(R) ..."), else the platform's processor."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def describe(device, threads: int, precision: str) -> dict:
    """The environment of a run on `device` (a torch.device or its string, resolved: never
    "auto"): JSON-ready, every value a string or an int."""
    import torchvision

    device = str(device)
    if device.startswith("cuda"):
        index = torch.device(device).index
        device_name = torch.cuda.get_device_name(torch.cuda.current_device() if index is None else index)
    else:
        device_name = cpu_model()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    try:
        user = getpass.getuser()
    except (KeyError, OSError):   # no passwd entry (some containers)
        user = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "cuda": torch.version.cuda or "none",
            "cudnn": str(cudnn) if cudnn else "none", "device": device, "device_name": device_name,
            "cpu_model": cpu_model(), "threads": int(threads), "precision": precision,
            "platform": platform.platform(), "user": user}
