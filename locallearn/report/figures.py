"""PNG figures with matplotlib's Agg canvas (no display, no pyplot global state, safe in
jobs and threads): learning curves of one cell (one line per seed, the published error
as a dotted line), one cell's layers over the epochs (each hidden layer's local error or
local loss beside the output's errors), and, per cell, our error minus the published
one against the verdict's tolerance (the "scatter", results/<preset>/figures/scatter.png).

    plot_curves({"seed 1": metrics["history"], ...}, "curve.png", "fmnist-mlp-pred")

The trainer draws one run's curve with it (handed over by `locallearn train`); the
workflow draws every seed of a cell.
"""
from __future__ import annotations

import json
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

from ..atomic import atomic_write
from ..runs.runstate import CURVE, METRICS, is_number, recorded_run_name

_LOG_TICKS = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]
_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]


def _save(fig: Figure, path: str | Path) -> Path:
    """Write atomically (a half-written PNG is never seen by a reader)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def _plain_log_ticks(axis) -> None:
    """0.5, 1, 2, 5 ... instead of 5x10^-1 on a log axis."""
    axis.set_major_locator(FixedLocator(_LOG_TICKS))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(h["epoch"], h[key]) for h in history if is_number(h.get(key))]
    return [p[0] for p in pts], [float(p[1]) for p in pts]


def plot_curves(curves: dict[str, list[dict]], path: str | Path, title: str,
                published: float | None = None) -> Path:
    """Test error (solid) and train error (dashed, dropout active) per epoch, one colour
    per label (a seed); `published`: the paper's final test error as a dotted line.
    `curves` maps a label to a metrics.json `history` list."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    values: list[float] = []
    for i, (label, history) in enumerate(curves.items()):
        color = _COLORS[i % len(_COLORS)]
        x, y = _series(history or [], "test_error")
        if x:
            ax.plot(x, y, color=color, lw=1.6, marker="o" if len(x) < 12 else None, ms=3,
                    label=f"{label} test")
            values += y
        x, y = _series(history or [], "train_error")
        if x:
            ax.plot(x, y, color=color, lw=1.0, ls="--", alpha=0.7, label=f"{label} train")
            values += y
    if published is not None:
        ax.axhline(published, color="black", ls=":", lw=1.2, label=f"published {published:.2f}")
        values.append(published)
    if not values:
        ax.text(0.5, 0.5, "no epochs recorded", ha="center", va="center", transform=ax.transAxes)
    elif min(values) > 0 and max(values) / min(values) > 8:
        ax.set_yscale("log")
    if ax.get_yscale() == "log":
        _plain_log_ticks(ax.yaxis)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if values:
        ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def draw_run_curve(path: str | Path, metrics: dict) -> Path:
    """A run folder's curve.png: its own history (metrics.json-shaped), titled with its
    run name. `locallearn train` hands it to the trainer, which draws it at the end of a
    run; draw_missing_curve draws it where a finished folder lacks it."""
    return plot_curves({f"seed {metrics.get('seed', '?')}": metrics.get("history") or []}, path,
                       title=str(metrics.get("run_name") or Path(path).parent.name))


def draw_missing_curve(folder: str | Path) -> Path | None:
    """A finished run folder's curve.png where it lacks one (a committed run, or a run
    copied without it), drawn as the trainer draws it; None where it has one. Drawn
    before the MLflow mirror, which uploads what exists (track/mirror.py)."""
    folder = Path(folder).resolve()
    curve = folder / CURVE
    if curve.is_file():
        return None
    metrics = json.loads((folder / METRICS).read_text())
    return draw_run_curve(curve, {**metrics, "run_name": recorded_run_name(folder, metrics)})


def draw_missing_curves(results: str | Path) -> list[Path]:
    """draw_missing_curve for every finished run folder of a preset
    (layout.finished_run_folders): what `locallearn tracking sync` and the tables'
    mirror draw before they mirror."""
    from ..layout import finished_run_folders
    return [p for p in map(draw_missing_curve, finished_run_folders(results)) if p is not None]


def plot_cell(runs: list[dict], path: str | Path, row: dict) -> Path:
    """The curves of every seed of one cell (`runs`: metrics.json dicts)."""
    from ..recipe.cells import published_error

    curves = {f"seed {m.get('seed', i + 1)}": m.get("history") or [] for i, m in enumerate(runs)}
    epochs = max((m.get("epochs") or 0) for m in runs) if runs else 0
    budget = f" ({epochs}/{row['epochs']} epochs)" if epochs and str(epochs) != str(row["epochs"]) else ""
    return plot_curves(curves, path, f"{row['cell']}{budget}", published=published_error(row))


