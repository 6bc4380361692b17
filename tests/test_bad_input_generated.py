"""Bad input at scale: Hypothesis generates corruptions of everything a user hands over
(`locallearn train` flags, the workflow config and its --config values, cells.tsv,
dataset files, a run folder's checkpoint and metrics.json, the MLflow URI) and checks
one property for each:

    either the input is accepted and the run (or the workflow plan) is right, or it is
    refused with one line, no traceback, that names the flag, key, file or folder; a
    refused run trains nothing, and what was already finished (metrics.json, the
    checkpoints) is byte-identical afterwards.

tests/test_bad_input.py holds the hand-picked cases, and the shrunk example of every
failure this search found, each a regular test there.

Profiles (HYPOTHESIS_PROFILE, docs/bad-input.md):

    ci    (default) a fixed seed (derandomize), about 300 cases in all, a bounded time:
          what every test run checks.
    deep  random seeds, 25x the cases, Hypothesis's example database kept: a longer
          search, e.g. HYPOTHESIS_PROFILE=deep pytest tests/test_bad_input_generated.py
          (10-15 minutes on 2 cores).

Trainings are tiny (mlp, 64 examples, one or two epochs on fake data in the real
formats, tests/fake_data.py), run in this process through `locallearn.cli.main.main`.
Values a user could give but this machine cannot afford (a million epochs, a 2**31-wide
layer) are not generated: they are valid, only slow or too big.
"""
from __future__ import annotations

import contextlib
import copy
import gzip
import io
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import CELLS_TSV
from fake_data import write_fake
from locallearn.cli.main import main
from locallearn.recipe.config import build_parser, config_hash, parse_train_args
from locallearn.errors import LocallearnError
from locallearn.workflow import plan

settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("deep", derandomize=False, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
SCALE = {"ci": 1, "deep": 25}.get(PROFILE, 1)


def cases(n: int):
    """Settings for a test of n generated cases under the ci profile (25 n under deep)."""
    return settings(max_examples=n * SCALE)


# ------------------------------------------------------------------------- the property
def cli(argv: list[str]) -> tuple[int, str, str]:
    """`locallearn <argv>` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def refusal_line(rc: int, err: str) -> str:
    """The one error line of a refused command (warnings before it are allowed)."""
    assert rc != 0, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith("locallearn: warning: ")]
    assert len(errors) == 1 and errors[0].startswith("locallearn: error: "), err
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder, by relative path: what must stay byte-identical. Not
    train.log, which each attempt appends to by design (its header and why it stopped)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "train.log"}


def ascii_text(max_size: int = 8):
    return st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=max_size)


# ------------------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def data():
    """Fake MNIST, Fashion-MNIST, Kuzushiji-MNIST and CIFAR-10 in their real formats."""
    with tempfile.TemporaryDirectory(prefix="fuzz-data-") as d:
        for name in ("MNIST", "FashionMNIST", "KuzushijiMNIST", "CIFAR10"):
            write_fake(name, Path(d), n_train=80, n_test=40)
        yield Path(d)


def tiny(data_dir, out, *extra) -> list[str]:
    """A run that trains in well under a second: the base every flag case changes."""
    return ["train", "--model", "mlp", "--dataset", "MNIST", "--num-layers", "1", "--num-hidden", "16",
            "--epochs", "1", "--lr-decay-milestones", "10", "--batch-size", "32", "--device", "cpu",
            "--threads", "1", "--max-train-examples", "64", "--max-test-examples", "64",
            "--data-dir", str(data_dir), "--out", str(out), "--mlflow-uri", "", *extra]


# ============================================================================ train flags
DEFAULTS = vars(build_parser().parse_args([]))


def flag(dest: str) -> str:
    return "--n_holes" if dest == "n_holes" else "--" + dest.replace("_", "-")


# Left to their own tests: paths (--out, --data-dir, --resume, --save-dir), the network
# (--download), --mlflow-uri (below), --debug (asks for the traceback), and the pipeline's
# device list. Everything else is generated.
NOT_GENERATED = {"out", "data_dir", "resume", "save_dir", "download", "mlflow_uri", "debug", "stage_devices"}

junk = st.one_of(ascii_text(), st.sampled_from(["", " ", "nan", "inf", "-inf", "1e400", "0x10", "1_0", "١",
                                                  "None", "true", "[1]", "--", "-"]))
# Integers whose valid values cost time or memory with size: small ones only.
SIZED = {"num_layers": 3, "num_hidden": 24, "epochs": 2, "n_holes": 3, "target_proj_size": 16,
         "dim_in_decoder": 64, "pipeline_stages": 1, "threads": 2, "classes_per_batch": 12,
         "classes_per_batch_until_epoch": 3, "length": 40}
CHOICE_VALUES = {
    "model": ["mlp", "MLP", "vgg", "resnet18"], "dataset": ["MNIST", "FashionMNIST", "KuzushijiMNIST",
                                                           "CIFAR10", "mnist", "ImageNet"],
    "nonlin": ["relu", "leakyrelu", "tanh"], "loss_sup": ["pred", "sim", "predsim", "hinge"],
    "loss_unsup": ["none", "sim", "recon", "vae"], "optim": ["adam", "amsgrad", "sgd", "rmsprop"],
    "engine": ["fused", "reference", "fast"], "precision": ["fp32", "tf32", "bf16", "fp16"],
    "device": ["cpu", "auto", "cuda", "cuda:7", "gpu", "cpu:0"], "pipeline_balance": ["flops", "time", "both"],
}


def int_values(dest: str):
    top = SIZED.get(dest)
    small = st.integers(-3, top if top is not None else 300)
    huge = st.sampled_from([2**31, 2**63, 10**30, -(2**63)])
    values = st.one_of(small.map(str), st.floats(allow_nan=True).map(repr), junk)
    return st.one_of(values, huge.map(str)) if top is None else values


def float_values():
    return st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                     st.floats(-2, 2).map(lambda v: f"{v:.3g}"), st.integers(-2, 2).map(str), junk)


def values_of(dest: str):
    """Strategy for the tokens given after flag(dest), wrong types and ranges included."""
    default = DEFAULTS[dest]
    if dest in CHOICE_VALUES:
        return st.one_of(st.sampled_from(CHOICE_VALUES[dest]), junk).map(lambda v: [v])
    if isinstance(default, bool):
        return st.sampled_from([[], [], ["1"], ["false"]])    # a switch, or a switch given a value
    if dest == "lr_decay_milestones":
        return st.lists(st.one_of(st.integers(-2, 6).map(str), junk), max_size=4)
    if dest == "tag":
        return st.one_of(st.just(["k=v"]), ascii_text().map(lambda v: [v]))
    if isinstance(default, int):
        return int_values(dest).map(lambda v: [v])
    if isinstance(default, float):
        return float_values().map(lambda v: [v])
    return st.one_of(ascii_text(12), junk).map(lambda v: [v])   # free text: --run-name, --mlflow-experiment


@st.composite
def flag_changes(draw):
    """1-3 flags, each with generated values, in `--flag v` or `--flag=v` form."""
    dests = draw(st.lists(st.sampled_from(sorted(set(DEFAULTS) - NOT_GENERATED)), min_size=1, max_size=3,
                          unique=True))
    tokens = []
    for dest in dests:
        values = draw(values_of(dest))
        if len(values) == 1 and draw(st.booleans()):
            tokens.append(f"{flag(dest)}={values[0]}")
        else:
            tokens += [flag(dest), *values]
    return dests, tokens


def named(line: str, dests: list[str], out: Path) -> bool:
    """The error line names one of the changed flags, the run folder or the dataset."""
    return (any(flag(d) in line for d in dests) or str(out) in line
            or "unrecognized arguments" in line or "expected one argument" in line)


@cases(90)
@given(change=flag_changes())
def test_generated_train_flags(data, change):
    dests, tokens = change
    with tempfile.TemporaryDirectory(prefix="fuzz-flags-") as tmp:
        out = Path(tmp) / "run"
        argv = tiny(data, out, *tokens)
        rc, stdout, err = cli(argv)
        event("accepted" if rc == 0 else "refused")
        if rc == 0:   # accepted: the run of exactly these flags, finished
            cfg = parse_train_args(argv[1:])
            metrics = json.loads((out / "metrics.json").read_text())
            assert metrics["config_hash"] == config_hash(cfg) and metrics["epochs"] == cfg.epochs
            assert 0 <= metrics["test_error"] <= 100
        else:
            line = refusal_line(rc, err)
            assert named(line, dests, out), line
            assert not (out / "metrics.json").exists() and not list(out.glob("checkpoint*"))


# ====================================================================== workflow config
DEFAULT_CONFIG = yaml.safe_load(plan.DEFAULT_CONFIG.read_text())


def key_paths(node, prefix=()) -> list[tuple]:
    """Every key path of a config (dicts only; a list is one value)."""
    paths = []
    for k, v in node.items():
        paths.append(prefix + (k,))
        if isinstance(v, dict):
            paths += key_paths(v, prefix + (k,))
    return paths


CONFIG_PATHS = key_paths(DEFAULT_CONFIG)


def config_at(path: tuple):
    node = DEFAULT_CONFIG
    for k in path:
        node = node[k]
    return node


DICT_PATHS = [()] + [p for p in CONFIG_PATHS if isinstance(config_at(p), dict)]
NAMES = ["MNIST", "FashionMNIST", "cifar10", "mlp", "vgg11b", "resnet", "predsim", "hinge",
         "mnist-mlp-pred", "fmnist-*", "nope-*", "", "*"]

config_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.sampled_from([2**63, -(2**63)]),
              st.floats(allow_nan=True, allow_infinity=True), ascii_text(), st.sampled_from(NAMES)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(NAMES + ["default"]),
                                                                         inner, max_size=2)),
    max_leaves=4)


def plausible(default):
    """A value of the default's own type: what a user who read the comment might write."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(-1, 10)
    if isinstance(default, float):
        return st.floats(-1, 10)
    if isinstance(default, str):
        return st.one_of(st.sampled_from(NAMES + ["cpu", "cuda:0", "auto", "bf16", "fp32", "x.md"]), ascii_text())
    if isinstance(default, list):
        return st.lists(plausible(default[0]) if default else st.one_of(st.integers(0, 3), st.sampled_from(NAMES)),
                        max_size=3)
    if isinstance(default, dict):
        return st.dictionaries(st.sampled_from(NAMES + ["default"]), st.integers(-1, 3), max_size=2)
    return st.one_of(st.none(), ascii_text())


def as_command_line(value):
    """What `snakemake --config key=value` hands over: strings (YAML flow text for lists)."""
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def nested(path: tuple, value) -> dict:
    for k in reversed(path):
        value = {k: value}
    return value


@st.composite
def config_changes(draw) -> list[tuple]:
    """1-2 changes to config.yaml, each (how, key path, value)."""
    changes = []
    for _ in range(draw(st.integers(1, 2))):
        how = draw(st.sampled_from(["set", "set", "command-line", "select", "add", "delete"]))
        value = draw(config_values)
        if how == "add":
            path = draw(st.sampled_from(DICT_PATHS)) + (draw(st.sampled_from(["colour", "seed", "Select", "MNIST"])),)
        elif how == "select":
            path = (*draw(st.sampled_from([("select",), ("quick", "select")])),
                    draw(st.sampled_from(sorted(plan.SELECT_KEYS) + ["cells"])))
            value = draw(st.lists(st.sampled_from(NAMES), max_size=3))
        else:
            path = draw(st.sampled_from(CONFIG_PATHS))
            if draw(st.booleans()):
                value = draw(plausible(config_at(path)))
        changes.append((how, path, as_command_line(value) if how == "command-line" else value))
    return changes


def changed_config(changes: list[tuple]) -> dict:
    config = copy.deepcopy(DEFAULT_CONFIG)
    for how, path, value in changes:
        parent = config
        for k in path[:-1]:
            if not isinstance(parent.get(k), dict):
                parent[k] = {}
            parent = parent[k]
        if how == "delete":
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = value
    return config


def plan_workflow(config: dict) -> None:
    """What the Snakefile does with a config before any job (workflow/rules/common.smk),
    then each preset's runs, their resources and states, as the rules ask for them."""
    checked = plan.validate_config(config)
    rows = plan.load_cells(plan.cells_path(checked))
    presets = plan.make_presets(checked, rows)
    plan.pipeline_stages(checked, rows)
    for name in plan.PRESETS:
        preset = presets[name]
        for row in preset.rows[:1]:
            plan.runtime_minutes(row, checked, preset)
            plan.mem_mb(row, checked)
            parse_train_args(preset.args(row) + ["--seed", str(preset.seeds[0])])  # the job takes its flags
        preset.to_train(preset.rows[:3])
        plan.tracking_uri(checked, preset)
    plan.data_dir(checked)


@contextlib.contextmanager
def working_dir(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@cases(70)
@given(changes=config_changes())
def test_generated_workflow_configs(changes):
    names = [str(k) for _, path, _ in changes for k in path]
    with tempfile.TemporaryDirectory(prefix="fuzz-config-") as tmp, working_dir(tmp):
        try:
            plan_workflow(changed_config(changes))
            event("accepted")
        except plan.PlanError as e:
            event("refused")
            message = str(e)
            assert "\n" not in message and "Traceback" not in message, message
            # the key (or, for a file the config names, the file)
            named = [n for n in names if repr(n) in message or f"'{n}" in message or f".{n}" in message]
            files = [v for _, _, v in changes if isinstance(v, str) and v and f"{v} " in f"{message} "]
            assert named or files, (names, message)


# ============================================================================ cells.tsv
GRID = CELLS_TSV.read_text().splitlines()
HEADER = GRID[0].split("\t")
# mnist mlp (backprop, pred), a cutout row, the quick preset's Fashion-MNIST mlp rows, a bio row
SAMPLE = [GRID[0]] + [GRID[i] for i in (1, 2, 9, 10, 11, 53)]
CELL_VALUES = st.one_of(
    junk, st.integers(-3, 300).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["MNIST", "mnist", "ImageNet", "mlp", "vgg8b", "resnet", "backprop", "pred", "hinge",
                     "30 20", "10 10", "5  6", "-1", "1.5", "0", "1", "2.9M", "2.9", "mnist-mlp-pred",
                     "Upper-Case", "a\"b", "1e-3"]))


@st.composite
def table_changes(draw) -> list[tuple]:
    """1-3 changes to a sample of cells.tsv: (how, row, column, value)."""
    changes = []
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["value", "value", "other-rows-value", "other-rows-value", "drop-column", "add-column", "rename-column",
                                    "short-row", "long-row", "duplicate-row", "copy-cell-name", "crlf",
                                    "blank-line", "no-rows"]))
        row = draw(st.integers(1, len(SAMPLE) - 1))
        col = draw(st.sampled_from(HEADER))
        if how == "other-rows-value":   # a value that is right somewhere else in the grid
            how, value = "value", draw(st.sampled_from(GRID[1:])).split("\t")[HEADER.index(col)]
        else:
            value = draw(CELL_VALUES)
        changes.append((how, row, col, value))
    return changes


