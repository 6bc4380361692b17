"""Atomic file writes: a reader (Snakemake, the next run, a person) sees the old file or
the new one, never half of one, even when the writer dies or the disk fills."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it. os.umask can only read it by setting
    it, which for a moment gives every other thread's new files a wrong mode; Linux
    reports it in /proc/self/status instead. Elsewhere (no such line) the conventional
    022 is assumed."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def atomic_write(path: str | Path, write, mode: int | None = None) -> Path:
    """write(tmp) into a uniquely named temporary file beside `path` (so concurrent
    writers never share one), fsync it, then rename it over `path`. The file gets `mode`,
    else what open() would have given it: 0o666 less the umask (mkstemp's own 0600 would
    hide results from a group that shares them). On any failure the temporary file is
    removed and the error raised."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: str | Path, obj) -> Path:
    """`obj` as indented JSON (a record: the workflow's marks, replaced.json), its folder made."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_write_bytes(path: str | Path, content) -> Path:
    """`content` (bytes, or a binary file object copied in 1 MiB pieces) atomically."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as out:
            if isinstance(content, (bytes, bytearray)):
                out.write(content)
            else:
                shutil.copyfileobj(content, out, 1 << 20)
    return atomic_write(path, write)


def write_if_changed(path: str | Path, text: str) -> bool:
    """atomic_write_text, only when the file's content differs (its mtime then stays, so
    a README or table that did not change is not rewritten). True if written."""
    path = Path(path)
    if path.is_file() and path.read_text() == text:
        return False
    atomic_write_text(path, text)
    return True
