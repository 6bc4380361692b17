"""GPU leases without a GPU: fake device counts, real processes, real flocks."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import child_env
from locallearn.errors import LocallearnError
from locallearn.host.gpulease import GpuLeaseError, detect_gpu_count, lease, lease_status


def one_gpu(*args, **kw):
    """lease(1, ...)'s one Lease (None without GPUs)."""
    got = lease(1, *args, **kw)
    return got[0] if got else got


# A child job: lease, report what it got, then hold the lease until told to go.
CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from locallearn.host.gpulease import lease
    lock_dir, slots, report, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    [held] = lease(1, lock_dir, slots_per_gpu=slots, wait_seconds=float(os.environ.get("WAIT", "0")))
    report.write_text(f"{held.index} {held.slot} {os.environ['CUDA_VISIBLE_DEVICES']}")
    while not go.exists():
        time.sleep(0.05)
""")


def _env(count: int) -> dict:
    env = child_env(LOCALLEARN_GPU_COUNT=str(count))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _spawn(tmp_path: Path, name: str, count: int, slots: int = 1, wait: float = 0) -> tuple[subprocess.Popen, Path]:
    report = tmp_path / f"{name}.report"
    env = _env(count)
    env["WAIT"] = str(wait)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "locks"), str(slots), str(report), str(tmp_path / "go")],
        env=env, stderr=subprocess.PIPE, text=True)
    return proc, report


def _wait_reports(procs_reports, timeout: float = 30.0) -> list[tuple[int, int, str]]:
    deadline = time.monotonic() + timeout
    out = []
    for proc, report in procs_reports:
        while not report.exists():
            if proc.poll() is not None:
                pytest.fail(f"child exited {proc.returncode}: {proc.stderr.read()}")
            assert time.monotonic() < deadline, "child did not report a lease in time"
            time.sleep(0.05)
        while not report.read_text():
            time.sleep(0.01)
        index, slot, cvd = report.read_text().split()
        out.append((int(index), int(slot), cvd))
    return out


def _finish(tmp_path: Path, procs) -> None:
    (tmp_path / "go").touch()
    for proc in procs:
        proc.wait(timeout=30)


@pytest.fixture(autouse=True)
def _no_scheduler_gpu(monkeypatch):
    # lease sets CUDA_VISIBLE_DEVICES in this process for the in-process tests
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    for name in ("LOCALLEARN_GPU_COUNT", "LOCALLEARN_GPU_SLOTS", "LOCALLEARN_GPU_WAIT", "LOCALLEARN_GPU_LOCK_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_concurrent_processes_get_distinct_gpus(tmp_path):
    children = [_spawn(tmp_path, f"job{i}", count=4) for i in range(4)]
    try:
        got = _wait_reports(children)
        assert sorted(index for index, _, _ in got) == [0, 1, 2, 3]
        assert all(slot == 0 for _, slot, _ in got)
        # each job sees exactly its own GPU
        assert all(cvd == str(index) for index, _, cvd in got)
        # a fifth job finds none free and says so clearly
        extra, _ = _spawn(tmp_path, "job5", count=4, wait=0.3)
        extra.wait(timeout=30)
        err = extra.stderr.read()
        assert extra.returncode != 0
        assert "all 4 GPU(s)" in err and "leased" in err
    finally:
        _finish(tmp_path, [p for p, _ in children])


def test_sigkilled_holder_frees_its_gpu(tmp_path):
    holder, report = _spawn(tmp_path, "holder", count=1)
    try:
        assert _wait_reports([(holder, report)]) == [(0, 0, "0")]
        with pytest.raises(GpuLeaseError, match="all 1 GPU"):
            one_gpu(tmp_path / "locks", count=1, wait_seconds=0)
        status = lease_status(tmp_path / "locks", count=1)
        assert status[0][2] is not None and f"pid {holder.pid}" in status[0][2]
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        lease = one_gpu(tmp_path / "locks", count=1, wait_seconds=5)
        assert lease is not None and lease.index == 0
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        lease.release()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_waits_for_a_lease_to_free_up(tmp_path):
    # a holder that ends soon (a job finishing): the waiting job then gets its GPU
    holder, report = _spawn(tmp_path, "holder", count=1)
    try:
        _wait_reports([(holder, report)])
        start = time.monotonic()
        subprocess.Popen(["sh", "-c", f"sleep 0.7; touch {tmp_path / 'go'}"])
        lease = one_gpu(tmp_path / "locks", count=1, wait_seconds=20)
        waited = time.monotonic() - start
        assert lease is not None and lease.index == 0
        assert 0.5 < waited < 15
        lease.release()
    finally:
        holder.wait(timeout=30)


def test_slots_per_gpu_share_cards_after_spreading(tmp_path):
    # 2 GPUs x 2 slots: four concurrent jobs, two per card, none left for a fifth
    children = [_spawn(tmp_path, f"job{i}", count=2, slots=2) for i in range(4)]
    try:
        got = _wait_reports(children)
        assert sorted((index, slot) for index, slot, _ in got) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        with pytest.raises(GpuLeaseError):
            one_gpu(tmp_path / "locks", count=2, slots_per_gpu=2, wait_seconds=0)
    finally:
        _finish(tmp_path, [p for p, _ in children])


def test_in_process_order_spreads_before_sharing(tmp_path):
    leases = [one_gpu(tmp_path, count=2, slots_per_gpu=2, wait_seconds=0) for _ in range(4)]
    assert [(lease.index, lease.slot) for lease in leases] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    leases[1].release()
    again = one_gpu(tmp_path, count=2, slots_per_gpu=2, wait_seconds=0)
    assert (again.index, again.slot) == (1, 0)
    for held in leases + [again]:
        held.release()


def test_pipeline_job_leases_distinct_whole_gpus_all_or_none(tmp_path, monkeypatch):
    """A pipelined job (issue 8) takes n cards at once, sees exactly them, and gives a
    partial set back instead of sitting on it."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    one = one_gpu(tmp_path, count=4, wait_seconds=0, set_env=False)       # a single-GPU job on gpu0
    pair = lease(2, tmp_path, count=4, wait_seconds=0)
    assert [held.index for held in pair] == [1, 2]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1,2"
    with pytest.raises(GpuLeaseError, match="2 of 4 GPUs were not free together"):
        lease(2, tmp_path, count=4, wait_seconds=0, set_env=False)       # only gpu3 is free
    assert one_gpu(tmp_path, count=4, wait_seconds=0, set_env=False).index == 3  # not left held
    with pytest.raises(GpuLeaseError, match="8 GPUs wanted for one job, this machine has 4"):
        lease(8, tmp_path, count=4, wait_seconds=0)
    for held in [one, *pair]:
        held.release()
    assert [held.index for held in lease(3, tmp_path, count=4, wait_seconds=0, set_env=False)][:2] == [0, 1]
    assert lease(2, tmp_path, count=0) is None


