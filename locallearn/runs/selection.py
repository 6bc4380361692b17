"""Which epoch's test error a run reports, named for what it is (docs/peers.md):

- `test_error`: the last epoch's (the default; the paper's grid's verdict);
- `best_test_error`: the best over the epochs, "best test epoch (as the papers
  report)": the test set picks the model, as AugLocal's, InfoPro's and DGL's code
  report it (their train.py keeps `best_prec1`);
- `val_selected_test_error`: the test error at the epoch with the lowest error on a
  validation split held out from the training set (`--val-examples N`).

Ties go to the earliest epoch. Which training examples form the validation split is
data/batches.py's `held_out`.
Importing this module does not import torch.
"""
from __future__ import annotations

from .runstate import is_number

# The three errors a table may show: metrics.json key -> what the tables call it.
ERRORS = {
    "test_error": "last epoch",
    "best_test_error": "best test epoch (as the papers report)",
    "val_selected_test_error": "validation-selected epoch",
}


def reported_errors(history: list[dict]) -> dict:
    """The best-test-epoch and (where the history has validation errors) the
    validation-selected errors of a run's history, with the epochs chosen."""
    if not history:
        return {}
    best = min(history, key=lambda e: (e["test_error"], e["epoch"]))
    out = {"best_test_error": best["test_error"], "best_test_epoch": best["epoch"]}
    validated = [e for e in history if is_number(e.get("val_error"))]
    if validated:
        chosen = min(validated, key=lambda e: (e["val_error"], e["epoch"]))
        out.update(val_selected_test_error=chosen["test_error"], val_selected_epoch=chosen["epoch"],
                   val_selected_val_error=chosen["val_error"])
    return out


def error_of(metrics: dict, key: str) -> float | None:
    """One of ERRORS from a metrics.json; a run recorded before these keys existed
    gets its best test epoch from its history (it has no validation split)."""
    value = metrics.get(key)
    if is_number(value):
        return float(value)
    if key != "test_error" and isinstance(metrics.get("history"), list):
        value = reported_errors(metrics["history"]).get(key)
        return float(value) if is_number(value) else None
    return None
