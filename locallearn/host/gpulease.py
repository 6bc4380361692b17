"""GPU leases: several training jobs on one multi-GPU machine, one GPU each.

`snakemake --cores all --resources gpu=N` lets at most N training jobs run at once,
but Snakemake does not say *which* GPU a job should use. Each job therefore takes a
lease at start-up: a non-blocking `flock` on one of N lock files (one per GPU, or
k per GPU when small jobs share a card), held by the process for its whole life.
The kernel drops a flock when the process exits for any reason (even SIGKILL or an
out-of-memory kill), so a dead job never keeps a GPU. The chosen GPU is written
into CUDA_VISIBLE_DEVICES before CUDA initialises, so the job sees it as cuda:0.

    leases = lease(1)              # None on a machine without GPUs
    ...                            # torch.cuda now sees exactly the leased GPU
    leases[0].release()            # optional; process exit releases it too

Under SLURM (or any scheduler that sets CUDA_VISIBLE_DEVICES) no lease is taken:
the scheduler already picked the GPU, and its device numbering is per job.

Configuration (arguments win over environment variables):
  lock_dir       LOCALLEARN_GPU_LOCK_DIR   default <tmp>/locallearn-gpu-locks-<uid>; must be
                                           the same folder for every job on the machine
  count          LOCALLEARN_GPU_COUNT      default: detected (NVML, nvidia-smi); tests fake it
  slots_per_gpu  LOCALLEARN_GPU_SLOTS      k jobs per GPU (small MNIST-family jobs), default 1
  wait_seconds   LOCALLEARN_GPU_WAIT       how long to wait for a free GPU, default 60
Importing this module does not import torch.

Who may touch the locks. A lock file that another user can replace is a lease they can
steal, and a symbolic link planted where a lock file will be created would make us
truncate and write whatever it points at. So: lock files are opened without following
links and must be plain files with one link; the default folder is this user's own
(created 0700, refused when it is anyone else's or open to others). A folder shared by
several users (their jobs then share the GPUs) is used only when named, and only if it
belongs to this user or root and, when others may write in it, has the sticky bit (as
/tmp does), so nobody can delete or swap another user's lock file.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LocallearnError

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
    return Path(env) if env else own_lock_dir()


def _chosen_dir(lock_dir: Path | str | None) -> tuple[Path, bool]:
    """The lock folder, and whether the user named it (argument, then environment)."""
    if lock_dir is not None:
        return Path(lock_dir), True
    env = os.environ.get("LOCALLEARN_GPU_LOCK_DIR")
    return (Path(env), True) if env else (own_lock_dir(), False)


def own_lock_dir() -> Path:
    """This user's lock folder. Not under $XDG_RUNTIME_DIR: that is set only in login
    sessions and removed at logout, so jobs started from cron, a detached screen or sudo
    would use another folder and share GPUs without knowing."""
    return Path(tempfile.gettempdir()) / f"locallearn-gpu-locks-{os.geteuid()}"


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


def _open_lock(path: Path, shared: bool) -> int:
    """An fd on the lock file `path`, created if missing; never through a link."""
    nofollow = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK  # NONBLOCK: a planted FIFO must not hang us
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | nofollow, 0o644 if shared else 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise GpuLeaseError(f"GPU lock file {path} is a symbolic link; refusing to follow it "
                                "(someone may be trying to redirect the lease: remove the link)") from None
        if not (shared and e.errno == errno.EACCES):
            raise GpuLeaseError(f"cannot open GPU lock file {path}: {e.strerror}") from None
        try:  # another user's lock file in a shared folder: flock needs only read access
            fd = os.open(path, os.O_RDONLY | nofollow)
        except OSError as e2:
            raise GpuLeaseError(f"cannot open GPU lock file {path}: {e2.strerror}") from None
    st = os.fstat(fd)
    problem = ("is not a plain file" if not stat.S_ISREG(st.st_mode)
               else "has other hard links" if st.st_nlink != 1
               else f"belongs to uid {st.st_uid}" if not shared and st.st_uid != os.geteuid() else None)
    if problem:
        os.close(fd)
        raise GpuLeaseError(f"GPU lock file {path} {problem}; refusing to use it (remove it)")
    if shared and st.st_uid == os.geteuid():
        os.fchmod(fd, 0o644)  # whatever our umask: other users' jobs must be able to open it
    return fd


def _try_lock(path: Path, shared: bool) -> int | None:
    """The fd of `path` locked exclusively, or None if another process holds it."""
    fd = _open_lock(path, shared)
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
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return "?"
    try:
        return os.read(fd, 300).decode(errors="replace").strip() or "?"
    except OSError:
        return "?"
    finally:
        os.close(fd)


def _prepare_dir(lock_dir: Path, named: bool) -> bool:
    """Create the lock folder if missing and check that nobody else controls it; True if
    it is a folder shared with other users. `named`: chosen by the user (argument or
    LOCALLEARN_GPU_LOCK_DIR), the only way to share one."""
    try:
        lock_dir.mkdir(mode=0o700, parents=named, exist_ok=True)
        st = os.stat(lock_dir) if named else os.lstat(lock_dir)
    except OSError as e:
        raise GpuLeaseError(f"cannot create the GPU lock folder {lock_dir}: {e.strerror}") from None
    me, mode = os.geteuid(), stat.S_IMODE(st.st_mode)
    fix = ("remove it, or set LOCALLEARN_GPU_LOCK_DIR to a folder of yours (mode 0700)" if not named else
           "chmod go-w it, or chmod +t it to share it with other users (as /tmp is)")
    if not stat.S_ISDIR(st.st_mode):
        problem = "is not a folder" + ("" if named else " (a symbolic link?)")
    elif st.st_uid not in ((me, 0) if named else (me,)):
        problem = f"belongs to uid {st.st_uid}, not to you (uid {me})"
    elif not named and mode & 0o077:
        problem = f"has mode {mode:04o}; your own lock folder must be 0700"
    elif mode & 0o022 and not mode & stat.S_ISVTX:
        problem = f"has mode {mode:04o}: others may write in it without the sticky bit"
    else:
        problem = None
    if problem:
        raise GpuLeaseError(f"GPU lock folder {lock_dir} {problem}; refusing to take leases there "
                            f"(another user could steal or redirect them): {fix}")
    if not os.access(lock_dir, os.W_OK | os.X_OK):
        raise GpuLeaseError(f"GPU lock folder {lock_dir} is not writable "
                            "(set LOCALLEARN_GPU_LOCK_DIR to a writable folder)")
    return bool(mode & 0o022)


def _sign(fd: int, label: str | None) -> None:
    """Say who holds a lock, for `python -m locallearn.host.gpulease` and error messages."""
    note = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
    if label:
        note += f" ({label})"
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (note + "\n").encode(), 0)
    except OSError:
        pass  # another user's lock file, opened read-only: it keeps its old note


def _set_visible(indices: list[int]) -> None:
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, indices))


def lease(n: int = 1, lock_dir: Path | str | None = None, count: int | None = None,
          slots_per_gpu: int | None = None, wait_seconds: float | None = None,
          set_env: bool = True, label: str | None = None) -> list[Lease] | None:
    """Take n distinct GPUs for the life of this process (a run needs 1, a pipeline of n
    stages n), all or none; None where there is no GPU.

    One GPU: every card's first slot is tried before any second slot, so jobs spread over
    the cards before they share one (slots_per_gpu). Several: the first slot of n cards,
    whole cards only; a partial set is given back at once, so two jobs that each hold some
    cards never wait on each other. Waits up to `wait_seconds` for a lease to free up (a
    job that just ended, or other users' jobs), then raises GpuLeaseError naming the
    holders. With set_env, CUDA_VISIBLE_DEVICES lists the leased cards (the job sees them
    as cuda:0 ..., numbered as nvidia-smi numbers them: CUDA_DEVICE_ORDER=PCI_BUS_ID);
    this must happen before CUDA initialises, which is checked.
    """
    lock_dir, named = _chosen_dir(lock_dir)
    count = detect_gpu_count() if count is None else count
    slots_per_gpu = (slots_per_gpu or _env_int("LOCALLEARN_GPU_SLOTS") or 1) if n == 1 else 1
    if wait_seconds is None:
        env_wait = os.environ.get("LOCALLEARN_GPU_WAIT", "").strip()
        wait_seconds = float(env_wait) if env_wait else DEFAULT_WAIT_SECONDS
    if count <= 0:
        return None
    if slots_per_gpu < 1:
        raise GpuLeaseError(f"slots_per_gpu must be >= 1, got {slots_per_gpu}")
    if n > count:
        raise GpuLeaseError(f"{n} GPUs wanted for one job, this machine has {count}")
    if set_env and _cuda_already_initialised():
        raise GpuLeaseError("CUDA was initialised before the GPU lease was taken; "
                            "lease() must run before any torch.cuda call")
    shared = _prepare_dir(lock_dir, named)

    order = [(i, s) for s in range(slots_per_gpu) for i in range(count)]
    deadline = time.monotonic() + max(wait_seconds, 0.0)
    while True:
        held: list[Lease] = []
        for index, slot in order:
            if any(h.index == index for h in held):
                continue
            path = _lock_path(lock_dir, index, slot)
            fd = _try_lock(path, shared)
            if fd is not None:
                held.append(Lease(index=index, slot=slot, path=path, fd=fd))
                if len(held) == n:
                    break
        if len(held) == n:
            for h in held:
                _sign(h.fd, label)
            if set_env:
                _set_visible([h.index for h in held])
            return held
        for h in held:
            h.release()
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)

    holders = "; ".join(f"gpu{i}.slot{s}: {_holder(_lock_path(lock_dir, i, s))}" for i, s in order)
    if n == 1:
        raise GpuLeaseError(
            f"all {count} GPU(s) x {slots_per_gpu} slot(s) are leased after waiting {wait_seconds:g} s "
            f"(lock folder {lock_dir}; holders: {holders}); run fewer jobs at once "
            "(snakemake --resources gpu=N) or raise LOCALLEARN_GPU_SLOTS")
    raise GpuLeaseError(f"{n} of {count} GPUs were not free together after waiting {wait_seconds:g} s "
                        f"(lock folder {lock_dir}; holders: {holders}); run fewer jobs at once")


def lease_status(lock_dir: Path | str | None = None, count: int | None = None,
                 slots_per_gpu: int | None = None) -> list[tuple[int, int, str | None]]:
    """(gpu, slot, holder or None if free) for every lock; probes without keeping."""
    lock_dir, named = _chosen_dir(lock_dir)
    count = detect_gpu_count() if count is None else count
    slots_per_gpu = slots_per_gpu or _env_int("LOCALLEARN_GPU_SLOTS") or 1
    shared = _prepare_dir(lock_dir, named)  # an unsafe folder is reported here too
    rows = []
    for index in range(count):
        for slot in range(slots_per_gpu):
            path = _lock_path(lock_dir, index, slot)
            if not path.exists():
                rows.append((index, slot, None))
                continue
            fd = _try_lock(path, shared)
            if fd is None:
                rows.append((index, slot, _holder(path)))
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                rows.append((index, slot, None))
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m locallearn.host.gpulease`: which GPU slots are leased, and by whom."""
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
