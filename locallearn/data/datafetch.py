"""Putting a dataset's original files in place in the data dir: from a folder given by
hand (`--source`), from a folder this machine already has (specs' offline sources, e.g.
Debian's Fashion-MNIST package), or from the network (`--download`). Every file is
checked against torchvision's md5 before it is put in place, and only ever by renaming
a complete, verified temporary file, so nothing half-written can look complete.
Reading and verifying are data/datasets.py's.
"""
from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

from torchvision.datasets import utils as tv_utils

from ..atomic import atomic_write_bytes
from ..errors import DatasetError
from ..recipe.specs import SPECS
from .datasets import (Archive, DataFile, dataset_error, file_problem, how_to_get, layout_of, load_split, md5_of,
                       one_line, problems_in)

# Folders of original files that this machine may already have; a dataset missing from
# the data dir is imported from here (verified) before anything asks for a download.
OFFLINE_SOURCES: dict[str, tuple[Path, ...]] = {
    name: tuple(map(Path, spec.offline_sources)) for name, spec in SPECS.items() if spec.offline_sources}


def ready(name: str, data_dir: Path, download: bool = False) -> None:
    """When a run could not read `name` (batches.load_splits): files missing from
    data_dir are imported from a known offline folder if the machine has one, else
    downloaded if `download`; corrupt files are fetched again only if `download`.
    Anything else raises DatasetError (and datasets.load_split verifies what it reads
    in any case)."""
    data_dir = Path(data_dir)
    wanted = [f for f in layout_of(name).files if f.split != "meta"]   # the files a run reads
    problems = problems_in(data_dir, wanted)
    if not problems:
        return
    only_missing = all(problem == "missing" for problem in problems.values())
    if not (download or (only_missing and _offline_sources(name))):
        raise dataset_error(name, data_dir, wanted, problems)
    _fetch(name, data_dir, list(problems_in(data_dir, list(layout_of(name).files))), download)


def prepare(name: str, data_dir: Path, download: bool = False, source: Path | None = None) -> None:
    """Make `name` ready in data_dir, then check that both splits load.

    With `source` (a folder of the original files, or of the original tarball for
    CIFAR/STL10) every file is imported from it. Otherwise files already there and
    verified are kept, and the others come from a known offline folder, else from the
    network if `download`. Each file is checked against torchvision's md5 before it is
    put in place.
    """
    data_dir = Path(data_dir)
    files = list(layout_of(name).files)
    if source is not None:
        _import(name, data_dir, Path(source), files)
    else:
        problems = problems_in(data_dir, files)
        if problems:
            if not (download or _offline_sources(name)):
                raise dataset_error(name, data_dir, files, problems)
            _fetch(name, data_dir, list(problems), download)
    for train in (True, False):
        load_split(name, data_dir, train)


def _offline_sources(name: str) -> list[Path]:
    return [p for p in OFFLINE_SOURCES.get(name, ()) if p.is_dir()]


def _fetch(name: str, data_dir: Path, files: list[DataFile], download: bool) -> None:
    """Install `files` from a known offline folder, else from the network if `download`."""
    errors = []
    for folder in _offline_sources(name):
        try:
            return _import(name, data_dir, folder, files)
        except DatasetError as e:
            errors.append(str(e))
    if not download:
        raise DatasetError(f"{name}: not ready in data dir {data_dir}, and importing it failed: "
                           f"{' '.join(errors)}; {how_to_get(name)}")
    _download(name, data_dir, files)


