"""The paper's tables, recompiled from our runs.

Reads `<runs>/<cell>/seed<seed>/metrics.json` (the source of truth) for the rows of
cells.tsv and writes markdown in the layout of the paper's README: one table per
dataset (Network, #Params, Global loss, pred, sim, predsim), each entry showing ours
beside the published number, `8.41 (8.37)`, then a summary table with the delta, a
verdict and the training wall time per cell. A cell without metrics.json shows as
"not run", never as a number.

`splice_file` puts the tables into a README between BEGIN and END; it writes only when
the text changes and leaves everything outside the markers as it was.

Used by the workflow (workflow/scripts/report.py) and by `locallearn tables`
(`cli_tables`). Importing this module does not import torch.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Mapping

from tabulate import tabulate

from .atomic import atomic_write_text
from .cells import DEFAULT_CELLS, published_error, read_cells
from .errors import ConfigError, LocallearnError
from .specs import SPECS

BEGIN = "<!-- locallearn:tables:begin -->"
END = "<!-- locallearn:tables:end -->"

# cells.tsv `loss` -> column of the paper's tables
LOSS_COLUMNS = {
    "backprop": "Global loss",
    "pred": "Local loss 'pred'",
    "sim": "Local loss 'sim'",
    "predsim": "Local loss 'predsim'",
}
NOT_RUN = "not run"
NOTE = ("Test error (%) after the last epoch: ours (published). Ours is the mean ± std over "
        "seeds where several ran; [k/n seeds] where only some of the n configured seeds have "
        "finished. #Params: ours (from metrics.json) where a cell of the row has run, else the "
        "published count; the published count follows in parentheses where ours differs.")


class TablesError(LocallearnError):
    """A metrics.json or README that cannot be used."""


# --------------------------------------------------------------------------- reading

def load_runs(runs_dir: str | Path, rows: list[dict], seeds: list[int] | None = None) -> dict[str, list[dict]]:
    """{cell: [metrics, ...]} in seed order, for the cells of `rows` with at least one
    finished run. `seeds` None: every seed<k> folder found."""
    runs_dir = Path(runs_dir)
    out: dict[str, list[dict]] = {}
    for row in rows:
        cell_dir = runs_dir / row["cell"]
        if seeds is None:
            found = sorted(int(p.name[4:]) for p in cell_dir.glob("seed*")
                           if p.name[4:].isdigit() and (p / "metrics.json").is_file())
        else:
            found = [s for s in seeds if (cell_dir / f"seed{s}" / "metrics.json").is_file()]
        runs = [_read_metrics(cell_dir / f"seed{s}" / "metrics.json") for s in found]
        if runs:
            out[row["cell"]] = runs
    return out


def _read_metrics(path: Path) -> dict:
    try:
        with open(path) as f:
            m = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise TablesError(f"{path}: cannot read metrics.json ({e})") from None
    if not isinstance(m, dict) or not isinstance(m.get("test_error"), (int, float)):
        raise TablesError(f"{path}: no numeric 'test_error'")
    return m


# --------------------------------------------------------------------------- formatting

def _fmt(x: float) -> str:
    return f"{x:.2f}"


def budget(metrics: dict, row: dict) -> str | None:
    """'2/200 ep, 512 train ex' for a run shorter or smaller than its recipe, else None."""
    cfg = metrics.get("config") or {}
    parts = []
    epochs, recipe = int(metrics.get("epochs") or cfg.get("epochs") or 0), int(row["epochs"])
    if epochs and epochs != recipe:
        parts.append(f"{epochs}/{recipe} ep")
    if cfg.get("max_train_examples"):
        parts.append(f"{cfg['max_train_examples']} train ex")
    if cfg.get("max_test_examples"):
        parts.append(f"{cfg['max_test_examples']} test ex")
    return ", ".join(parts) or None


class Cell:
    """One row of cells.tsv with its finished runs."""

    def __init__(self, row: dict, runs: list[dict], expected_seeds: int):
        self.row = row
        self.runs = runs
        self.expected = expected_seeds
        self.errors = [float(m["test_error"]) for m in runs]
        self.published = published_error(row)
        budgets = list(dict.fromkeys(b for b in (budget(m, row) for m in runs) if b))
        self.budget = "; ".join(budgets) or None

    @property
    def n(self) -> int:
        return len(self.errors)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.errors) if self.errors else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.errors) if self.n > 1 else None

    def ours(self) -> str:
        """'8.41', '8.41 ± 0.05', '8.41 ± 0.05 [2/3 seeds, 2/200 ep]' or 'not run'."""
        if not self.n:
            return NOT_RUN
        text = _fmt(self.mean) + (f" ± {_fmt(self.std)}" if self.std is not None else "")
        notes = []
        if self.n < self.expected:
            notes.append(f"{self.n}/{self.expected} seeds")
        if self.budget:
            notes.append(self.budget)
        return text + (f" [{', '.join(notes)}]" if notes else "")

    def entry(self) -> str:
        """A table entry: ours (published)."""
        pub = _fmt(self.published) if self.published is not None else "n/a"
        return f"{self.ours()} ({pub})"

    def delta(self) -> float | None:
        if self.n and self.published is not None:
            return self.mean - self.published
        return None

    def verdict(self, tol: float) -> str:
        if not self.n:
            return "not yet run"
        if self.budget:
            return "budget run (not compared)"
        if self.published is None:
            return "no published number"
        inside = abs(self.delta()) <= tol + 1e-9
        return f"{'within' if inside else 'outside'} tolerance (±{tol:g})"

    def wall_time(self) -> str:
        """Mean training time per seed (wall_seconds of metrics.json, which adds up the
        time across resumes), or '-' where nothing has run."""
        walls = [float(m["wall_seconds"]) for m in self.runs if m.get("wall_seconds") is not None]
        return _duration(statistics.fmean(walls)) if walls else "-"

    def params(self) -> int | None:
        for m in self.runs:
            if isinstance(m.get("params_backprop"), int):
                return m["params_backprop"]
        return None


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def _params_entry(cells: list[Cell]) -> str:
    ours = next((p for p in (c.params() for c in cells) if p is not None), None)
    pub = next((c.row["published_params"].strip() for c in cells if (c.row.get("published_params") or "").strip()), None)
    if ours is None:
        return pub or "-"
    mine = _millions(ours)
    return f"{mine} ({pub})" if pub and pub != mine else mine


def _tolerance(tolerance: Mapping[str, float] | float, dataset: str) -> float:
    if isinstance(tolerance, (int, float)):
        return float(tolerance)
    return float(tolerance.get(dataset, tolerance["default"]))


def _markdown(headers: list[str], body: list[list[str]]) -> str:
    return tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True,
                    colalign=("left",) * len(headers))


# --------------------------------------------------------------------------- tables

def compile_tables(rows: list[dict], runs: Mapping[str, list[dict]], *, expected_seeds: int = 1,
                   tolerance: Mapping[str, float] | float = 0.5, figure_prefix: str | None = None,
                   scatter: str | None = None, intro: str = "", heading: str = "###") -> dict[str, str]:
    """Markdown for `rows` given `runs` ({cell: [metrics...]}, as load_runs gives).

    Returns {dataset: table, ..., "summary": table, "tables": everything together}
    ("tables" is what goes between a README's markers). `figure_prefix`: a cell that has
    run links to <figure_prefix><cell>.png in the summary; `scatter`: a link to the
    scatter plot, shown once something has run."""
    cells = [Cell(r, list(runs.get(r["cell"], [])), expected_seeds) for r in rows]
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    out: dict[str, str] = {}
    for ds in datasets:
        mine = [c for c in cells if c.row["dataset"] == ds]
        networks = list(dict.fromkeys(c.row["network"] for c in mine))
        body = []
        for net in networks:
            by_loss = {c.row["loss"]: c for c in mine if c.row["network"] == net}
            body.append([net, _params_entry(list(by_loss.values()))]
                        + [by_loss[loss].entry() if loss in by_loss else "-" for loss in LOSS_COLUMNS])
        title = SPECS[ds].title if ds in SPECS else ds   # the paper's captions
        out[ds] = (f"{heading} Results on {title}\n\n"
                   + _markdown(["Network", "#Params", *LOSS_COLUMNS.values()], body) + "\n")

    body = []
    counts = {"within": 0, "outside": 0, "budget": 0, "no published": 0, "not yet run": 0}
    for c in cells:
        tol = _tolerance(tolerance, c.row["dataset"])
        verdict = c.verdict(tol)
        for key in counts:
            if verdict.startswith(key):
                counts[key] += 1
        name = c.row["cell"]
        if figure_prefix is not None and c.n:
            name = f"[{name}]({figure_prefix}{name}.png)"
        delta = c.delta()
        body.append([name, str(c.n), _fmt(c.published) if c.published is not None else "n/a",
                     c.ours(), f"{delta:+.2f}" if delta is not None else "-", verdict, c.wall_time()])
    summary = (f"{heading} Summary\n\n"
               + _markdown(["Cell", "Seeds", "Published", "Ours", "Delta", "Verdict", "Wall time per seed"], body) + "\n\n"
               + f"{len(cells)} cells: {counts['within']} within tolerance, {counts['outside']} outside, "
               f"{counts['budget']} budget runs, {counts['no published']} without a published number, "
               f"{counts['not yet run']} not yet run.\n")
    out["summary"] = summary
    parts = [p for p in (intro.strip(), NOTE) if p]
    if scatter and any(c.n for c in cells):
        parts.append(f"![ours vs published]({scatter})")
    parts += [out[ds] for ds in datasets] + [summary]
    out["tables"] = "\n\n".join(p.strip("\n") for p in parts) + "\n"
    return out


def scatter_points(rows: list[dict], runs: Mapping[str, list[dict]],
                   tolerance: Mapping[str, float] | float | None = None) -> list[dict]:
    """(published, ours, each seed's error, the verdict's tolerance) of every cell that
    has both numbers, in table order, for figures.plot_scatter."""
    points = []
    for r in rows:
        c = Cell(r, list(runs.get(r["cell"], [])), 1)
        if c.n and c.published is not None:
            points.append({"cell": r["cell"], "dataset": r["dataset"], "published": c.published,
                           "ours": c.mean, "std": c.std or 0.0, "errors": c.errors, "budget": c.budget,
                           "tolerance": None if tolerance is None else _tolerance(tolerance, r["dataset"])})
    return points


# --------------------------------------------------------------------------- files

def write_text(path: str | Path, text: str) -> bool:
    """Write atomically, only when the content differs. True if written."""
    path = Path(path)
    if path.is_file() and path.read_text() == text:
        return False
    atomic_write_text(path, text)
    return True


def write_tables(tables: Mapping[str, str], out_dir: str | Path) -> list[Path]:
    """<out_dir>/<dataset lower>.md, summary.md and tables.md (all of them together)."""
    out_dir = Path(out_dir)
    paths = []
    for key, text in tables.items():
        p = out_dir / f"{key.lower()}.md"
        write_text(p, text)
        paths.append(p)
    return paths


def splice_text(text: str, block: str, where: str = "README") -> str:
    """`text` with everything between the markers replaced by `block`."""
    nb, ne = text.count(BEGIN), text.count(END)
    if nb != 1 or ne != 1:
        raise TablesError(f"{where}: expected one {BEGIN} and one {END} marker, "
                          f"found {nb} and {ne}")
    i, j = text.index(BEGIN) + len(BEGIN), text.index(END)
    if j < i:
        raise TablesError(f"{where}: {END} comes before {BEGIN}")
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
        raise TablesError(f"{path}: no such file (expected a README with the markers "
                          f"{BEGIN} and {END})")
    return write_text(path, splice_text(text, block, str(path)))


def readme_template(title: str, body: str = "") -> str:
    """A README made only to hold tables (the quick preset's)."""
    return f"# {title}\n\n{body.strip()}\n\n{BEGIN}\n{END}\n".replace("\n\n\n", "\n\n")


# --------------------------------------------------------------------------- all at once

def refresh(rows: list[dict], preset_dir: str | Path, *, seeds: list[int] | None,
            tolerance: Mapping[str, float] | float, readme: str | Path | None = None,
            readme_template_text: str | None = None, figures: bool = True, intro: str = "") -> dict[str, str]:
    """Compile the tables of `rows` from <preset_dir>/runs, write them to
    <preset_dir>/tables, draw <preset_dir>/figures (curves of every cell that has run,
    the scatter) and splice the tables into `readme` (links relative to it)."""
    preset_dir = Path(preset_dir)
    runs = load_runs(preset_dir / "runs", rows, seeds)
    base = Path(readme).resolve().parent if readme else (preset_dir / "tables").resolve()
    fig_dir = preset_dir / "figures"
    rel = Path(os.path.relpath(fig_dir.resolve(), base)).as_posix()
    if figures:
        from .figures import plot_cell, plot_scatter
        for r in rows:
            if r["cell"] in runs:
                plot_cell(runs[r["cell"]], fig_dir / "curves" / f"{r['cell']}.png", r)
        plot_scatter(scatter_points(rows, runs, tolerance), fig_dir / "scatter.png",
                     title=f"ours vs published ({preset_dir.name})")
    tables = compile_tables(rows, runs, expected_seeds=len(seeds) if seeds else 1, tolerance=tolerance,
                            figure_prefix=f"{rel}/curves/" if figures else None,
                            scatter=f"{rel}/scatter.png" if figures else None, intro=intro)
    write_tables(tables, preset_dir / "tables")
    if readme:
        splice_file(readme, tables["tables"], readme_template_text)
    return tables


def _tolerance_arg(items: list[str], cells_path: Path) -> dict[str, float]:
    tol: dict[str, float] = {}
    config = cells_path.parent / "config.yaml"
    if config.is_file():
        import yaml
        with open(config) as f:
            tol.update((yaml.safe_load(f) or {}).get("tolerance") or {})
    for item in items:
        key, sep, value = item.partition("=")
        try:
            tol[key if sep else "default"] = float(value if sep else key)
        except ValueError:
            raise ConfigError(f"--tolerance: expected NUMBER or DATASET=NUMBER, got {item!r}") from None
    tol.setdefault("default", 0.5)
    return tol


def cli_tables(argv: list[str]) -> int:
    """`locallearn tables`: compile the tables from whatever metrics.json exist (no
    training), draw the figures and splice the tables into a README."""
    from .helpformat import HelpFormatter
    p = argparse.ArgumentParser(prog="locallearn tables", description=cli_tables.__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--results", default="results/full",
                   help="a preset's results folder (holds runs/; tables/ and figures/ are written)")
    p.add_argument("--cells", default=str(DEFAULT_CELLS), help="cells.tsv")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds to read (default: every seed folder found)")
    p.add_argument("--tolerance", action="append", default=[], metavar="[DATASET=]PP",
                   help="verdict tolerance in percentage points (default: config.yaml beside cells.tsv)")
    p.add_argument("--readme", default=None, help="README to splice the tables into (markers required)")
    p.add_argument("--only-run", action="store_true", help="tables of the cells that have run only")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    args = p.parse_args(argv)
    cells_path = Path(args.cells)
    if not cells_path.is_file():
        raise ConfigError(f"--cells: no such file {cells_path}")
    rows = read_cells(cells_path)
    if args.only_run:
        runs = load_runs(Path(args.results) / "runs", rows, args.seeds)
        rows = [r for r in rows if r["cell"] in runs]
    tables = refresh(rows, args.results, seeds=args.seeds, tolerance=_tolerance_arg(args.tolerance, cells_path),
                     readme=args.readme, figures=not args.no_figures)
    print(f"wrote {Path(args.results) / 'tables'}/ ({len(tables)} files)"
          + (f" and spliced {args.readme}" if args.readme else ""))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(cli_tables(sys.argv[1:]))
    except LocallearnError as e:
        print(f"locallearn: error: {e}", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 1))
