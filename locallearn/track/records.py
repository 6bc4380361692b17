"""What an MLflow run of a run folder carries, and how the run is found again.

metrics.json is the source of truth; MLflow is its browsable mirror. A run carries the
recipe as params (config.NON_RECIPE left out), the grid's tags, MLflow's own tags (run
name, source, git commit, user) and the environment as `env.*` tags, all derived by
`mlflow_tags` from what metrics.json holds; its per-epoch scalars as metrics, one step per
epoch (`epoch_metrics`). A run logged live (track/live.py) and the same run mirrored later
(track/mirror.py) are built from these same functions, so they carry the same things.

The run of a folder is named in DIR/mlflow_run.json (`stored_run`); where that file was
lost, by the folder's tag and config hash (`tagged_run`, `run_of_hash`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..atomic import atomic_write_text
from ..credentials import redact_uri
from ..recipe.config import NON_RECIPE
from ..runs.runstate import is_number

RUN_FILE = "mlflow_run.json"
TAG_OUT_DIR = "locallearn.out_dir"
TAG_CONFIG_HASH = "config_hash"   # the trainer's tag; matched when a lost run file is recovered
TAG_ERROR = "locallearn.error"
TAG_GIT_REVISION = "git_revision"  # the trainer's tag, logged as MLflow's own (below)
TAG_GIT_COMMIT = "mlflow.source.git.commit"
SOURCE_TAGS = {"mlflow.source.name": "locallearn train", "mlflow.source.type": "LOCAL"}
# metrics.json "environment" keys (environment.describe) logged as env.<key> tags
ENV_KEYS = ("python", "torch", "torchvision", "cuda", "cudnn", "device", "device_name",
            "cpu_model", "threads", "precision")


# Per-epoch scalars of a metrics.json history entry, logged under the same names.
# "epoch" is logged too: its latest value is how a reopened run knows where it stopped.
EPOCH_KEYS = ("epoch", "train_error", "test_error", "train_loss", "train_loss_scaled",
              "test_loss", "local_loss", "lr", "epoch_seconds", "images_per_second", "val_error", "val_loss")
# metrics.json keys logged once at the end ("test_error" as final_test_error: its
# per-epoch series already owns every step).
SUMMARY_KEYS = {"test_error": "final_test_error", "train_error": "final_train_error",
                "params_backprop": "params_backprop", "params_total": "params_total",
                "wall_seconds": "wall_seconds", "peak_memory_bytes": "peak_memory_bytes",
                # the three reported errors (runs/selection.py) and the heads' cost (recipe/cost.py)
                "best_test_error": "best_test_error", "best_test_epoch": "best_test_epoch",
                "val_selected_test_error": "val_selected_test_error", "val_selected_epoch": "val_selected_epoch",
                "head_params": "head_params", "head_macs": "head_macs",
                "backbone_params": "backbone_params", "backbone_macs": "backbone_macs"}

MAX_PARAM_LENGTH = 6000   # MLflow 3 rejects longer param values
MAX_TAG_LENGTH = 8000     # ... and longer tag values


# --- what a run carries --------------------------------------------------------------

def run_params(config: dict) -> dict[str, str]:
    """A run's params: its recipe, every flag that decides its numbers (the flags of
    config.NON_RECIPE, where and how a run is watched, are left out)."""
    return param_strings({k: v for k, v in config.items() if k not in NON_RECIPE})


def mlflow_tags(record: dict) -> dict[str, str]:
    """A run's tags from a metrics.json-shaped record (keys used: tags, run_name,
    git_revision, versions, device, environment, config): the grid's tags, MLflow's own
    (mlflow.runName, mlflow.source.*, mlflow.source.git.commit, mlflow.user) and the
    environment as env.<key>. The "environment" record (environment.describe) wins;
    older metrics.json files fall back on their versions, device and config (threads,
    precision; device only once resolved, never "auto")."""
    config = record.get("config") or {}
    env: dict = {"precision": config.get("precision"), "threads": config.get("threads") or None}
    if config.get("no_cuda"):
        env["device"] = "cpu"
    elif config.get("device") not in (None, "auto", "cuda"):
        env["device"] = config["device"]
    env.update({k: v for k, v in (record.get("versions") or {}).items() if k in ENV_KEYS})
    if record.get("device"):
        env["device"] = record["device"]
    env.update(record.get("environment") or {})

    tags = {str(k): str(v) for k, v in (record.get("tags") or {}).items()}
    commit = tags.pop(TAG_GIT_REVISION, None) or record.get("git_revision")
    if commit and commit != "unknown":
        tags[TAG_GIT_COMMIT] = str(commit)
    if record.get("run_name"):
        tags["mlflow.runName"] = str(record["run_name"])
    tags.update(SOURCE_TAGS)
    if env.get("user"):
        tags["mlflow.user"] = str(env["user"])
    tags.update({f"env.{k}": str(env[k]) for k in ENV_KEYS if env.get(k) not in (None, "")})
    return {k: v[:MAX_TAG_LENGTH] for k, v in tags.items()}


def without_credentials(values: dict) -> dict:
    """Params and tags as they may be stored: any URI among them without user-info."""
    return {k: redact_uri(v) if isinstance(v, str) else v for k, v in values.items()}


def param_strings(params: dict) -> dict[str, str]:
    """Flags as MLflow params: lists joined with spaces, everything a string, values over
    MLflow's limit cut with a visible marker."""
    out = {}
    for key, value in params.items():
        if isinstance(value, (list, tuple)):
            value = " ".join(map(str, value))
        value = str(value)
        if len(value) > MAX_PARAM_LENGTH:
            value = value[:MAX_PARAM_LENGTH - 14] + "...[truncated]"
        out[str(key)] = value
    return out