# What a hidden layer's local signal is (metrics.json history "local" entries): pred and
# predsim train a local classifier, whose error on the training batches is recorded
# (except under --bio, fit.history_entry); sim has no classifier, only its loss (matching
# similarity matrices); backprop has no local loss at all.
NO_LOCAL_ERROR = {
    "backprop": "backprop: no local losses; the whole network learns from the output's loss",
    "sim": "sim: no local classifier, so no local error; each layer's local loss is shown (right axis)",
    "bio": "bio: local errors are not recorded; each layer's local loss is shown (right axis)",
}


def plot_layers(run: dict, path: str | Path, row: dict) -> Path:
    """Write layers_figure(run, row) to `path`."""
    return _save(layers_figure(run, row), path)


def layers_figure(run: dict, row: dict) -> Figure:
    """One run's layers over the epochs: each hidden layer's local error on the training
    batches (pred, predsim) or its local loss (sim, on a second axis), beside the output
    layer's training error and test error. `run`: a metrics.json dict; `row`: its cells.tsv row."""
    history = sorted(run.get("history") or [], key=lambda h: h["epoch"])
    loss = row["loss"]
    bio = str(row.get("bio", "0")) == "1"
    signal = None if loss == "backprop" else "loss" if loss == "sim" or bio else "error"
    fig = Figure(figsize=(7.2, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    x, y = _series(history, "train_error")
    ax.plot(x, y, color="black", lw=1.2, ls="--", zorder=3, label="output: training error (dropout on)")
    x, y = _series(history, "test_error")
    ax.plot(x, y, color="black", lw=1.8, zorder=3, label="output: test error")
    layers = sorted({e["layer"] for h in history for e in h.get("local") or ()})
    other = ax.twinx() if signal == "loss" and layers else None
    for i, k in enumerate(layers):
        pts = [(h["epoch"], e.get(signal)) for h in history for e in h.get("local") or ()
               if e["layer"] == k and is_number(e.get(signal))]
        if not pts:
            continue
        target = other if other is not None else ax
        label = f"hidden layer {k + 1}: local " + ("error (training batches)" if signal == "error" else "loss (right axis)")
        target.plot([p[0] for p in pts], [p[1] for p in pts], color=_COLORS[i % len(_COLORS)], lw=1.2, label=label)
    ys = [v for line in ax.get_lines() for v in line.get_ydata()]
    if ys and min(ys) > 0 and max(ys) / min(ys) > 8:
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    if other is not None:
        other.set_ylabel("local loss (sim)")
    note = None if signal == "error" else NO_LOCAL_ERROR["bio" if bio and loss != "sim" else loss]
    title = f"{row['cell']}, seed {run.get('seed', '?')}: layers over the epochs"
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if other is not None:
        more = other.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="upper right")
    if not history:
        ax.text(0.5, 0.5, "no epochs recorded", ha="center", va="center", transform=ax.transAxes)
    return fig


def plot_scatter(points: list[dict], path: str | Path, title: str = "ours vs published") -> Path:
    """Write scatter_figure(points, title) to `path`."""
    return _save(scatter_figure(points, title), path)


def scatter_figure(points: list[dict], title: str = "ours vs published") -> Figure:
    """Each cell's difference to the paper, one labelled row per cell in table order:
    ours minus published test error (percentage points), the mean over seeds with its
    std as an error bar and each seed as a small circle, over the cell's tolerance band
    (shaded, ±tolerance) and zero (the published number). The text at the right gives
    both numbers, in red where the cell is outside its tolerance. `points`: dicts with cell, dataset, published, ours, std, and
    optionally errors (one per seed), tolerance, budget (see tables.scatter_points)."""
    n = len(points)
    fig = Figure(figsize=(7.2, 1.3 + 0.42 * max(n, 2)))
    ax = fig.add_subplot(1, 1, 1)
    if not points:
        ax.text(0.5, 0.5, "no finished runs yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    else:
        datasets = list(dict.fromkeys(p["dataset"] for p in points))
        color = {ds: _COLORS[i % len(_COLORS)] for i, ds in enumerate(datasets)}
        reach = 0.0
        bands = set()
        for y, p in enumerate(points):
            delta = p["ours"] - p["published"]
            std = p.get("std") or 0.0
            tol = p.get("tolerance")
            if tol:
                label = f"tolerance ±{tol:g}" if tol not in bands else None
                bands.add(tol)
                ax.fill_betweenx([y - 0.4, y + 0.4], -tol, tol, color="#2ca02c", alpha=0.15, lw=0, label=label)
            seeds = [e - p["published"] for e in p.get("errors") or []]
            if len(seeds) > 1:
                ax.plot(seeds, [y] * len(seeds), "o", ms=3.5, mfc="none", color=color[p["dataset"]], alpha=0.7)
            ax.errorbar([delta], [y], xerr=[std] if std else None, fmt="o", ms=6, capsize=3,
                        color=color[p["dataset"]])
            reach = max(reach, abs(delta) + std, *(abs(d) for d in seeds), tol or 0.0)
        ax.axvline(0.0, color="black", lw=0.9)
        lim = max(reach * 1.25, 0.25)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(n - 0.5, -0.5)   # the first cell on top, as in the tables
        ax.set_yticks(range(n))
        ax.set_yticklabels([p["cell"] for p in points], fontsize=8)
        for tick, p in zip(ax.get_yticklabels(), points):
            tick.set_color(color[p["dataset"]])
        text = ax.secondary_yaxis("right")
        text.set_yticks(range(n))
        text.set_yticklabels([f"{p['ours']:.2f}" + (f" ± {p['std']:.2f}" if p.get("std") else "")
                              + f" vs {p['published']:.2f}" for p in points], fontsize=8)
        text.tick_params(length=0)
        for tick, p in zip(text.get_yticklabels(), points):   # outside its tolerance: red
            if p.get("tolerance") and not p.get("budget") and abs(p["ours"] - p["published"]) > p["tolerance"] + 1e-9:
                tick.set_color("#d62728")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 5, 10], symmetric=True))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: "0" if abs(v) < 1e-12 else f"{v:+g}"))
        for ds in datasets:
            ax.plot([], [], "o", color=color[ds], label=ds)
        ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=4, frameon=False)
        if any(p.get("budget") for p in points):
            title += " (budget runs: not comparable)"
    ax.set_xlabel("ours − published test error (percentage points); right: ours vs published (%)")
    ax.set_title(title, pad=22 if points else 6)
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def plot_field(points: list[dict], path: str | Path, title: str = "error against cost") -> Path:
    """Write field_figure(points, title) to `path`."""
    return _save(field_figure(points, title), path)