def _staging(data_dir: Path) -> Path:
    """A private folder inside data_dir, so finished files move in by an atomic rename."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=data_dir))
    except OSError as e:
        raise DatasetError(f"cannot write to data dir {data_dir} ({one_line(e)}); "
                           "choose another with --data-dir or $LOCALLEARN_DATA") from e


def _download(name: str, data_dir: Path, files: list[DataFile]) -> None:
    """Fetch the originals of `files` (or the one tarball holding them), then import them."""
    layout = layout_of(name)
    staging = _staging(data_dir)
    try:
        if layout.archive:
            wanted = [(layout.archive.filename, (layout.archive.url,), layout.archive.md5)]
        else:
            wanted = [(Path(f.rel).name, f.urls, f.md5) for f in files]
        for filename, urls, md5 in wanted:
            failures = []
            for url in urls:
                try:
                    tv_utils.download_url(url, str(staging), filename, md5)
                    break
                except Exception as e:  # offline, HTTP error, md5 mismatch: all mean "not fetched"
                    failures.append(f"{url}: {one_line(e)}")
                    (staging / filename).unlink(missing_ok=True)
            else:
                raise DatasetError(
                    f"{name}: download failed ({'; '.join(failures)}); if this machine is offline, "
                    f"put the original files in a folder and run `locallearn data prepare {name} "
                    f"--source DIR` (expects {', '.join(Path(f.rel).name for f in layout.files)} "
                    f"under data dir {data_dir})")
        _import(name, data_dir, staging, files, move=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _find(source: Path, rel: str) -> Path | None:
    """`rel` in source as it is laid out, or any tail of it (e.g. just the file name)."""
    parts = Path(rel).parts
    for i in range(len(parts)):
        candidate = source.joinpath(*parts[i:])
        if candidate.is_file():
            return candidate
    return None


def _import(name: str, data_dir: Path, source: Path, files: list[DataFile], move: bool = False) -> None:
    """Verify `files` in `source` against torchvision's md5, then install them all."""
    layout = layout_of(name)
    if not source.is_dir():
        raise DatasetError(f"{name}: source folder {source} does not exist; {how_to_get(name)}")
    staging = _staging(data_dir)
    try:
        found = {f: _find(source, f.rel) for f in files}
        if layout.archive and not all(found.values()):
            tarball = _find(source, layout.archive.filename)
            if tarball is not None:
                found = _unpack(name, tarball, layout.archive, files, staging)
                move = True
        missing = [Path(f.rel).name for f, path in found.items() if path is None]
        if missing:
            archive = f", or {layout.archive.filename}" if layout.archive else ""
            raise DatasetError(f"{name}: {source} lacks {', '.join(missing)} (an import needs "
                               f"{', '.join(Path(f.rel).name for f in layout.files)}{archive})")
        for f, path in found.items():
            problem = file_problem(path, f, {})
            if problem:
                raise DatasetError(f"{name}: {path} is not the original file ({problem}); "
                                   "nothing was imported")
        for f, path in found.items():
            _install(path, data_dir / f.rel, move)
            if f.rel.endswith(".gz"):   # torchvision's MNIST classes read the unpacked copies
                with gzip.open(data_dir / f.rel, "rb") as g:
                    atomic_write_bytes((data_dir / f.rel).with_suffix(""), g)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unpack(name: str, tarball: Path, archive: Archive, files: list[DataFile],
            staging: Path) -> dict[DataFile, Path | None]:
    """Extract just `files` from a verified tarball into staging."""
    if md5_of(tarball) != archive.md5:
        raise DatasetError(f"{name}: {tarball} is not the original archive (md5 differs from "
                           f"torchvision's {archive.md5}); nothing was imported")
    wanted = {Path(f.rel).name: f for f in files}
    found: dict[DataFile, Path | None] = dict.fromkeys(files)
    try:
        with tarfile.open(tarball) as tar:
            for member in tar:
                f = wanted.get(Path(member.name).name)
                if f and member.isfile():
                    out = staging / Path(f.rel).name
                    with tar.extractfile(member) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    found[f] = out
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{name}: cannot unpack {tarball} ({one_line(e)})") from e
    return found


def _install(src: Path, dest: Path, move: bool) -> None:
    if move:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
    else:
        with open(src, "rb") as f:
            atomic_write_bytes(dest, f)
