"""The paper's tables, recompiled from our runs.

Reads `<runs>/<cell>/seed<seed>/metrics.json` (the source of truth) for the rows of
cells.tsv and writes markdown in the layout of the paper's README: one table per
dataset (Network, #Params, Global loss, pred, sim, predsim), each entry showing ours
beside the published number, `8.41 (8.37)`, then a summary table with the delta, a
verdict and the training wall time of every cell that has run (the others are counted,
and listed in "pending"). A cell without metrics.json shows as "not run", never as a
number. A published number measured on other data than ours (cells.tsv
`published_data`, e.g. Kuzushiji-MNIST before its 2019 update) carries a footnote, and
the authors' own number on our data (`current_data_error`) is shown beside it and is
the one the verdict compares with.

Compiling only: the README splice is in report/steps.py, the figures in report/figures.py, and
report/steps.py puts the three together for the workflow and `locallearn tables`. The rows,
paths and tolerances come in as arguments. Importing this module does not import torch.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from tabulate import tabulate

from ..atomic import write_if_changed
from ..recipe.cells import (column, compared_error, compares_best_epoch, current_data_error, protocol, published_data,
                             published_error, published_spread)
from ..errors import LocallearnError
from ..layout import cell_seed, seed_of
from ..recipe.cost import recorded_head_macs
from ..runs.runstate import METRICS, is_number
from ..runs.selection import ERRORS, error_of
from ..recipe.specs import SPECS

if TYPE_CHECKING:
    import pandas as pd

# cells.tsv `loss` -> column of the paper's tables
LOSS_COLUMNS = {
    "backprop": "Global loss",
    "pred": "Local loss 'pred'",
    "sim": "Local loss 'sim'",
    "predsim": "Local loss 'predsim'",
}
NOT_RUN = "not run"
OTHER_DATA = "†"   # marks a published number measured on other data than ours
NOTE = ("Test error (%) after the last epoch: ours (published). Ours is the mean ± std over "
        "seeds where several ran; [k/n seeds] where only some of the n configured seeds have "
        "finished. #Params: ours (from metrics.json) where a cell of the row has run, else the "
        "published count; the published count follows in parentheses where ours differs.")
# The field's grids (cells.tsv `published_epoch` best): the papers' numbers are best-test-epoch ones.
NOTE_BEST = ("Test error (%) at the best test epoch (as the papers report: the test set picks the "
             "epoch): ours (published), so that the verdict compares like with like; the summary also "
             "shows the last epoch's and the validation-selected epoch's errors. Ours is the mean ± std "
             "over seeds where several ran; [k/n seeds] where only some of the n configured seeds have "
             "finished. An empty published number could not be read from its source.")


class TablesError(LocallearnError):
    """A metrics.json or README that cannot be used."""


def intro(seeds: list[int], tolerance_source: str, *, epochs: int | None = None,
          max_train_examples: int = 0, max_test_examples: int = 0) -> str:
    """The line above the tables: what the runs are (the full recipes, or a budget run
    when `epochs` or the example limits shrink them) and where the tolerances come from."""
    if not (epochs or max_train_examples or max_test_examples):
        return (f"Full recipes, seeds: {', '.join(map(str, seeds))}; verdict tolerances "
                f"(percentage points) from {tolerance_source}.")
    budget = [f"cut to {epochs} epochs" if epochs else "with its full epochs"]
    if max_train_examples:
        budget.append(f"the first {max_train_examples} training examples")
    if max_test_examples:
        budget.append(f"the first {max_test_examples} test examples")
    return ("**Quick preset: a budget run, not a replication.** Each cell runs its real recipe "
            f"{', '.join(budget)}; the bracket beside each of our numbers states that budget "
            "(epochs run / recipe epochs). Expect errors far above the published ones (in parentheses).")


# --------------------------------------------------------------------------- reading

def load_runs(runs_dir: str | Path, rows: list[dict], seeds: list[int] | None = None) -> dict[str, list[dict]]:
    """{cell: [metrics, ...]} in seed order, for the cells of `rows` with at least one
    finished run. `seeds` None: every seed<k> folder found."""
    runs_dir = Path(runs_dir)
    out: dict[str, list[dict]] = {}
    for row in rows:
        if seeds is None:
            found = sorted(seed_of(p) for p in (runs_dir / row["cell"]).glob("seed*")
                           if seed_of(p) is not None and (p / METRICS).is_file())
        else:
            found = [s for s in seeds if (runs_dir / cell_seed(row["cell"], s) / METRICS).is_file()]
        runs = [_read_metrics(runs_dir / cell_seed(row["cell"], s) / METRICS) for s in found]
        if runs:
            out[row["cell"]] = runs
    return out


def _read_metrics(path: Path) -> dict:
    try:
        with open(path) as f:
            m = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise TablesError(f"{path}: cannot read metrics.json ({e})") from None
    if not isinstance(m, dict) or not is_number(m.get("test_error")):
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


def precision(metrics: dict) -> str | None:
    """'bf16' or 'tf32' for a run not computed in float32 (--precision), else None."""
    name = (metrics.get("config") or {}).get("precision") or "fp32"
    return None if name == "fp32" else name


def verdict_bound(tol: float, s_pub: float, n_pub: int, s_ours: float | None, n: int) -> float:
    """How far our mean over n seeds may lie from a published mean over n_pub trials:
    max(tol, 2 sqrt(s_pub^2 / n_pub + s_ours^2 / n)), about two standard errors of the
    difference of the two means. With one seed ours has no spread of its own: the
    published one stands for it."""
    s = s_pub if s_ours is None else s_ours
    return max(tol, 2 * math.sqrt(s_pub ** 2 / n_pub + s ** 2 / n))


class Cell:
    """One row of cells.tsv with its finished runs."""

    def __init__(self, row: dict, runs: list[dict], expected_seeds: int):
        self.row = row
        self.runs = runs
        self.expected = expected_seeds
        # the error the entry and the verdict use: the one the published number is
        # (runs/selection.py); a holdout row's is the validation-selected one
        self.protocol = protocol(row)
        self.key = ("val_selected_test_error" if self.protocol == "holdout" else
                    "best_test_error" if compares_best_epoch(row) else "test_error")
        self.errors = [e for e in (error_of(m, self.key) for m in runs) if e is not None]
        self.paper = published_error(row)         # the paper's number, as printed
        self.published = compared_error(row)      # what the verdict compares with
        budgets = list(dict.fromkeys(b for b in (budget(m, row) for m in runs) if b))
        self.budget = "; ".join(budgets) or None
        self.precision = ", ".join(dict.fromkeys(p for p in map(precision, runs) if p)) or None

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
        """'8.41', '8.41 ± 0.05', '8.41 ± 0.05 [2/3 seeds, 2/200 ep, bf16]' or 'not run'."""
        if not self.n:
            return NOT_RUN
        text = _fmt(self.mean) + (f" ± {_fmt(self.std)}" if self.std is not None else "")
        notes = []
        if self.n < self.expected:
            notes.append(f"{self.n}/{self.expected} seeds")
        if self.budget:
            notes.append(self.budget)
        if self.precision:  # not float32, as the paper: said in every table
            notes.append(self.precision)
        return text + (f" [{', '.join(notes)}]" if notes else "")

    def published_text(self) -> str:
        """'8.37'; '12.75 ± 0.11' (a mean over trials); '0.99†' (measured on other data);
        '0.99† / 0.89 current' (and the authors' own number on our data); 'n/a'."""
        if self.paper is None:
            return "n/a"
        spread = published_spread(self.row)
        text = _fmt(self.paper) + (f" ± {_fmt(spread[0])}" if spread else "")
        text += OTHER_DATA if published_data(self.row) else ""
        current = current_data_error(self.row)
        return text + (f" / {_fmt(current)} current" if current is not None else "")

    def entry(self) -> str:
        """A table entry: ours (published)."""
        return f"{self.ours()} ({self.published_text()})"

    def delta(self) -> float | None:
        if self.n and self.published is not None:
            return self.mean - self.published
        return None

    def verdict(self, tol: float) -> str:
        if not self.n:
            return "not yet run"
        if self.budget:
            return "budget run (not compared)"
        if self.protocol == "holdout":   # the published numbers are the whole training set's
            return "holdout run (not compared)"
        if self.published is None:
            return "no published number"
        spread = published_spread(self.row)
        if spread:   # a published mean ± std of trials: the bound of verdict_bound, and our seeds
            bound = verdict_bound(tol, spread[0], spread[1], self.std, self.n)
            inside = abs(self.delta()) <= bound + 1e-9
            return (f"{'within' if inside else 'outside'} tolerance (±{bound:.2f}; "
                    f"{self.n} of {max(self.expected, self.n)} seeds)")
        inside = abs(self.delta()) <= tol + 1e-9
        return f"{'within' if inside else 'outside'} tolerance (±{tol:g})"

    def error_text(self, key: str) -> str:
        """One of selection.ERRORS over the seeds: '8.41', '8.41 ± 0.05', or '-' where no
        run has it (the validation-selected error of a run without --val-examples)."""
        values = [e for e in (error_of(m, key) for m in self.runs) if e is not None]
        if not values:
            return "-"
        return _fmt(statistics.fmean(values)) + (f" ± {_fmt(statistics.stdev(values))}" if len(values) > 1 else "")

    def cost(self) -> list[str]:
        """Backbone and head parameters, head multiply-adds per example (recipe/cost.py),
        peak memory and seconds per epoch, from the first run (the mean over seeds for time)."""
        m = self.runs[0]
        heads = m.get("head_params")
        if heads is None and isinstance(m.get("params_total"), int) and isinstance(m.get("params_backprop"), int):
            heads = m["params_total"] - m["params_backprop"]   # the same count, before metrics.json held it
        epochs = [e["epoch_seconds"] for r in self.runs for e in (r.get("history") or [])
                  if is_number(e.get("epoch_seconds"))]
        memory = m.get("peak_memory_bytes")
        macs = m.get("head_macs")
        if "head_macs" not in m and isinstance(m.get("config"), dict):   # recorded before the key existed
            macs = recorded_head_macs(m["config"])   # counted by the recipe (recipe/cost.py)
        return [_count(m.get("backbone_params", m.get("params_backprop"))), _count(heads), _count(macs),
                f"{memory / 2**20:.0f} MiB" if is_number(memory) and memory else "-",
                f"{statistics.fmean(epochs):.1f}" if epochs else "-"]

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


def _count(n) -> str:
    """A parameter or multiply-add count: '466,906', '12.3M', '1.2G'; '-' where unknown."""
    if not is_number(n):
        return "-"
    if n >= 1e9:
        return f"{n / 1e9:.2f}G"
    return f"{n / 1e6:.2f}M" if n >= 1e7 else f"{int(n):,}"


def _params_entry(cells: list[Cell]) -> str:
    ours = next((p for p in (c.params() for c in cells) if p is not None), None)
    pub = next((c.row["published_params"].strip() for c in cells if (c.row.get("published_params") or "").strip()), None)
    if ours is None:
        return pub or "-"
    mine = _millions(ours)
    return f"{mine} ({pub})" if pub and pub != mine else mine


def _tolerance(tolerance: Mapping[str, float] | float, dataset: str) -> float:
    if is_number(tolerance):
        return float(tolerance)
    return float(tolerance.get(dataset, tolerance["default"]))


def _markdown(headers: list[str], body: list[list[str]]) -> str:
    """A table as a pandas DataFrame, in markdown (DataFrame.to_markdown: tabulate's pipe
    format, every cell as its text)."""
    import pandas as pd   # here, not at the top: the report's figure steps need none (~1 s per process)
    frame = pd.DataFrame(body, columns=headers) if body else pd.DataFrame(columns=headers)
    return frame.to_markdown(index=False, tablefmt="pipe", disable_numparse=True,
                             colalign=("left",) * len(headers))


def _footnote(cells: list[Cell]) -> str | None:
    """The footnote of a table whose published numbers were measured on other data."""
    data = list(dict.fromkeys(d for d in (published_data(c.row) for c in cells) if d))
    if not data:
        return None
    text = (f"{OTHER_DATA} Published on the {' and the '.join(data)}; ours on the files our checksums "
            "pin (`docs/datasets.md`).")
    if any(current_data_error(c.row) is not None for c in cells):
        text += (" 'current': the authors' own test error on those files, reported after the paper; "
                 "the verdict compares with it.")
    return text


# --------------------------------------------------------------------------- tables

def compile_tables(rows: list[dict], runs: Mapping[str, list[dict]], *, expected_seeds: int = 1,
                   tolerance: Mapping[str, float] | float = 0.5, figure_prefix: str | None = None,
                   layers_prefix: str | None = None, pending_link: str | None = None,
                   scatter: str | None = None, intro: str = "", heading: str = "###") -> dict[str, str]:
    """Markdown for `rows` given `runs` ({cell: [metrics...]}, as load_runs gives).

    Returns {dataset: table, ..., "summary": table, "pending": the cells not yet run,
    "tables": the intro, the dataset tables and the summary together} ("tables" is what
    goes between a README's markers). The summary has a row per cell that has run and
    counts the rest. `figure_prefix`: a cell that has run links to
    <figure_prefix><cell>.png (its learning curve); `layers_prefix`: ... and to
    <layers_prefix><cell>.png (its per-layer figure); `pending_link`: where the summary
    says the list of cells not yet run is; `scatter`: a link to the scatter plot, shown
    once something has run."""
    cells = [Cell(r, list(runs.get(r["cell"], [])), expected_seeds) for r in rows]
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    columns = table_columns(rows)
    protocols = any(r.get("protocol") for r in rows)   # a grid with a protocol column: one row each
    out: dict[str, str] = {}
    for ds in datasets:
        mine = [c for c in cells if c.row["dataset"] == ds]
        body = []
        for net, prot in dict.fromkeys((c.row["network"], c.protocol) for c in mine):
            by_column = {column(c.row): c for c in mine if (c.row["network"], c.protocol) == (net, prot)}
            body.append([net, *([PROTOCOL_HEADINGS[prot]] if protocols else []),
                         _params_entry(list(by_column.values()))]
                        + [by_column[key].entry() if key in by_column else "-" for key in columns])
        note = _footnote(mine)
        out[ds] = (f"{heading} Results on {_title(ds, mine)}\n\n"
                   + _markdown(["Network", *(["Protocol"] if protocols else []), "#Params", *columns.values()], body)
                   + "\n" + (f"\n{note}\n" if note else ""))

    # the errors beside the compared one ("Ours"): the other two, the validation-selected
    # one only where a run has it (a grid without --val-examples, as the paper's)
    others = [k for k in ERRORS if all(k != c.key for c in cells)
              and (k != "val_selected_test_error" or any(error_of(m, k) is not None for c in cells for m in c.runs))]
    body = []
    counts = {"within": 0, "outside": 0, "budget": 0, "holdout": 0, "no published": 0, "not yet run": 0}
    for c in cells:
        tol = _tolerance(tolerance, c.row["dataset"])
        verdict = c.verdict(tol)
        for key in counts:
            if verdict.startswith(key):
                counts[key] += 1
        if not c.n:
            continue
        name = c.row["cell"]
        if figure_prefix is not None:
            name = f"[{name}]({figure_prefix}{name}.png)"
        delta = c.delta()
        line = [name, *([PROTOCOL_HEADINGS[c.protocol]] if protocols else []), str(c.n), c.published_text(),
                c.ours(), f"{delta:+.2f}" if delta is not None else "-", verdict,
                *[c.error_text(key) for key in others], c.wall_time()]
        if layers_prefix is not None:
            line.append(f"[layers]({layers_prefix}{c.row['cell']}.png)")
        body.append(line)
    headers = ["Cell", *(["Protocol"] if protocols else []), "Seeds", "Published", "Ours", "Delta", "Verdict",
               *[ERROR_HEADINGS[key] for key in others], "Wall time per seed"]
    headers += ["Per layer"] if layers_prefix is not None else []
    finished = len(cells) - counts["not yet run"]
    table = _markdown(headers, body) + "\n\n" if body else "No cell has finished yet.\n\n"
    waiting = ""
    if counts["not yet run"]:
        where = f" ([the list]({pending_link}))" if pending_link else ""
        waiting = f"; {counts['not yet run']} not yet run, shown as \"not run\" in the tables above{where}"
    summary = (f"{heading} Summary\n\n" + table
               + f"{len(cells)} cells: {finished} finished ({counts['within']} within tolerance, "
               f"{counts['outside']} outside, {counts['budget']} budget runs, "
               + (f"{counts['holdout']} holdout runs, " if protocols else "") +
               f"{counts['no published']} without a published number){waiting}.\n")
    out["summary"] = summary
    out["pending"] = _pending(cells, heading)
    out["cost"] = _cost(cells, heading)
    note = NOTE_BEST if any(c.key == "best_test_error" for c in cells) else NOTE
    parts = [p for p in (intro.strip(), note + (" " + NOTE_PROTOCOLS if protocols else "")) if p]
    if scatter and any(c.n for c in cells):
        parts.append(f"![ours vs published]({scatter})")
    parts += [out[ds] for ds in datasets] + [out["cost"], summary]
    out["tables"] = "\n\n".join(p.strip("\n") for p in parts) + "\n"
    return out


PROTOCOL_HEADINGS = {"whole": "whole (best test epoch)", "holdout": "holdout (validation-selected)"}
NOTE_PROTOCOLS = ("Protocol: `whole` rows train on the whole training set, as the papers did, and their "
                  "entry is the best test epoch's error, which the verdict compares with the published "
                  "number; `holdout` rows hold part of the training set out (config `peers.holdout`) and "
                  "their entry is the error at the epoch the held-out part selects, shown beside the "
                  "published number but not compared with it.")


def _title(dataset: str, cells: list[Cell]) -> str:
    """A dataset table's caption: the paper's, or, for a grid whose rows carry flags of
    their own (extra_flags: the field's, whose data flags differ from the paper's), the
    dataset's name and where its data is said."""
    if dataset not in SPECS:
        return dataset
    if not any((c.row.get("extra_flags") or "").strip() for c in cells):
        return SPECS[dataset].title
    return f"{dataset} (training split, augmentation and normalisation as each row's flags set them)"


ERROR_HEADINGS = {"test_error": "Last epoch", "best_test_error": "Best test epoch",
                  "val_selected_test_error": "Validation-selected"}


def table_columns(rows: list[dict]) -> dict[str, str]:
    """column key -> heading of the per-dataset tables: the paper's four losses for its
    grid; for a grid whose rows name their `column`, those, in file order."""
    if all(column(r) in LOSS_COLUMNS for r in rows):
        return dict(LOSS_COLUMNS)
    return {key: key for key in dict.fromkeys(column(r) for r in rows)}


def _cost(cells: list[Cell], heading: str) -> str:
    """Each finished cell's cost beside its error (recipe/cost.py, metrics.json)."""
    body = [[c.row["cell"], c.ours(), *c.cost()] for c in cells if c.n]
    headers = ["Cell", "Ours", "Backbone params", "Head params", "Head MACs / example", "Peak memory",
               "s / epoch"]
    table = _markdown(headers, body) + "\n" if body else "No cell has finished yet.\n"
    return (f"{heading} Cost\n\n" + table + "\nHead params and multiply-adds (MACs): the local heads "
            "(auxiliary networks) apart from the backbone, forward, per example, from `locallearn/recipe/cost.py` "
            "(\"-\": no cost model of that network yet); peak memory: the device's (the CPU's: the process's "
            "peak RSS); s / epoch: training, the mean over epochs and seeds.\n")


def _pending(cells: list[Cell], heading: str) -> str:
    """The cells not yet run, by dataset."""
    waiting = [c for c in cells if not c.n]
    lines = [f"{heading} Not yet run\n", f"{len(waiting)} of {len(cells)} cells have no finished run."]
    for ds in dict.fromkeys(c.row["dataset"] for c in waiting):
        names = [f"`{c.row['cell']}`" for c in waiting if c.row["dataset"] == ds]
        lines.append(f"- {ds} ({len(names)}): {', '.join(names)}")
    return "\n".join(lines).replace(".\n- ", ".\n\n- ", 1) + "\n"


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


def field_points(rows: list[dict], runs: Mapping[str, list[dict]]) -> list[dict]:
    """One point per finished cell for figures.plot_field: its method (table column),
    network, dataset, our error (the one its verdict uses, with its name), and its cost:
    peak memory (MiB) and the heads' and backbone's multiply-adds per example where known."""
    points = []
    for r in rows:
        c = Cell(r, list(runs.get(r["cell"], [])), 1)
        if not c.n:
            continue
        memory = [m["peak_memory_bytes"] / 2**20 for m in c.runs if is_number(m.get("peak_memory_bytes"))]
        macs = [m.get("backbone_macs"), m.get("head_macs")] if (m := c.runs[0]) else [None, None]
        points.append({"cell": r["cell"], "method": table_columns([r])[column(r)], "network": r["network"],
                       "dataset": r["dataset"], "error": c.mean, "error_name": ERROR_HEADINGS[c.key].lower(),
                       "memory_mib": statistics.fmean(memory) if memory else None,
                       "macs": sum(macs) if all(is_number(x) for x in macs) else None,
                       "budget": c.budget})
    return points


# --------------------------------------------------------------------------- summary.csv, summary.tex

SUMMARY_COLUMNS = ("cell", "dataset", "network", "column", "protocol", "seeds", "expected_seeds", "published",
                   "published_std", "ours", "ours_std", "delta", "verdict", "last_epoch", "best_test_epoch",
                   "validation_selected", "backbone_params", "head_params", "head_macs", "peak_memory_mib",
                   "seconds_per_epoch", "budget", "precision")


def summary_frame(rows: list[dict], runs: Mapping[str, list[dict]], *, expected_seeds: int = 1,
                  tolerance: Mapping[str, float] | float = 0.5) -> pd.DataFrame:
    """One row per cell, the numbers of the tables (not their text): the three errors
    (means over seeds), seeds, published, delta, verdict, protocol, cost. Empty where a
    cell has not run. Written as summary.csv, and as summary.tex."""
    import pandas as pd
    records = []
    for r in rows:
        c = Cell(r, list(runs.get(r["cell"], [])), expected_seeds)
        spread = published_spread(r)
        rec = {"cell": r["cell"], "dataset": r["dataset"], "network": r["network"], "column": column(r),
               "protocol": c.protocol, "seeds": c.n, "expected_seeds": expected_seeds, "published": c.published,
               "published_std": spread[0] if spread else None, "ours": c.mean, "ours_std": c.std,
               "delta": c.delta(), "verdict": c.verdict(_tolerance(tolerance, r["dataset"])),
               "budget": c.budget, "precision": c.precision}
        for key, name in (("test_error", "last_epoch"), ("best_test_error", "best_test_epoch"),
                          ("val_selected_test_error", "validation_selected")):
            values = [e for e in (error_of(m, key) for m in c.runs) if e is not None]
            rec[name] = statistics.fmean(values) if values else None
        if c.n:
            m = c.runs[0]
            epochs = [e["epoch_seconds"] for run in c.runs for e in (run.get("history") or [])
                      if is_number(e.get("epoch_seconds"))]
            memory = m.get("peak_memory_bytes")
            rec.update(backbone_params=m.get("backbone_params", m.get("params_backprop")),
                       head_params=m.get("head_params"), head_macs=m.get("head_macs"),
                       peak_memory_mib=memory / 2**20 if is_number(memory) and memory else None,
                       seconds_per_epoch=statistics.fmean(epochs) if epochs else None)
        records.append(rec)
    return pd.DataFrame(records, columns=list(SUMMARY_COLUMNS))


def summary_latex(frame: pd.DataFrame) -> str:
    """The summary's finished cells as a LaTeX table (booktabs): cell, protocol, seeds,
    published, ours ± std, delta, verdict."""
    import pandas as pd
    done = frame[frame["seeds"] > 0]

    def num(x, fmt="{:.2f}"):
        return "" if x is None or pd.isna(x) else fmt.format(x)
    body = [[r.cell, r.protocol, r.seeds, num(r.published),
             num(r.ours) + (f" ± {num(r.ours_std)}" if not pd.isna(r.ours_std) else ""), num(r.delta, "{:+.2f}"),
             r.verdict] for r in done.itertuples()]
    return tabulate(body, headers=["Cell", "Protocol", "Seeds", "Published", "Ours", "Delta", "Verdict"],
                    tablefmt="latex_booktabs", disable_numparse=True) + "\n"


# --------------------------------------------------------------------------- files

def write_tables(tables: Mapping[str, str], out_dir: str | Path) -> list[Path]:
    """<out_dir>/<dataset lower>.md, summary.md and tables.md (all of them together)."""
    out_dir = Path(out_dir)
    paths = []
    for key, text in tables.items():
        p = out_dir / f"{key.lower()}.md"
        write_if_changed(p, text)
        paths.append(p)
    return paths
