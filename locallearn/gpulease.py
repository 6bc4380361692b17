"""GPU leases: several training jobs on one multi-GPU machine, one GPU each.

`snakemake --cores all --resources gpu=N` lets at most N training jobs run at once,
but Snakemake does not say *which* GPU a job should use. Each job therefore takes a
lease at start-up: a non-blocking `flock` on one of N lock files (one per GPU, or
k per GPU when small jobs share a card), held by the process for its whole life.
The kernel drops a flock when the process exits for any reason (even SIGKILL or an
out-of-memory kill), so a dead job never keeps a GPU. The chosen GPU is written
into CUDA_VISIBLE_DEVICES before CUDA initialises, so the job sees it as cuda:0.

    lease = lease_gpu()            # None on a machine without GPUs
    ...                            # torch.cuda now sees exactly one GPU
    lease.release()                # optional; process exit releases it too

Under SLURM (or any scheduler that sets CUDA_VISIBLE_DEVICES) no lease is taken:
the scheduler already picked the GPU, and its device numbering is per job.

Configuration (arguments win over environment variables):
  lock_dir       LOCALLEARN_GPU_LOCK_DIR   default <tmp>/locallearn-gpu-locks; must be the
                                           same folder for every job on the machine
  count          LOCALLEARN_GPU_COUNT      default: detected (NVML, nvidia-smi); tests fake it
  slots_per_gpu  LOCALLEARN_GPU_SLOTS      k jobs per GPU (small MNIST-family jobs), default 1
  wait_seconds   LOCALLEARN_GPU_WAIT       how long to wait for a free GPU, default 60
Importing this module does not import torch.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LocallearnError

DEFAULT_WAIT_SECONDS = 60.0
POLL_SECONDS = 0.25


class GpuLeaseError(LocallearnError):
    """No GPU could be leased (all taken, or the lock folder is unusable)."""


@dataclass
class Lease:
    """A held GPU. `index` is the GPU's number on the machine (nvidia-smi's order),
    `slot` which of its `slots_per_gpu` places this job holds. The open file
    descriptor *is* the lease: it stays open until release() or process exit."""

    index: int
    slot: int
    path: Path
    fd: int | None = field(default=None, repr=False)

    @property
    def held(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        """Give the GPU back now (idempotent). Exiting the process does the same."""
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def default_lock_dir() -> Path:
    env = os.environ.get("LOCALLEARN_GPU_LOCK_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / "locallearn-gpu-locks"


def _env_int(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise GpuLeaseError(f"{name}={text!r} is not an integer") from None


def detect_gpu_count() -> int:
    """Number of GPUs on this machine, without initialising CUDA in this process
    (after CUDA has initialised, CUDA_VISIBLE_DEVICES no longer has any effect).

    Order: LOCALLEARN_GPU_COUNT; NVML through torch (no CUDA context); `nvidia-smi -L`;
    0 when there is no NVIDIA driver at all; last, torch.cuda.device_count() in a
    child process (the child's CUDA initialisation does not touch ours)."""
    forced = _env_int("LOCALLEARN_GPU_COUNT")
    if forced is not None:
        return max(forced, 0)
    try:
        import torch  # the trainer imports it anyway
    except ImportError:
        return 0
    if not torch.backends.cuda.is_built():
        return 0
    try:  # private helper, present since torch 2.0; it is what device_count() tries first
        n = torch.cuda._device_count_nvml()
        if n >= 0:
            return n
    except Exception:
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
            if out.returncode == 0:
                return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.TimeoutExpired):
            pass
    if not (Path("/proc/driver/nvidia").exists() or Path("/dev/nvidia0").exists()):
        return 0
    try:
        out = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
            capture_output=True, text=True, timeout=120)
        return int(out.stdout.strip() or 0)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return 0


def _cuda_already_initialised() -> bool:
    torch = sys.modules.get("torch")
    try:
        return bool(torch is not None and torch.cuda.is_initialized())
    except Exception:
        return False


def _open_lock(path: Path) -> int:
    # 0o666 and a sticky, world-writable folder: jobs of different users on one
    # machine share the same GPUs, so they must share the same lock files.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        os.fchmod(fd, 0o666)
    except OSError:
        pass  # someone else's file: it is already usable, we just cannot chmod it
    return fd


def _try_lock(path: Path) -> int | None:
    """The fd of `path` locked exclusively, or None if another process holds it."""
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def _lock_path(lock_dir: Path, index: int, slot: int) -> Path:
    return lock_dir / f"gpu{index}.slot{slot}.lock"


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def _prepare_dir(lock_dir: Path) -> None:
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GpuLeaseError(f"cannot create the GPU lock folder {lock_dir}: {e.strerror}") from None
    try:
        os.chmod(lock_dir, 0o1777)
    except OSError:
        pass
    if not os.access(lock_dir, os.W_OK | os.X_OK):
        raise GpuLeaseError(f"GPU lock folder {lock_dir} is not writable "
                            "(set LOCALLEARN_GPU_LOCK_DIR to a shared writable folder)")


def _sign(fd: int, label: str | None) -> None:
    """Say who holds a lock, for `python -m locallearn.gpulease` and error messages."""
    note = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
    if label:
        note += f" ({label})"
    os.ftruncate(fd, 0)
    os.pwrite(fd, (note + "\n").encode(), 0)


def _set_visible(indices: list[int]) -> None:
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, indices))