def test_no_gpu_means_no_lease(tmp_path, monkeypatch):
    assert one_gpu(tmp_path, count=0) is None
    monkeypatch.setenv("LOCALLEARN_GPU_COUNT", "0")
    assert detect_gpu_count() == 0
    assert one_gpu(tmp_path) is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_env_overrides_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALLEARN_GPU_COUNT", "3")
    monkeypatch.setenv("LOCALLEARN_GPU_LOCK_DIR", str(tmp_path / "envlocks"))
    monkeypatch.setenv("LOCALLEARN_GPU_SLOTS", "2")
    assert detect_gpu_count() == 3
    with one_gpu(wait_seconds=0) as lease:
        assert lease.path.parent == tmp_path / "envlocks"
        assert lease.held
    assert not lease.held
    monkeypatch.setenv("LOCALLEARN_GPU_COUNT", "many")
    with pytest.raises(LocallearnError, match="LOCALLEARN_GPU_COUNT"):
        one_gpu(tmp_path)


def test_detect_counts_nvidia_smi_gpus(tmp_path, monkeypatch):
    # no NVML here; a fake nvidia-smi on PATH stands for the driver's tool
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'GPU 0: Fake (UUID: GPU-0)'\necho 'GPU 1: Fake (UUID: GPU-1)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    torch = pytest.importorskip("torch")
    if not torch.backends.cuda.is_built():
        pytest.skip("CPU-only torch build: detection answers 0 before asking nvidia-smi")
    if torch.cuda._device_count_nvml() >= 0:
        pytest.skip("NVML answers on this machine; nvidia-smi is not consulted")
    assert detect_gpu_count() == 2


# --- nobody else controls the locks (issue 16) ------------------------------------------

