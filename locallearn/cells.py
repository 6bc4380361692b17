"""The paper's grid as data: one row of a cells table per published run (the workflow
passes its own, workflow/config/cells.tsv).

This module is the only place that turns a row into `locallearn train` flags, so a
recipe is written once (in the TSV) and read by the tests, the CLI and the workflow.
"""
from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = (
    "cell", "dataset", "network", "model", "feat_mult", "num_layers", "num_hidden", "loss",
    "bio", "nonlin", "dropout", "lr", "epochs", "milestones", "dim_in_decoder", "beta",
    "cutout", "length", "classes_per_batch", "classes_per_batch_until_epoch",
    "published_error", "published_params",
)
# Optional: where a published number was measured on other data than ours
# (`published_data`: which data, said in the tables' footnote) and the authors' own
# number on the data we train on (`current_data_error`), which the verdict then uses.
OPTIONAL_COLUMNS = ("published_data", "current_data_error")
LOSSES = ("backprop", "pred", "sim", "predsim")


def read_cells(path: str | Path) -> list[dict]:
    """Rows of a cells table (the workflow's is workflow/config/cells.tsv) as dicts of
    strings, in file order. Column checks live in the workflow's schema."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def recipe_args(row: dict) -> list[str]:
    """The `locallearn train` flags of one row: the authors' command for that cell."""
    args = [
        "--model", row["model"], "--dataset", row["dataset"],
        "--feat-mult", row["feat_mult"], "--num-layers", row["num_layers"],
        "--num-hidden", row["num_hidden"], "--nonlin", row["nonlin"],
        "--dropout", row["dropout"], "--lr", row["lr"], "--epochs", row["epochs"],
        "--lr-decay-milestones", *row["milestones"].split(),
        "--dim-in-decoder", row["dim_in_decoder"], "--beta", row["beta"],
    ]
    if row["loss"] == "backprop":
        args.append("--backprop")
    else:
        args += ["--loss-sup", row["loss"]]
    if str(row["bio"]) == "1":
        args.append("--bio")
    if str(row["cutout"]) == "1":
        args += ["--cutout", "--length", row["length"]]
    if int(row["classes_per_batch"] or 0) > 0:
        args += ["--classes-per-batch", row["classes_per_batch"],
                 "--classes-per-batch-until-epoch", row["classes_per_batch_until_epoch"]]
    return args


def published_params_millions(row: dict) -> float | None:
    """'2.9M' -> 2.9; empty (the bio rows) -> None."""
    text = (row.get("published_params") or "").strip()
    return float(text.rstrip("M")) if text else None


def published_error(row: dict) -> float | None:
    text = (row.get("published_error") or "").strip()
    return float(text) if text else None


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