def epoch_metrics(entry: dict, timestamp: int) -> list:
    step = int(entry["epoch"])
    out = [metric(k, entry[k], timestamp, step) for k in EPOCH_KEYS if is_number(entry.get(k))]
    for layer in entry.get("local") or ():
        k = layer["layer"]
        for src, name in (("loss", f"local_loss_layer{k}"), ("error", f"local_error_layer{k}")):
            if is_number(layer.get(src)):
                out.append(metric(name, layer[src], timestamp, step))
    return out


def metric(key: str, value, timestamp: int, step: int):
    from mlflow.entities import Metric

    return Metric(key, float(value), timestamp, step)


def now_ms() -> int:
    return int(time.time() * 1000)


# --- finding the folder's run ---------------------------------------------------------

def stored_run(client, out_dir: Path, exp_id: str):
    """The run named in DIR/mlflow_run.json, if it still exists, is active and belongs to
    this experiment (a new experiment or store gets its own run)."""
    from mlflow.exceptions import MlflowException

    try:
        run_id = json.loads((out_dir / RUN_FILE).read_text())["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if run.info.experiment_id != exp_id or run.info.lifecycle_stage != "active":
        return None
    return run


def tagged_run(client, exp_id: str, tags: dict[str, str]):
    """The oldest active run tagged with this folder (and config hash): the run file was
    lost, e.g. killed between creating the run and writing the file. The folder is
    compared here, not in the filter, because a path may contain any quote character."""
    filt = f"tags.`{TAG_CONFIG_HASH}` = '{tags[TAG_CONFIG_HASH]}'" if TAG_CONFIG_HASH in tags else ""
    token = None
    while True:
        page = client.search_runs([exp_id], filter_string=filt, max_results=1000,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        for run in page:
            if run.data.tags.get(TAG_OUT_DIR) == tags[TAG_OUT_DIR]:
                return run
        token = page.token
        if not token:
            return None


def write_run_file(out_dir: Path, uri: str, exp_id: str, run_id: str) -> None:
    """Atomic (write, then rename): a kill leaves the old file or the new one, never half."""
    atomic_write_text(out_dir / RUN_FILE, json.dumps(
        {"run_id": run_id, "experiment_id": exp_id, "tracking_uri": redact_uri(uri)}, indent=1) + "\n")


def run_of_hash(client, exp_id: str, chash: str | None):
    """The oldest active run of this config hash (the recipe and seed) in the experiment."""
    if not chash:
        return None
    found = client.search_runs([exp_id], filter_string=f"tags.`{TAG_CONFIG_HASH}` = '{chash}'",
                               max_results=1, order_by=["attributes.start_time ASC"])
    return found[0] if found else None
