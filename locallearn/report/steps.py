"""A preset's report, made from the runs that exist in <results>/runs: the tables
(report/tables.py) written to <results>/tables, the figures (report/figures.py) drawn into
<results>/figures (curves/, layers/, scatter.png), the tables spliced into a README
between its two markers (`splice_file`: everything outside them stays as it was, and
the file is written only when its text changes).

The workflow's reporting rules call one step each (curve, scatter, compile, splice);
its `tables` target and `locallearn tables` call `refresh`, which does them all, with
the same arguments and so the same bytes. Rows, paths, seeds and tolerances come in as
arguments: nothing here reads workflow/.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from . import figures, tables
from ..atomic import write_if_changed
from ..errors import LocallearnError
from ..layout import runs_dir


def figures_link(results: str | Path, readme_path: str | Path | None, folder: str = "figures") -> str:
    """<results>/<folder> as a link from the README's folder (from <results>/tables
    when there is no README)."""
    base = Path(readme_path).resolve().parent if readme_path else (Path(results) / "tables").resolve()
    return Path(os.path.relpath((Path(results) / folder).resolve(), base)).as_posix()


def runs(rows: list[dict], results: str | Path, seeds: list[int] | None) -> dict[str, list[dict]]:
    """{cell: [metrics, ...]} of the finished runs of `rows` (every seed found when
    `seeds` is None)."""
    return tables.load_runs(runs_dir(results), rows, seeds)


def draw_curve(row: dict, results: str | Path, seeds: list[int] | None) -> Path:
    """<results>/figures/curves/<cell>.png: every finished seed of one cell."""
    found = runs([row], results, seeds).get(row["cell"], [])
    return figures.plot_cell(found, Path(results) / "figures" / "curves" / f"{row['cell']}.png", row)


def draw_layers(row: dict, results: str | Path, seeds: list[int] | None) -> Path:
    """<results>/figures/layers/<cell>.png: the layers of the cell's first finished seed
    (a cell without one gets a figure saying so)."""
    found = runs([row], results, seeds).get(row["cell"], [])
    run = found[0] if found else {"history": [], "seed": "-"}
    return figures.plot_layers(run, Path(results) / "figures" / "layers" / f"{row['cell']}.png", row)


def draw_scatter(rows: list[dict], results: str | Path, seeds: list[int] | None,
                 tolerance: Mapping[str, float] | float | None = None) -> Path:
    """<results>/figures/scatter.png: ours against published, every cell that has run
    (with each one's verdict tolerance, when given)."""
    points = tables.scatter_points(rows, runs(rows, results, seeds), tolerance)
    return figures.plot_scatter(points, Path(results) / "figures" / "scatter.png",
                                title=f"ours vs published ({Path(results).name} preset)")


def draw_field(grids: list[tuple[list[dict], str | Path]], seeds: list[int] | None, out: str | Path) -> Path:
    """<out>/figures/field.png: error against cost, every finished cell of every grid
    given as (rows, results folder)."""
    points = [p for rows, results in grids for p in tables.field_points(rows, runs(rows, results, seeds))]
    return figures.plot_field(points, Path(out) / "figures" / "field.png",
                              title=f"error against cost ({Path(out).name} preset and the grids beside it)")


def compile_tables(rows: list[dict], results: str | Path, *, seeds: list[int] | None,
                   tolerance: Mapping[str, float] | float, intro: str,
                   readme_path: str | Path | None, figures_drawn: bool = True) -> dict[str, str]:
    """Compile the tables of `rows` and write them to <results>/tables (markdown, and the
    summary as summary.csv and summary.tex); links to the figures (when drawn) are
    relative to the README that will receive them."""
    link = figures_link(results, readme_path)
    found = runs(rows, results, seeds)
    out = tables.compile_tables(rows, found, expected_seeds=len(seeds) if seeds else 1,
                                tolerance=tolerance, intro=intro,
                                figure_prefix=f"{link}/curves/" if figures_drawn else None,
                                layers_prefix=f"{link}/layers/" if figures_drawn else None,
                                pending_link=f"{figures_link(results, readme_path, 'tables')}/pending.md",
                                scatter=f"{link}/scatter.png" if figures_drawn else None)
    tables.write_tables(out, Path(results) / "tables")
    # the same numbers as data: summary.csv (pandas reads it back), summary.tex (booktabs)
    frame = tables.summary_frame(rows, found, expected_seeds=len(seeds) if seeds else 1, tolerance=tolerance)
    write_if_changed(Path(results) / "tables" / "summary.csv", frame.to_csv(index=False))
    write_if_changed(Path(results) / "tables" / "summary.tex", tables.summary_latex(frame))
    return out


def refresh(rows: list[dict], results: str | Path, *, seeds: list[int] | None,
            tolerance: Mapping[str, float] | float, intro: str, readme_path: str | Path | None = None,
            readme_template: str | None = None, draw: bool = True) -> dict[str, str]:
    """Everything from the runs that exist: the curves of every cell that has run and
    the scatter (`draw`), the tables, and the README's generated part (`readme_path`;
    a missing one is made from `readme_template` when given)."""
    if draw:
        found = runs(rows, results, seeds)
        for r in rows:
            if r["cell"] in found:
                draw_curve(r, results, seeds)
                draw_layers(r, results, seeds)
        draw_scatter(rows, results, seeds, tolerance)
    out = compile_tables(rows, results, seeds=seeds, tolerance=tolerance, intro=intro,
                         readme_path=readme_path, figures_drawn=draw)
    if readme_path:
        splice_file(readme_path, out["tables"], readme_template)
    return out


# --------------------------------------------------------------------------- the README splice

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
