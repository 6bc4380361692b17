"""PNG figures with matplotlib's Agg canvas (no display, no pyplot global state, safe in
jobs and threads): learning curves of one cell (one line per seed) and the scatter of
reproduced vs published error.

    plot_curves({"seed 1": metrics["history"], ...}, "curve.png", "fmnist-mlp-pred")

The trainer draws one run's curve with it; the workflow draws every seed of a cell.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

from .atomic import atomic_write

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
    pts = [(h["epoch"], h[key]) for h in history if isinstance(h.get(key), (int, float))]
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


def plot_cell(runs: list[dict], path: str | Path, row: dict) -> Path:
    """The curves of every seed of one cell (`runs`: metrics.json dicts)."""
    from .cells import published_error

    curves = {f"seed {m.get('seed', i + 1)}": m.get("history") or [] for i, m in enumerate(runs)}
    epochs = max((m.get("epochs") or 0) for m in runs) if runs else 0
    budget = f" ({epochs}/{row['epochs']} epochs)" if epochs and str(epochs) != str(row["epochs"]) else ""
    return plot_curves(curves, path, f"{row['cell']}{budget}", published=published_error(row))


def plot_scatter(points: list[dict], path: str | Path, title: str = "ours vs published") -> Path:
    """Our final test error against the published one, log-log, one colour per dataset,
    error bars = std over seeds, the diagonal y = x. `points`: dicts with dataset,
    published, ours, std (see tables.scatter_points)."""
    fig = Figure(figsize=(6.0, 6.0))
    ax = fig.add_subplot(1, 1, 1)
    if not points:
        ax.text(0.5, 0.5, "no finished runs yet", ha="center", va="center", transform=ax.transAxes)
    else:
        datasets = list(dict.fromkeys(p["dataset"] for p in points))
        for i, ds in enumerate(datasets):
            mine = [p for p in points if p["dataset"] == ds]
            ax.errorbar([p["published"] for p in mine], [p["ours"] for p in mine],
                        yerr=[p.get("std") or 0.0 for p in mine], fmt="o", ms=5, capsize=2,
                        color=_COLORS[i % len(_COLORS)], label=ds)
        vals = [v for p in points for v in (p["published"], p["ours"]) if v > 0]
        lo, hi = (min(vals) / 1.5, max(vals) * 1.5) if vals else (0.1, 100)
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls="--", label="y = x")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        _plain_log_ticks(ax.xaxis)
        _plain_log_ticks(ax.yaxis)
        ax.legend(fontsize=8)
        if any(p.get("budget") for p in points):
            title += " (budget runs)"
    ax.set_xlabel("published test error (%)")
    ax.set_ylabel("our test error (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)