def changed_table(changes: list[tuple]) -> str:
    rows = [line.split("\t") for line in SAMPLE]
    newline = "\n"
    for how, r, col, value in changes:
        k = rows[0].index(col) if col in rows[0] else 0
        if r >= len(rows):
            r = len(rows) - 1
        if how == "value" and r and k < len(rows[r]):
            rows[r][k] = value
        elif how == "drop-column":
            rows = [row[:k] + row[k + 1:] for row in rows]
        elif how == "add-column":
            rows = [row + ([value or "extra"] if i == 0 else [value]) for i, row in enumerate(rows)]
        elif how == "rename-column":
            rows[0][k] = value
        elif how == "short-row" and r:
            rows[r] = rows[r][:-1]
        elif how == "long-row" and r:
            rows[r] = rows[r] + [value]
        elif how == "duplicate-row" and r:
            rows.append(list(rows[r]))
        elif how == "copy-cell-name" and r:
            rows[r][0] = rows[1 + r % (len(rows) - 1)][0] if len(rows) > 2 else rows[r][0]
        elif how == "crlf":
            newline = "\r\n"
        elif how == "blank-line":
            rows.insert(max(r, 1), [""])
        elif how == "no-rows":
            rows = rows[:1]
    return newline.join("\t".join(row) for row in rows) + newline


