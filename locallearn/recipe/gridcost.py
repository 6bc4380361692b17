"""The grid's measured cost, as data (no torch import): the table `locallearn bench
--grid` writes (bench/gridbench.py times the steps) and the workflow's `runtime` resource reads
(locallearn/workflow/plan.py), instead of the FLOP model (recipe/cost.py) where it exists.

A table is one JSON file per kind of device and precision,
`<results_dir>/grid-cost/<cuda|cpu>-<precision>.json`:

  device, torch, precision, date, steps, batch_size, scale   how it was measured
  cells: {cell: {timed_as, seconds_per_step, seconds_per_test_image,
                 seconds_per_epoch, epochs, hours}}          per row of cells.tsv
  total_hours                                                 the grid, one seed

A cell's seconds per epoch = ceil(train images / batch) x seconds per step + test
images x seconds per test image, so a budget (fewer epochs or images) scales it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .specs import SPECS, DatasetSpec

TABLE_DIR = "grid-cost"
# The columns of cells.tsv that decide a training step's work (with the dataset's
# shape and class count; `extra_flags`: a field grid's K, method depth and optimiser):
# cells equal in these are timed once, with the first one's
# recipe. Dropout, cutout and the class sampler change a step's time by little (masks,
# one fill, an index permutation) and are left out.
STEP_COLUMNS = ("model", "feat_mult", "num_layers", "num_hidden", "loss", "bio", "dim_in_decoder", "extra_flags")


def table_path(results_root: str | Path, device_kind: str, precision: str) -> Path:
    return Path(results_root) / TABLE_DIR / f"{device_kind}-{precision}.json"


def step_key(row: dict) -> tuple:
    """What decides the cost of one training step of a row: its network, loss and the
    input's shape (MNIST, Fashion-MNIST and Kuzushiji-MNIST share one)."""
    s = SPECS[row["dataset"]]
    return (s.channels, s.size, s.num_classes) + tuple(str(row.get(c, "")) for c in STEP_COLUMNS)


def epoch_seconds(entry: dict, n_train: int, n_test: int, batch_size: int) -> float:
    return math.ceil(n_train / batch_size) * entry["seconds_per_step"] + n_test * entry["seconds_per_test_image"]


def examples_seen(spec: DatasetSpec, max_train: int = 0, max_test: int = 0) -> tuple[int, int]:
    """The training and test examples of one epoch: the dataset's as the recipe reads it
    (specs.run_spec: SVHN's standard split has fewer), cut to a budget's
    --max-train-examples / --max-test-examples where set (0: the whole split)."""
    return (min(spec.train_size, max_train) if max_train else spec.train_size,
            min(spec.test_size, max_test) if max_test else spec.test_size)


def cell_hours(table: dict, row: dict, epochs: int | None = None, max_train: int = 0, max_test: int = 0,
               spec: DatasetSpec | None = None) -> float | None:
    """Measured device hours of one run of `row` (None: the table lacks the cell); `spec`:
    its dataset as its recipe reads it (default: the dataset's own)."""
    entry = table["cells"].get(row["cell"])
    if entry is None:
        return None
    n_train, n_test = examples_seen(spec or SPECS[row["dataset"]], max_train, max_test)
    return (epochs or int(row["epochs"])) * epoch_seconds(entry, n_train, n_test, table["batch_size"]) / 3600


def load_table(path: str | Path) -> dict | None:
    """The measured table at `path`, or None where nobody measured (or it is unreadable)."""
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if table.get("scale", 1) != 1:  # a test of the command on shrunken networks: no use for runtimes
        return None
    return table


def markdown(table: dict, rows: list[dict]) -> str:
    """Per dataset: cells and measured hours (one seed), then the total: the README's table."""
    by_ds: dict[str, list[float]] = {}
    for r in rows:
        h = table["cells"].get(r["cell"], {}).get("hours")
        if h is not None:
            by_ds.setdefault(r["dataset"], []).append(h)
    lines = [f"Measured on {table['device']}, torch {table['torch']}, precision {table['precision']}, "
             f"{table['date']} ({table['steps']} timed steps per network, synthetic inputs):", "",
             f"| Dataset | Cells | Measured {'GPU' if table.get('device_kind') == 'cuda' else 'CPU'}-hours (1 seed) |", "|:--|--:|--:|"]
    for ds, hs in by_ds.items():
        lines.append(f"| {ds} | {len(hs)} | {sum(hs):.1f} |")
    lines.append(f"| **all** | {sum(map(len, by_ds.values()))} | **{table['total_hours']:.1f}** |")
    return "\n".join(lines) + "\n"
