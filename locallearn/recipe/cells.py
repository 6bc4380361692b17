"""A grid as data: one row of a cells table per published run. The workflow has two
grids in this one format: the paper's (workflow/config/cells.tsv) and the field's,
AugLocal's table (workflow/config/peers.tsv, docs/peers.md).

This module is the only place that turns a row into `locallearn train` flags, so a
recipe is written once (in the TSV) and read by the tests, the CLI and the workflow.
"""
from __future__ import annotations

import csv
import shlex
from pathlib import Path

from ..methods import registry

# The columns every grid has (the schema's `required`). A grid in the paper's format
# (no `extra_flags` column: its rows have nowhere else to state their recipe) has every
# recipe column besides, PAPER_FORMAT_COLUMNS, so that a column left out is an error, not
# a silent default; a field grid (with `extra_flags`) has only the columns its rows set.
COLUMNS = ("cell", "dataset", "network", "model", "loss", "lr", "epochs", "published_error")
PAPER_FORMAT_COLUMNS = ("feat_mult", "num_layers", "num_hidden", "bio", "nonlin", "dropout", "milestones",
                        "dim_in_decoder", "beta", "cutout", "length", "classes_per_batch",
                        "classes_per_batch_until_epoch", "published_params")
# Optional: where a published number was measured on other data than ours
# (`published_data`: which data, said in the tables' footnote) and the authors' own
# number on the data we train on (`current_data_error`), which the verdict then uses.
#
# Optional too, for grids beyond the paper's: `column` (the table column a row fills,
# default: its loss's column of the paper's tables), `extra_flags` (more `locallearn
# train` flags of the recipe, e.g. a ResNet's K and optimiser), `published_epoch`
# (`best`: the published number is a best-test-epoch number, and the verdict compares
# ours at the best test epoch; empty: the last epoch), `published_source` (paper and
# table of the published number) and `assumption` (what of the recipe no source gave).
# `protocol` (whole: trained on the whole training set, as the papers trained; holdout:
# a part held out, whose error selects the epoch; empty: whole) says how a row trains.
# `published_std` and `published_trials`: the spread of a published mean over its trials.
OPTIONAL_COLUMNS = ("published_data", "current_data_error", "column", "extra_flags", "published_epoch",
                    "published_source", "assumption", "protocol", "published_std", "published_trials")
PROTOCOLS = ("whole", "holdout")
# The `loss` column: global backprop, the paper's local losses, or another method's
# heads (--method; the method registry's names, plugins included: docs/methods.md).
PAPER_LOSSES = ("backprop", "pred", "sim", "predsim")


def losses() -> tuple[str, ...]:
    """Every value the `loss` column takes: the paper's, then every registered method but
    the paper's own (whose losses are the paper's)."""
    return PAPER_LOSSES + tuple(n for n in registry.names() if n != "paper")


def read_cells(path: str | Path) -> list[dict]:
    """Rows of a cells table (the workflow's is workflow/config/cells.tsv) as dicts of
    strings, in file order. Column checks live in the workflow's schema."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


# The recipe columns that are one flag each, in the order a command shows them. A grid
# has the columns its rows set: an absent column, or an empty field, gives no flag (the
# trainer's default). The paper's grid sets them all.
FLAG_COLUMNS = (("model", "--model"), ("dataset", "--dataset"), ("feat_mult", "--feat-mult"),
                ("num_layers", "--num-layers"), ("num_hidden", "--num-hidden"), ("nonlin", "--nonlin"),
                ("dropout", "--dropout"), ("lr", "--lr"), ("epochs", "--epochs"),
                ("milestones", "--lr-decay-milestones"), ("dim_in_decoder", "--dim-in-decoder"), ("beta", "--beta"))


def recipe_args(row: dict) -> list[str]:
    """The `locallearn train` flags of one row: the authors' command for that cell."""
    args = []
    for col, flag in FLAG_COLUMNS:
        value = str(row.get(col) or "").strip()
        if value:
            args += [flag, *value.split()] if col == "milestones" else [flag, value]
    if row["loss"] == "backprop":
        args.append("--backprop")
    elif row["loss"] in PAPER_LOSSES:
        args += ["--loss-sup", row["loss"]]
    else:
        args += ["--method", row["loss"]]
    if str(row.get("bio")) == "1":
        args.append("--bio")
    if str(row.get("cutout")) == "1":
        args += ["--cutout", "--length", row["length"]]
    if int(row.get("classes_per_batch") or 0) > 0:
        args += ["--classes-per-batch", row["classes_per_batch"],
                 "--classes-per-batch-until-epoch", row["classes_per_batch_until_epoch"]]
    return args + shlex.split(row.get("extra_flags") or "")


def column(row: dict) -> str:
    """The table column the row fills: its `column`, else its loss (the paper's columns)."""
    return (row.get("column") or "").strip() or row["loss"]


def protocol(row: dict) -> str:
    """How the row trains: `whole` (the default) or `holdout` (PROTOCOLS)."""
    return (row.get("protocol") or "").strip() or "whole"


def compares_best_epoch(row: dict) -> bool:
    """Whether the published number is a best-test-epoch one (`published_epoch` best)."""
    return (row.get("published_epoch") or "").strip() == "best"


# Flags of a recipe that describe its own dataset's files and pixels: a recipe moved onto
# another dataset leaves them out (the crop and flip flags move with it).
DATASET_FLAGS = ("--svhn-split", "--pixel-mean", "--pixel-std")


def without_flags(args: list[str], flags: tuple[str, ...]) -> list[str]:
    """`args` without each of `flags` and the values that follow it."""
    out, skipping = [], False
    for a in args:
        if a.startswith("--"):
            skipping = a in flags
        if not skipping:
            out.append(a)
    return out


def moved_to(row: dict, dataset: str, prefix: str) -> dict:
    """The row's recipe on another dataset, as a budget run of it (the peers-quick
    preset): cell `<prefix>-<the rest of its name>` (`moved_from`: its own), without its
    DATASET_FLAGS, no published number to compare."""
    rest = row["cell"].split("-", 1)[1] if "-" in row["cell"] else row["cell"]
    extra = " ".join(without_flags(shlex.split(row.get("extra_flags") or ""), DATASET_FLAGS))
    return dict(row, dataset=dataset, cell=f"{prefix}-{rest}", moved_from=row["cell"], published_error="",
                published_params="", current_data_error="", published_data="", extra_flags=extra)


def published_params_millions(row: dict) -> float | None:
    """'2.9M' -> 2.9; empty (the bio rows) -> None."""
    text = (row.get("published_params") or "").strip()
    return float(text.rstrip("M")) if text else None


def published_error(row: dict) -> float | None:
    text = (row.get("published_error") or "").strip()
    return float(text) if text else None


def published_spread(row: dict) -> tuple[float, int] | None:
    """(standard deviation, trials) of a published mean (`published_std`,
    `published_trials`: InfoPro's Table 2 gives the mean ± std of 5), else None."""
    std, trials = (row.get("published_std") or "").strip(), (row.get("published_trials") or "").strip()
    return (float(std), int(trials)) if std and trials else None


def published_data(row: dict) -> str | None:
    """What the published number was measured on, where that is not our data, else None."""
    return (row.get("published_data") or "").strip() or None


def current_data_error(row: dict) -> float | None:
    """The authors' test error on the data we train on, where it differs from the paper's."""
    text = (row.get("current_data_error") or "").strip()
    return float(text) if text else None


def compared_error(row: dict) -> float | None:
    """The number our verdict compares with: the authors' number on our data where there
    is one, else the published one."""
    current = current_data_error(row)
    return current if current is not None else published_error(row)