@cases(70)
@given(changes=table_changes())
def test_generated_cells_tables(changes):
    with tempfile.TemporaryDirectory(prefix="fuzz-cells-") as tmp, working_dir(tmp):
        path = Path(tmp) / "cells.tsv"
        path.write_text(changed_table(changes), newline="")
        config = dict(copy.deepcopy(DEFAULT_CONFIG), cells=str(path))
        try:
            checked = plan.validate_config(config)
            rows = plan.load_cells(plan.cells_path(checked))
            presets = plan.make_presets(checked, rows)
            plan.pipeline_stages(checked, rows)
            preset = presets["full"]
        except plan.PlanError as e:
            event("refused")
            message = str(e)
            assert "\n" not in message and "Traceback" not in message, message
            assert "cells.tsv" in message, message
            return
        event("accepted")
        for row in preset.rows:   # accepted: every job takes its flags, and its cost is known
            parse_train_args(preset.args(row) + ["--seed", "1"])
            plan.runtime_minutes(row, checked, preset)


# ========================================================================= dataset files
MNIST_FILES = [f"MNIST/raw/{p}-{k}-ubyte.gz" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]


def idx_gz(payload: bytes) -> bytes:
    return gzip.compress(payload, mtime=0)


@st.composite
def dataset_changes(draw) -> tuple:
    """(file, how, argument, re-accepted): one corruption of fake MNIST's files."""
    rel = draw(st.sampled_from(MNIST_FILES + ["locallearn-custom-checksums.json"]))
    how = draw(st.sampled_from(["truncate", "flip", "magic", "dims", "other-dataset", "empty", "junk",
                                "unzipped"]))
    arg = draw(st.integers(0, 2**16))
    return rel, how, arg, draw(st.booleans())