def field_figure(points: list[dict], title: str = "error against cost") -> Figure:
    """The field in one picture: every finished cell (tables.field_points) at its test
    error against its cost, one panel per cost: the run's peak memory, and the
    forward multiply-adds per example (backbone + heads) where recipe/cost.py counts them. Colour: the
    method; marker: the network; the label names the dataset (and a budget run)."""
    fig = Figure(figsize=(11, 4.8))
    methods = list(dict.fromkeys(p["method"] for p in points))
    networks = list(dict.fromkeys(p["network"] for p in points))
    color = {m: _COLORS[i % len(_COLORS)] for i, m in enumerate(methods)}
    marker = {n: "osD^vP*X"[i % 8] for i, n in enumerate(networks)}
    for k, (key, label) in enumerate((("memory_mib", "peak memory (MiB)"),
                                      ("macs", "multiply-adds per example, forward (backbone + heads)"))):
        ax = fig.add_subplot(1, 2, k + 1)
        shown = [p for p in points if p.get(key)]
        for p in shown:
            ax.plot([p[key]], [p["error"]], marker[p["network"]], color=color[p["method"]], ms=7)
            ax.annotate(p["dataset"] + (" (budget)" if p.get("budget") else ""), (p[key], p["error"]),
                        textcoords="offset points", xytext=(4, 3), fontsize=7)
        if not shown:
            ax.text(0.5, 0.5, "no finished run with this cost" if points else "no finished runs yet",
                    ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(label)
        ax.set_ylabel("test error (%)" if k == 0 else "")
        ax.grid(alpha=0.3)
    names = sorted({p["error_name"] for p in points})
    handles = [fig.axes[0].plot([], [], "s", color=color[m], label=m)[0] for m in methods]
    handles += [fig.axes[0].plot([], [], marker[n], color="#444444", label=n)[0] for n in networks]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle(f"{title}; error: {', '.join(names) or '-'}", fontsize=10)
    fig.subplots_adjust(bottom=0.25)
    return fig