def test_default_folder_is_this_users_own_0700(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)    # re-read TMPDIR
    with one_gpu(count=1, wait_seconds=0, set_env=False) as lease:
        folder = lease.path.parent
        assert folder == tmp_path / f"locallearn-gpu-locks-{os.geteuid()}"
        st = folder.stat()
        assert st.st_uid == os.geteuid() and (st.st_mode & 0o777) == 0o700
        assert (lease.path.stat().st_mode & 0o077) == 0


def test_planted_symlink_is_never_followed(tmp_path):
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (locks / "gpu0.slot0.lock").symlink_to(victim)
    with pytest.raises(GpuLeaseError, match="gpu0.slot0.lock is a symbolic link; refusing to follow it"):
        one_gpu(locks, count=1, wait_seconds=0, set_env=False)
    assert victim.read_text() == "precious\n"
    # a hard link is refused too: truncating it would truncate the victim
    (locks / "gpu0.slot0.lock").unlink()
    os.link(victim, locks / "gpu0.slot0.lock")
    with pytest.raises(GpuLeaseError, match="has other hard links"):
        one_gpu(locks, count=1, wait_seconds=0, set_env=False)
    assert victim.read_text() == "precious\n"


def test_default_folder_made_by_someone_else_is_refused(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root to make a folder belong to another uid")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    planted = tmp_path / f"locallearn-gpu-locks-{os.geteuid()}"
    planted.mkdir(mode=0o700)
    os.chown(planted, 4242, 4242)        # another user got there first
    with pytest.raises(GpuLeaseError, match=r"belongs to uid 4242, not to you .*remove it"):
        one_gpu(count=1, wait_seconds=0, set_env=False)
    os.chown(planted, os.geteuid(), os.getegid())
    planted.chmod(0o755)                 # ours, but open to others: not private
    with pytest.raises(GpuLeaseError, match="has mode 0755; your own lock folder must be 0700"):
        one_gpu(count=1, wait_seconds=0, set_env=False)
    planted.rmdir()
    planted.symlink_to(tmp_path)         # a link where our folder should be
    with pytest.raises(GpuLeaseError, match="is not a folder"):
        one_gpu(count=1, wait_seconds=0, set_env=False)


def test_named_folder_unsafe_owner_or_mode_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)                  # anyone may swap lock files: no sticky bit
    with pytest.raises(GpuLeaseError, match="mode 0777: others may write in it without the sticky bit"):
        one_gpu(shared, count=1, wait_seconds=0, set_env=False)
    shared.chmod(0o1777)                 # as /tmp: a folder users may share
    with one_gpu(shared, count=1, wait_seconds=0, set_env=False) as lease:
        assert (lease.path.stat().st_mode & 0o777) == 0o644   # other users' jobs must open it
    if os.geteuid() != 0:
        return
    os.chown(shared, 4242, 4242)         # sticky, but someone else's folder
    with pytest.raises(GpuLeaseError, match="belongs to uid 4242"):
        one_gpu(shared, count=1, wait_seconds=0, set_env=False)


def test_shared_folder_uses_another_users_lock_file(tmp_path):
    """Two users sharing GPUs: a lock file another user created (and we may not write) is
    still a lease, taken read-only and left unwritten."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a lock file belong to another uid")
    base = Path(tempfile.mkdtemp(prefix="locallearn-shared-"))   # pytest's tmp_path is closed to others
    try:
        base.chmod(0o755)
        shared = base / "shared"
        shared.mkdir()
        shared.chmod(0o1777)
        theirs = shared / "gpu0.slot0.lock"
        theirs.write_text("pid 1 on elsewhere\n")
        os.chown(theirs, 4242, 4242)
        theirs.chmod(0o644)
        child = subprocess.run(   # imports first (the interpreter's files may be root's), then uid 4343
            [sys.executable, "-c", textwrap.dedent(f"""
                import os
                from locallearn.host.gpulease import lease
                os.setgid(4343); os.setuid(4343)
                [mine] = lease(1, {str(shared)!r}, count=2, wait_seconds=0, set_env=False)
                [other] = lease(1, {str(shared)!r}, count=2, wait_seconds=0, set_env=False)
                print(mine.index, other.index)
            """)], env=_env(2), capture_output=True, text=True, timeout=60)
        assert child.returncode == 0, child.stderr
        # gpu0 taken through the other user's file (read-only, unwritten), gpu1 created
        assert child.stdout.split() == ["0", "1"]
        assert theirs.read_text() == "pid 1 on elsewhere\n"
        assert (shared / "gpu1.slot0.lock").stat().st_uid == 4343
    finally:
        shutil.rmtree(base)