def corrupt_dataset(data_dir: Path, source: Path, change: tuple) -> None:
    rel, how, arg, accept = change
    path = data_dir / rel
    raw = path.read_bytes()
    if how == "truncate":
        path.write_bytes(raw[:arg % max(len(raw), 1)])
    elif how == "flip":
        b = bytearray(raw)
        b[arg % len(b)] ^= 1 << (arg % 8)
        path.write_bytes(bytes(b))
    elif how in ("magic", "dims", "unzipped") and rel.endswith(".gz"):
        content = bytearray(gzip.decompress(raw))
        if how == "magic":
            content[arg % 4] ^= 0xFF
        elif how == "dims":
            k = 4 + 4 * (arg % max(content[3], 1))
            content[k:k + 4] = (int.from_bytes(content[k:k + 4], "big") + 1 + arg % 3).to_bytes(4, "big")
        path.write_bytes(bytes(content) if how == "unzipped" else idx_gz(bytes(content)))
    elif how == "other-dataset":
        other = {".gz": source / rel.replace("MNIST/", "FashionMNIST/", 1), ".json": source / "cifar-10-batches-py" / "data_batch_1"}
        path.write_bytes(other[path.suffix].read_bytes())
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "junk":
        path.write_bytes(bytes(range(256)) * (1 + arg % 3))
    if accept and rel.endswith(".gz"):   # the user declares the changed file theirs
        from locallearn.data.datasets import accept_custom_files
        with contextlib.suppress(LocallearnError):
            accept_custom_files(data_dir, [rel])


