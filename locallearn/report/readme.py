"""A README's generated part: the text between two markers, replaced by the compiled
tables (report/report.py); everything outside the markers stays as it was. A file is written
only when its text changes. Importing this module does not import torch."""
from __future__ import annotations

from pathlib import Path

from ..atomic import write_if_changed
from ..errors import LocallearnError

BEGIN = "<!-- locallearn:tables:begin -->"
END = "<!-- locallearn:tables:end -->"


class ReadmeError(LocallearnError):
    """A README without exactly one pair of markers, in order."""


def splice_text(text: str, block: str, where: str = "README") -> str:
    """`text` with everything between the markers replaced by `block`."""
    nb, ne = text.count(BEGIN), text.count(END)
    if nb != 1 or ne != 1:
        raise ReadmeError(f"{where}: expected one {BEGIN} and one {END} marker, "
                          f"found {nb} and {ne}")
    i, j = text.index(BEGIN) + len(BEGIN), text.index(END)
    if j < i:
        raise ReadmeError(f"{where}: {END} comes before {BEGIN}")
    return text[:i] + "\n" + block.strip("\n") + "\n" + text[j:]


def splice_file(path: str | Path, block: str, template: str | None = None) -> bool:
    """Put `block` between the markers of `path`; write only if that changes the file.
    A missing file is created from `template` (which must hold the markers) if given.
    True if the file was written."""
    path = Path(path)
    if path.is_file():
        text = path.read_text()
    elif template is not None:
        text = template
    else:
        raise ReadmeError(f"{path}: no such file (expected a README with the markers "
                          f"{BEGIN} and {END})")
    return write_if_changed(path, splice_text(text, block, str(path)))


def template(title: str, body: str = "") -> str:
    """A README made only to hold tables (the quick preset's)."""
    return f"# {title}\n\n{body.strip()}\n\n{BEGIN}\n{END}\n".replace("\n\n\n", "\n\n")