def lease_gpu(lock_dir: Path | str | None = None, count: int | None = None,
              slots_per_gpu: int | None = None, wait_seconds: float | None = None,
              set_env: bool = True, label: str | None = None) -> Lease | None:
    """Take a free GPU for the life of this process; None where there is no GPU.

    Tries every GPU's first slot before any second slot, so jobs spread over the
    cards before they share one. Waits up to `wait_seconds` for a lease to free up
    (a job that just ended, or other users' jobs), then raises GpuLeaseError naming
    the holders. With set_env, CUDA_VISIBLE_DEVICES is set to the leased GPU (and
    CUDA_DEVICE_ORDER to PCI_BUS_ID, so the numbers are nvidia-smi's); this must
    happen before CUDA initialises, which is checked.
    """
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    if count is None:
        count = detect_gpu_count()
    if slots_per_gpu is None:
        slots_per_gpu = _env_int("LOCALLEARN_GPU_SLOTS") or 1
    if wait_seconds is None:
        env_wait = os.environ.get("LOCALLEARN_GPU_WAIT", "").strip()
        wait_seconds = float(env_wait) if env_wait else DEFAULT_WAIT_SECONDS
    if count <= 0:
        return None
    if slots_per_gpu < 1:
        raise GpuLeaseError(f"slots_per_gpu must be >= 1, got {slots_per_gpu}")
    if set_env and _cuda_already_initialised():
        raise GpuLeaseError("CUDA was initialised before the GPU lease was taken; "
                            "lease_gpu() must run before any torch.cuda call")
    _prepare_dir(lock_dir)

    order = [(i, s) for s in range(slots_per_gpu) for i in range(count)]
    deadline = time.monotonic() + max(wait_seconds, 0.0)
    while True:
        for index, slot in order:
            path = _lock_path(lock_dir, index, slot)
            fd = _try_lock(path)
            if fd is None:
                continue
            _sign(fd, label)
            if set_env:
                _set_visible([index])
            return Lease(index=index, slot=slot, path=path, fd=fd)
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)

    holders = "; ".join(f"gpu{i}.slot{s}: {_holder(_lock_path(lock_dir, i, s))}" for i, s in order)
    raise GpuLeaseError(
        f"all {count} GPU(s) x {slots_per_gpu} slot(s) are leased after waiting {wait_seconds:g} s "
        f"(lock folder {lock_dir}; holders: {holders}); run fewer jobs at once "
        "(snakemake --resources gpu=N) or raise LOCALLEARN_GPU_SLOTS")


def lease_gpus(n: int, lock_dir: Path | str | None = None, count: int | None = None,
               wait_seconds: float | None = None, set_env: bool = True,
               label: str | None = None) -> list[Lease] | None:
    """n distinct whole GPUs for one job (a pipeline of n stages), all or none.

    Takes the first slot of n cards; a partial set is given back at once, so two
    jobs that each hold some cards never wait on each other. CUDA_VISIBLE_DEVICES
    lists the n cards (the job's processes see them as cuda:0 .. cuda:n-1).
    None where there is no GPU; GpuLeaseError if n cards are not free in time.
    """
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    count = detect_gpu_count() if count is None else count
    if wait_seconds is None:
        env_wait = os.environ.get("LOCALLEARN_GPU_WAIT", "").strip()
        wait_seconds = float(env_wait) if env_wait else DEFAULT_WAIT_SECONDS
    if count <= 0:
        return None
    if n > count:
        raise GpuLeaseError(f"{n} GPUs wanted for one job, this machine has {count}")
    if set_env and _cuda_already_initialised():
        raise GpuLeaseError("CUDA was initialised before the GPU lease was taken; "
                            "lease_gpus() must run before any torch.cuda call")
    _prepare_dir(lock_dir)
    deadline = time.monotonic() + max(wait_seconds, 0.0)
    while True:
        held = []
        for index in range(count):
            path = _lock_path(lock_dir, index, 0)
            fd = _try_lock(path)
            if fd is not None:
                held.append(Lease(index=index, slot=0, path=path, fd=fd))
                if len(held) == n:
                    break
        if len(held) == n:
            for lease in held:
                _sign(lease.fd, label)
            if set_env:
                _set_visible([lease.index for lease in held])
            return held
        for lease in held:
            lease.release()
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    holders = "; ".join(f"gpu{i}: {_holder(_lock_path(lock_dir, i, 0))}" for i in range(count))
    raise GpuLeaseError(f"{n} of {count} GPUs were not free together after waiting {wait_seconds:g} s "
                        f"(lock folder {lock_dir}; holders: {holders}); run fewer jobs at once")


def lease_status(lock_dir: Path | str | None = None, count: int | None = None,
                 slots_per_gpu: int | None = None) -> list[tuple[int, int, str | None]]:
    """(gpu, slot, holder or None if free) for every lock; probes without keeping."""
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    count = detect_gpu_count() if count is None else count
    slots_per_gpu = slots_per_gpu or _env_int("LOCALLEARN_GPU_SLOTS") or 1
    rows = []
    for index in range(count):
        for slot in range(slots_per_gpu):
            path = _lock_path(lock_dir, index, slot)
            if not path.exists():
                rows.append((index, slot, None))
                continue
            fd = _try_lock(path)
            if fd is None:
                rows.append((index, slot, _holder(path)))
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                rows.append((index, slot, None))
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m locallearn.gpulease`: which GPU slots are leased, and by whom."""
    lock_dir = default_lock_dir()
    rows = lease_status(lock_dir)
    print(f"lock folder: {lock_dir}")
    if not rows:
        print("no GPUs detected (set LOCALLEARN_GPU_COUNT to override)")
    for index, slot, holder in rows:
        print(f"gpu {index} slot {slot}: {holder or 'free'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