@cases(25)
@given(change=dataset_changes())
def test_generated_dataset_files(data, change):
    with tempfile.TemporaryDirectory(prefix="fuzz-dataset-") as tmp:
        d, out = Path(tmp) / "data", Path(tmp) / "run"
        shutil.copytree(data / "MNIST", d / "MNIST")
        shutil.copy(data / "locallearn-custom-checksums.json", d)
        corrupt_dataset(d, data, change)
        rc, _, err = cli(tiny(d, out))
        event("accepted" if rc == 0 else "refused")
        if rc == 0:
            assert json.loads((out / "metrics.json").read_text())["epochs"] == 1
        else:
            line = refusal_line(rc, err)
            assert str(d) in line, line   # the file (under the data dir) or the dataset's folder
            assert not list(out.glob("checkpoint*")) and not (out / "metrics.json").exists()


# ============================================================== checkpoints, metrics.json
def finished_folder(data: Path, where: Path) -> Path:
    out = where / "finished"
    rc, _, err = cli(tiny(data, out, "--epochs", "2"))
    assert rc == 0, err
    return out


@pytest.fixture(scope="module")
def finished(data):
    """A finished two-epoch run folder (metrics.json, checkpoint.pt), made once."""
    with tempfile.TemporaryDirectory(prefix="fuzz-finished-") as tmp:
        yield finished_folder(data, Path(tmp))


WRONG_TYPES = st.one_of(st.none(), st.booleans(), st.integers(-2, 99), st.sampled_from([float("nan"), 1e300]),
                        ascii_text(4), st.just([]), st.just({}), st.just([{}]))


@st.composite
def run_folder_changes(draw) -> tuple:
    """(file, how, argument): one corruption of a run folder's metrics.json or checkpoint."""
    target = draw(st.sampled_from(["metrics.json", "checkpoint.pt"]))
    how = draw(st.sampled_from(["truncate", "flip", "junk", "set-key", "delete-key", "whole", "other-config"]))
    if how in ("set-key", "delete-key"):
        keys = {"metrics.json": ["test_error", "config_hash", "config", "history", "epochs", "train_error", "seed"],
                "checkpoint.pt": ["epoch", "history", "wall_seconds", "config_hash", "config", "model", "optimizer",
                                  "optimizers"]}[target]
        return target, how, (draw(st.sampled_from(keys)), draw(WRONG_TYPES))
    if how == "whole":
        return target, how, draw(WRONG_TYPES)
    return target, how, draw(st.integers(0, 2**20))


def corrupt_run_folder(out: Path, change: tuple) -> None:
    target, how, arg = change
    path = out / target
    raw = path.read_bytes()
    if how == "truncate":
        path.write_bytes(raw[:arg % len(raw)])
    elif how == "flip":
        b = bytearray(raw)
        b[arg % len(b)] ^= 1 << (arg % 8)
        path.write_bytes(bytes(b))
    elif how == "junk":
        path.write_bytes(bytes(range(256))[arg % 200:])
    else:
        doc = json.loads(raw) if target == "metrics.json" else torch.load(path, weights_only=True)
        if how == "set-key":
            doc[arg[0]] = arg[1]
        elif how == "delete-key":
            doc.pop(arg[0], None)
        elif how == "whole":
            doc = arg
        elif how == "other-config":
            doc["config_hash"] = "0123456789ab"
        if target == "metrics.json":
            path.write_text(json.dumps(doc))
        else:
            torch.save(doc, path)


