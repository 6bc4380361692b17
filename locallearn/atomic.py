"""Atomic file writes: a reader (Snakemake, the next run, a person) sees the old file or
the new one, never half of one, even when the writer dies or the disk fills."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: str | Path, write, mode: int | None = None) -> Path:
    """write(tmp) into a uniquely named temporary file beside `path` (so concurrent
    writers never share one), fsync it, then rename it over `path`. The file keeps the
    mode of the one it replaces (else 0644). On any failure the temporary file is
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
        if mode is None:
            mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))