@cases(30)
@given(change=run_folder_changes())
def test_generated_run_folder_files(data, finished, change):
    """A finished run's metrics.json, or an unfinished run's checkpoint, corrupted; then
    the same command again. metrics.json: the run stays finished, its files untouched, or
    (naming another recipe) is moved aside whole and this recipe trains.
    The checkpoint: refused with the files untouched, or the run finishes correctly."""
    target = change[0]
    with tempfile.TemporaryDirectory(prefix="fuzz-folder-") as tmp:
        out = Path(tmp) / "run"
        shutil.copytree(finished, out)
        if target == "checkpoint.pt":
            (out / "metrics.json").unlink()   # as if stopped after the last checkpoint
        corrupt_run_folder(out, change)
        before = snapshot(out)
        rc, _, err = cli(tiny(data, out, "--epochs", "2"))
        event(f"{target} {'accepted' if rc == 0 else 'refused'}")
        if rc != 0:
            line = refusal_line(rc, err)
            assert str(out) in line, line
            assert snapshot(out) == before
        elif target == "metrics.json" and not list(Path(tmp).glob("run.replaced-*")):
            assert snapshot(out) == before   # finished: read, never rewritten
        else:
            # a metrics.json that names another recipe: the folder was moved aside whole
            # (runstate.set_aside), byte for byte, and this recipe trained anew
            for aside in Path(tmp).glob("run.replaced-*"):
                assert {k: v for k, v in snapshot(aside).items() if k != "replaced.json"} == before
            metrics = json.loads((out / "metrics.json").read_text())
            assert metrics["config_hash"] == config_hash(parse_train_args(tiny(data, out, "--epochs", "2")[1:]))
            assert [h["epoch"] for h in metrics["history"]] == [1, 2] and metrics["epochs"] == 2
            assert 0 <= metrics["test_error"] <= 100


# ==================================================================== MLflow tracking URI
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@st.composite
def tracking_uris(draw) -> tuple[str, str]:
    """(URI, password in it or ''): malformed, or naming a store on the loopback that
    nothing serves, or (rarely) a fresh SQLite file."""
    scheme = draw(st.sampled_from(["http://", "https://", "sqlite:///", "file://", "ftp://", "postgresql://",
                                   "", "http:/", "mlflow://", "sqlite://"]))
    password = draw(st.sampled_from(["", "s3cret-pw"]))
    userinfo = f"user:{password}@" if password else draw(st.sampled_from(["", "user@", ":@", "@"]))
    host = draw(st.sampled_from(["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "127.0.0.1:99999",
                                 "127.0.0.1:abc", "[::1", "", "127.0.0.1:{port}:{port}"]))
    path = draw(st.sampled_from(["", "/", "/x", "/missing/dir/mlflow.db", "?a=b", "#f", " ", "%zz"]))
    if draw(st.integers(0, 9)) == 0:   # a working store: accepted, the run logs to it
        return "sqlite:///mlflow.db", ""
    if scheme.startswith(("sqlite:", "file:")):   # the rest is a file name: nothing there is a credential
        password = ""
    return scheme + userinfo + host.format(port=closed_port()) + path, password


@cases(20)
@given(uri=tracking_uris())
@pytest.mark.slow
def test_generated_tracking_uris(data, uri):
    from locallearn.track import mlstore
    from unittest import mock
    uri, password = uri
    with tempfile.TemporaryDirectory(prefix="fuzz-mlflow-") as tmp, working_dir(tmp), \
            mock.patch.object(mlstore, "PROBE_DEADLINE_S", 0.5), mock.patch.object(mlstore, "RETRY_DEADLINE_S", 1):
        out = Path(tmp) / "run"
        rc, stdout, err = cli(tiny(data, out, "--mlflow-uri", uri))
        event("accepted" if rc == 0 else "refused")
        assert not password or password not in stdout + err
        if rc == 0:
            assert json.loads((out / "metrics.json").read_text())["epochs"] == 1
        else:
            line = refusal_line(rc, err)
            assert "MLflow" in line or "--mlflow-uri" in line, line
            assert not list(out.glob("checkpoint*")) and not (out / "metrics.json").exists()
