"""The workflow's plan in plain Python (no Snakemake objects), so the rules stay thin
and tests can call it directly (`python -m locallearn.workflow.plan` prints the README's
estimate table):

- `load_config` / `validate_config`: the config (after --config/--configfile merges)
  checked against workflow/schemas/config.schema.json, with errors naming the key;
- `load_cells`: cells.tsv typed and checked row by row against
  workflow/schemas/cells.schema.json, with errors naming the row and the column;
- `Preset`: what one preset (full, quick; the field's grids: peers, peers-quick, infopro,
  infopro-quick) trains, with which budget, where it writes,
  and which of its runs still need training (the trainer's locallearn.runs.runstate: a
  finished metrics.json of the run's current recipe is final; never scheduled again);
- `runtime_minutes`: a cell's `runtime` resource, from the measured grid cost
  (locallearn/recipe/gridcost.py, `locallearn bench --grid`) where one exists for the device
  kind and precision, else from `estimate_hours`, the FLOP model over recipe/cost.py's counts.

Importing this module does not import torch or snakemake.
"""
from __future__ import annotations

import copy
import fnmatch
import functools
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml

# torch-free modules of the package: the DAG imports no torch
from .. import layout
from ..errors import ConfigError, LocallearnError
from ..recipe import gridcost
from ..recipe.cells import PAPER_FORMAT_COLUMNS, column, moved_to, protocol, read_cells, recipe_args
from ..recipe.config import build_parser, check_all
from ..recipe.config import stage_count_error
from ..recipe.cost import network_cost
from ..recipe.specs import run_spec
from ..runs.runstate import FINISHED, METRICS, run_state
from .schemas import with_plugins

REPO = Path(__file__).resolve().parents[2]   # the checkout: locallearn/workflow/plan.py
SCHEMAS = REPO / "workflow" / "schemas"
DEFAULT_CONFIG = REPO / "workflow" / "config" / "config.yaml"
PRESETS = ("full", "quick", "peers", "peers-quick", "infopro", "infopro-quick")


class PlanError(ValueError):
    """A config or cells.tsv problem, found before any job starts."""


# --------------------------------------------------------------------------- schemas

def _schema(name: str) -> dict:
    """A schema file as the plan checks against it: as it stands, every list it names
    (datasets, models, losses, precisions) written in it by `python -m
    locallearn.workflow.schemas`, so Snakemake's validate() or any JSON Schema tool reads
    the same rules; cells.schema.json's `loss` list with installed plugin methods added."""
    with open(SCHEMAS / name) as f:
        schema = json.load(f)
    return with_plugins(schema) if name == "cells.schema.json" else schema


@functools.lru_cache(maxsize=None)
def _schema_file(name: str) -> str:
    """The file Snakemake's validate() reads for `name`: the committed one, or where
    installed plugins add names to it, a copy with them (written once per process)."""
    schema = _schema(name)
    with open(SCHEMAS / name) as f:
        if json.load(f) == schema:
            return str(SCHEMAS / name)
    folder = Path(tempfile.mkdtemp(prefix="locallearn-schemas-"))
    (folder / name).write_text(json.dumps(schema))
    return str(folder / name)


def _schema_error(data: dict, name: str) -> jsonschema.ValidationError | None:
    """What Snakemake's own validate() finds wrong in `data` against the schema file
    `name` as it stands (the error it judges most relevant), or None. validate() raises
    a WorkflowError whose text repeats the whole schema; the jsonschema error it wraps
    is what PlanError says, in one line."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(data, _schema_file(name), set_default=False)
    except WorkflowError as e:
        if isinstance(e.__context__, jsonschema.ValidationError):
            return e.__context__
        raise PlanError(f"workflow/schemas/{name}: {str(e).splitlines()[0]}") from None
    return None


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path)


def _message(error: jsonschema.ValidationError) -> str:
    """jsonschema's message, shortened where it repeats a whole sub-document."""
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown key")
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    if "propertyNames" in error.schema_path:
        return f"unknown key {error.instance!r} (allowed: 'default' or a dataset name)"
    return error.message


def _coerce(value, schema: dict, root: dict | None = None):
    """`--config key=value` gives strings ('1', '[1, 2]' items, 'true'); turn a string
    into the type the schema asks for, so the validator sees what the user meant."""
    root = root or schema
    while "$ref" in schema:  # local refs only: "#/$defs/name"
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        extra = extra if isinstance(extra, dict) else {}
        return {k: _coerce(v, props.get(k, extra), root) for k, v in value.items()}
    if isinstance(value, list):
        items = schema.get("items")
        return [_coerce(v, items, root) for v in value] if isinstance(items, dict) else value
    if not isinstance(value, str):
        return value
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if not types or "string" in types:
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if parsed is None and "null" not in types:
        return value
    return _coerce(parsed, schema, root) if isinstance(parsed, (list, dict)) else parsed


# --------------------------------------------------------------------------- config

def validate_config(config: dict) -> dict:
    """A typed copy of `config`, or PlanError naming the first bad key."""
    schema = _schema("config.schema.json")
    config = _coerce(copy.deepcopy(config), schema)
    error = _schema_error(config, "config.schema.json")
    if error is not None:
        where = _path(error)
        raise PlanError("invalid workflow config (workflow/config/config.yaml, --config, --configfile): "
                        + (f"config key '{where}': {_message(error)}" if where else f"config: {_message(error)}"))
    for preset, sel in (("full", config["select"]), ("quick", config["quick"]["select"])):
        if preset == "quick" and not any(sel.values()):
            raise PlanError("config key 'quick.select': the quick preset must select some cells")
    return config


def load_config(path: str | Path = DEFAULT_CONFIG, overrides: dict | None = None) -> dict:
    """config.yaml merged with `overrides` (as Snakemake merges --config), validated."""
    with open(path) as f:
        config = yaml.safe_load(f)
    if overrides:
        _merge(config, overrides)
    return validate_config(config)


def _merge(base: dict, over: dict) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


# --------------------------------------------------------------------------- cells

def cells_path(config: dict, grid: str = "paper") -> Path:
    """The paper's grid (config `cells`) or a field grid (`peers.cells`, `infopro.cells`);
    a relative path is taken from the repository (the Snakefile's folder)."""
    p = Path(config["cells"] if grid == "paper" else config[grid]["cells"])
    return p if p.is_absolute() else REPO / p


def load_cells(path: str | Path) -> list[dict]:
    """Rows of cells.tsv as str dicts (what locallearn.recipe.cells gives), after checking every
    row against the schema. PlanError names the file, line, cell and column."""
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"cells table not found: {path}")
    rows = read_cells(path)
    schema = _schema("cells.schema.json")
    props = schema["properties"]
    with open(path, newline="") as f:
        header = f.readline().rstrip("\r\n").split("\t")
    required = schema["required"] + ([] if "extra_flags" in header else list(PAPER_FORMAT_COLUMNS))
    missing = [c for c in required if c not in header]
    if missing:
        raise PlanError(f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} "
                           f"(header: {' '.join(header)})")
    unknown = [c for c in header if c not in props]
    if unknown:
        raise PlanError(f"{path}: unknown column(s) {', '.join(repr(c) for c in unknown)} "
                           f"(known: {', '.join(props)})")
    if not rows:
        raise PlanError(f"{path}: no rows")
    seen: dict[str, int] = {}
    slots: dict[tuple, str] = {}
    for line, row in enumerate(rows, start=2):
        where = f"{path.name} line {line} (cell {row.get('cell') or '?'!s})"
        if None in row or any(v is None for v in row.values()):
            raise PlanError(f"{where}: expected {len(header)} tab-separated columns")
        typed = {}
        for col, text in row.items():
            typed[col] = _typed(text, props[col], f"{where}, column '{col}'")
        e = _schema_error(typed, "cells.schema.json")
        if e is not None:
            col = _path(e) or (list(e.schema.get("then", {}).get("properties", {})) or ["?"])[0]
            raise PlanError(f"{where}, column '{col}': {_message(e)}")
        problem = flags_problem(recipe_args(row))
        if problem:
            raise PlanError(f"{where}: locallearn train refuses the row's recipe: {problem}")
        if row["cell"] in seen:
            raise PlanError(f"{where}: cell name {row['cell']!r} already used on line {seen[row['cell']]}")
        seen[row["cell"]] = line
        slot = (row["dataset"], row["network"], column(row), protocol(row))
        if slot in slots:
            raise PlanError(f"{where}: cells {slots[slot]!r} and {row['cell']!r} both fill the table "
                               f"slot dataset={slot[0]} network={slot[1]!r} column={slot[2]} protocol={slot[3]}")
        slots[slot] = row["cell"]
    return rows


def flags_problem(args: list[str]) -> str | None:
    """Why `locallearn train <args>` would refuse its flags (the trainer's own checks,
    config.check_all), or None: found here, before any job starts."""
    try:
        check_all(train_config(args))
    except ConfigError as e:
        return str(e)
    return None


def _typed(text: str, schema: dict, where: str):
    types = schema.get("type", "string")
    types = [types] if isinstance(types, str) else types
    text = text.strip()
    if text == "" and "null" in types:
        return None
    if "integer" in types:
        try:
            return int(text)
        except ValueError:
            raise PlanError(f"{where}: expected an integer, got {text!r}") from None
    if "number" in types:
        try:
            return float(text)
        except ValueError:
            raise PlanError(f"{where}: expected a number, got {text!r}") from None
    return text


# --------------------------------------------------------------------------- presets

SELECT_KEYS = {"datasets": "dataset", "models": "model", "networks": "network", "losses": "loss"}


def select_cells(rows: list[dict], select: dict, key: str = "select") -> list[dict]:
    """Rows matching every non-empty criterion (OR within one list). `cells` entries
    may be glob patterns (cifar10-vgg11b-*). An entry matching no row is an error."""
    chosen = rows
    for skey, col in SELECT_KEYS.items():
        wanted = select.get(skey) or []
        known = list(dict.fromkeys(r[col] for r in rows))
        for w in wanted:
            if w not in known:
                raise PlanError(f"config key '{key}.{skey}': {w!r} matches no row of cells.tsv "
                                   f"(known: {', '.join(known)})")
        if wanted:
            chosen = [r for r in chosen if r[col] in wanted]
    patterns = select.get("cells") or []
    for p in patterns:
        if not any(fnmatch.fnmatchcase(r["cell"], p) for r in rows):
            raise PlanError(f"config key '{key}.cells': {p!r} matches no cell of cells.tsv")
    if patterns:
        chosen = [r for r in chosen if any(fnmatch.fnmatchcase(r["cell"], p) for p in patterns)]
    if not chosen:
        raise PlanError(f"config key '{key}': the criteria together select no cell")
    return chosen


def recipe(row: dict):
    """A row's training config, as `locallearn train` parses its flags (no torch)."""
    return train_config(recipe_args(row))


def pipeline_stages(config: dict, rows: list[dict]) -> dict[str, int]:
    """cell -> pipeline stages of its jobs (config `pipeline_stages`; 1 where no pattern
    matches, the first matching pattern otherwise). Global backprop cannot be pipelined:
    a pattern's backprop cells stay single-process, a pattern naming only backprop cells
    is an error. Checked before any job starts."""
    stages = {r["cell"]: 1 for r in rows}
    # .get: a job script of this version started by a Snakemake that loaded an older config
    for pattern, s in (config.get("pipeline_stages") or {}).items():
        matched = [r for r in rows if fnmatch.fnmatchcase(r["cell"], pattern)]
        if not matched:
            raise PlanError(f"config key 'pipeline_stages': {pattern!r} matches no cell of cells.tsv")
        local = [r for r in matched if r["loss"] != "backprop"]
        if s > 1 and not local:
            raise PlanError(f"config key 'pipeline_stages.{pattern}': {matched[0]['cell']} is a backprop "
                               "cell; only local losses (detached blocks) can be pipelined")
        for r in local:
            problem = stage_count_error(recipe(r), s)  # the trainer's own check (recipe/config.py)
            if problem:
                raise PlanError(f"config key 'pipeline_stages.{pattern}': {r['cell']}: {problem}")
            if stages[r["cell"]] == 1:
                stages[r["cell"]] = s
    return stages


# --------------------------------------------------------------------------- run folders
# Which runs are trained is the trainer's decision (locallearn.runs.runstate.run_state, the
# same function `locallearn train` calls before it touches its folder): a run folder is
# FINISHED (final: no job), REPLACE (set aside first, rule set_aside) or a run to train.


def train_config(args: list[str]):
    """`locallearn train <args>` parsed as the trainer parses it, before its checks (which
    flags_problem runs, naming the cell): what run_state compares with a folder's records."""
    # One parser for every call: building it is most of the time a grid's plan takes
    # (~400 recipes parsed per Snakemake command). The copy keeps the parser's default
    # lists out of the caller's hands.
    global _TRAIN_PARSER
    if _TRAIN_PARSER is None:
        _TRAIN_PARSER = build_parser()
    return copy.deepcopy(_TRAIN_PARSER.parse_args(args))


_TRAIN_PARSER = None


@dataclass
class Preset:
    """Everything one preset needs: which rows and seeds, the budget, the paths."""
    name: str
    rows: list[dict]            # the selected rows, in cells.tsv order
    table_rows: list[dict]      # the rows its tables show
    seeds: list[int]
    results: str                # results/<name>
    epochs: int | None          # None: the recipe's
    max_train_examples: int
    max_test_examples: int
    device: str
    threads: int
    gpu: int
    precision: str              # fp32 | tf32 | bf16 (--precision)
    experiment: str
    readme: str                 # file whose markers receive the tables
    extra_args: list[str] = field(default_factory=list)   # more recipe flags (train.extra_args)
    cells: str = ""             # the grid file its rows come from
    holdout: dict = field(default_factory=dict)   # dataset -> --val-examples of its `holdout` rows (peers grids)
    batch_size: int = 0         # a budget's --batch-size (peers-quick), 0: the recipe's
    moved: tuple[str, str] | None = None   # (dataset, cell prefix): rows moved onto a dataset (peers-quick)
    _states: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, name: str, config: dict, rows: list[dict], table_rows: list[dict] | None = None,
                    moved: tuple[str, str] | None = None) -> Preset:
        """Preset `name` of PRESETS from its config section (PRESET_SECTIONS). A full
        recipe (full, peers) runs with the top-level seeds, the `train` section's device,
        precision and extra_args, and names its own README; a budget (quick, peers-quick)
        takes all of those from its section, and writes its README in its results folder."""
        section, grid, budget = PRESET_SECTIONS[name]
        own = config[section] if section else config
        res = results_root(config)
        runs_on = own if budget else config["train"]
        return cls(
            name=name, rows=rows, table_rows=rows if table_rows is None else table_rows,
            seeds=own["seeds"] if budget or "seeds" in own else config["seeds"], results=f"{res}/{name}",
            epochs=own["epochs"] if budget else None,
            max_train_examples=own["max_train_examples"] if budget else 0,
            max_test_examples=own["max_test_examples"] if budget else 0,
            device=runs_on["device"], threads=runs_on["threads"], gpu=runs_on["gpu"],
            precision=runs_on.get("precision", "fp32"),
            experiment=own["experiment"] if section else config["mlflow"]["experiment"],
            readme=f"{res}/{name}/README.md" if budget else own["readme"],
            extra_args=[] if budget else config["train"]["extra_args"],
            cells=str(cells_path(config, grid)), holdout=_holdout(own.get("holdout"), moved),
            batch_size=own.get("batch_size", 0), moved=moved)

    def run_dir(self, cell: str, seed) -> str:
        return str(layout.run_dir(self.results, cell, seed))

    def metrics(self, cell: str, seed) -> str:
        return f"{self.run_dir(cell, seed)}/{METRICS}"

    def budget_args(self) -> list[str]:
        """Flags that shrink a recipe (they are part of the run's config hash)."""
        args = []
        if self.epochs:
            args += ["--epochs", str(self.epochs)]
        if self.max_train_examples:
            args += ["--max-train-examples", str(self.max_train_examples)]
        if self.max_test_examples:
            args += ["--max-test-examples", str(self.max_test_examples)]
        if self.batch_size:
            args += ["--batch-size", str(self.batch_size)]
        return args

    def precision_args(self) -> list[str]:
        """--precision where it is not the trainer's default (fp32), so a float32 grid's
        flags, and with them its finished cells, stay as they were before the flag."""
        return [] if self.precision == "fp32" else ["--precision", self.precision]

    def args(self, row: dict) -> list[str]:
        """The flags that decide a run's numbers: the row's recipe, the preset's budget
        and precision, and (full preset) train.extra_args. The seed comes on top."""
        held_out = ["--val-examples", str(self.holdout[row["dataset"]])] if protocol(row) == "holdout" else []
        return (with_flags(recipe_args(row), self.budget_args() + held_out + self.precision_args())
                + list(self.extra_args))

    def run_flags(self, config: dict, row: dict, seed, threads: int, stages: int = 1) -> list[str]:
        """Where and how one run of `row` trains, none of which changes its numbers: the
        data dir, the MLflow store (credentials go to MLflow's variables), experiment, run
        name <cell>-s<seed> and tags, the device, threads per process (a pipelined cell
        runs `stages` processes), no progress bar. The workflow's train rule and `locallearn
        train --cell` both use it."""
        from ..credentials import take_credentials
        flags = ["--data-dir", data_dir(config), "--mlflow-uri", take_credentials(tracking_uri(config, self)),
                 "--mlflow-experiment", self.experiment, "--run-name", f"{row['cell']}-s{seed}"]
        if config["mlflow"]["system_metrics"]:
            flags.append("--mlflow-system-metrics")
        tags = {"cell": row["cell"], "seed": seed, "preset": self.name, "dataset": row["dataset"],
                "model": row["model"], "network": row["network"], "loss": row["loss"]}
        for k, v in tags.items():
            flags += ["--tag", f"{k}={v}"]
        flags += ["--device", self.device, "--threads", str(max(1, threads // stages)), "--no-progress-bar"]
        if stages > 1:
            flags += ["--pipeline-stages", str(stages)]
        return flags

    def job_args(self, config: dict, cell: str, seed, stages: int = 1) -> list[str]:
        """The whole `locallearn train` command line of one run, as the workflow's train
        rule gives it (recipe, seed, folder, run flags; its --job-log aside): what
        `locallearn train --cell` runs."""
        row = next((r for r in self.table_rows if r["cell"] == cell), None)
        if row is None:
            known = ", ".join(r["cell"] for r in self.table_rows[:6])
            raise PlanError(f"--cell {cell!r}: no cell of that name in the {self.name} preset's grid "
                            f"({self.cells}: {known}, ...)")
        return [*self.args(row), "--seed", str(seed), "--out", self.run_dir(cell, seed),
                *self.run_flags(config, row, seed, self.threads * stages, stages)]

    def state(self, row: dict, seed) -> str:
        """The trainer's run_state of one run, looked at once per workflow invocation."""
        key = (row["cell"], int(seed))
        if key not in self._states:
            cfg = train_config(self.args(row) + ["--seed", str(seed)])
            try:
                self._states[key] = run_state(self.run_dir(row["cell"], seed), cfg).what
            except LocallearnError as e:
                raise PlanError(str(e)) from None
        return self._states[key]

    def check_jobs(self) -> None:
        """PlanError unless every job's flags (the row's recipe, this preset's budget
        and precision, train.extra_args, the largest seed) pass the trainer's checks,
        and every holdout row's hold-out keeps to HOLDOUT_MAX_FRACTION."""
        for row in self.rows:
            self.check_holdout(row)
            problem = flags_problem(self.args(row) + ["--seed", str(max(self.seeds))])
            if problem:
                raise PlanError(f"the {self.name} preset's job for cell {row['cell']} would be refused: "
                                   f"{problem} (its flags come from cells.tsv and config keys {JOB_KEYS[self.name]})")

    def check_holdout(self, row: dict) -> None:
        """PlanError, in one line, unless a `holdout` row's hold-out is configured and at
        most HOLDOUT_MAX_FRACTION of the training examples the row's job reads."""
        if protocol(row) != "holdout":
            return
        key = HOLDOUT_KEYS[self.name] + ("" if self.moved else f".{row['dataset']}")
        n = self.holdout.get(row["dataset"])
        if not n:
            raise PlanError(f"config key '{key}': cell {row['cell']} trains with a hold-out, but none is set "
                            f"for {row['dataset']}")
        spec = run_spec(recipe(row))
        training = min(spec.train_size, self.max_train_examples) if self.max_train_examples else spec.train_size
        allowed = int(HOLDOUT_MAX_FRACTION * training)
        if n > allowed:
            raise PlanError(f"config key '{key}': {n} held-out examples is more than "
                            f"{HOLDOUT_MAX_FRACTION:.0%} of the {training:,} training examples of cell "
                            f"{row['cell']} (at most {allowed:,})")

    def to_train(self, rows: list[dict] | None = None) -> list[str]:
        """metrics.json of the selected runs that are not finished: the only runs the
        workflow schedules (finished ones are read, never rebuilt)."""
        return [self.metrics(r["cell"], s) for r in (rows or self.rows) for s in self.seeds
                if self.state(r, s) != FINISHED]


# name -> (its config section, None: the top level; its grid, cells_path's `grid`;
# whether it is a budget: its section's seeds, epochs, examples, device and precision).
PRESET_SECTIONS = {"full": (None, "paper", False), "quick": ("quick", "paper", True),
                   "peers": ("peers", "peers", False), "peers-quick": ("peers_quick", "peers", True),
                   "infopro": ("infopro", "infopro", False), "infopro-quick": ("infopro_quick", "infopro", True)}

# The config keys that add flags to a preset's jobs (Preset.args), for messages.
JOB_KEYS = {"full": "seeds, train.precision, train.extra_args",
            "quick": "quick.seeds, quick.epochs, quick.max_train_examples, quick.max_test_examples, quick.precision",
            "peers": "seeds, peers.holdout, train.precision, train.extra_args",
            "peers-quick": "peers_quick.*",
            "infopro": "infopro.seeds, train.precision, train.extra_args",
            "infopro-quick": "infopro_quick.*"}


# The config key of each preset's hold-out, and the largest part of a training split that
# a hold-out may take: the rest, at least 90 %, trains.
HOLDOUT_KEYS = {"full": "holdout", "quick": "quick.holdout", "peers": "peers.holdout",
                "peers-quick": "peers_quick.holdout", "infopro": "infopro.holdout",
                "infopro-quick": "infopro_quick.holdout"}
HOLDOUT_MAX_FRACTION = 0.10


def _holdout(value, moved: tuple[str, str] | None) -> dict:
    """A preset's hold-out by dataset: config peers.holdout as it is; peers_quick.holdout
    (one number) for the dataset its rows are moved onto."""
    if value is None:
        return {}
    return {moved[0]: value} if moved else dict(value)


class Presets(dict):
    """name -> Preset. A preset whose selection does not fit the grid (the quick preset
    on a grid without its Fashion-MNIST mlp rows) is kept as its error, raised only when
    that preset is used, so the other targets still work."""

    def __init__(self, presets: dict[str, Preset], errors: dict[str, PlanError]):
        super().__init__(presets)
        self.errors = errors

    def __getitem__(self, name: str) -> Preset:
        if name in self.errors:
            raise self.errors[name]
        return super().__getitem__(name)


def results_root(config: dict) -> str:
    return config["results_dir"].rstrip("/") or "."


def with_flags(args: list[str], flags: list[str]) -> list[str]:
    """`args` with each `--flag value` of `flags` replacing the same flag's value in place
    (appended if absent), so a budget's --epochs 2 replaces the recipe's --epochs 200
    instead of following it. Flags of `flags` without a value are appended as given."""
    args = list(args)
    i = 0
    while i < len(flags):
        flag = flags[i]
        has_value = i + 1 < len(flags) and not flags[i + 1].startswith("--")
        if has_value and flag in args and args.index(flag) + 1 < len(args):
            args[args.index(flag) + 1] = flags[i + 1]
        else:
            args += flags[i:i + 1 + has_value]
        i += 1 + has_value
    return args


def make_presets(config: dict, rows: list[dict], peer_rows: list[dict] | None = None) -> Presets:
    """The presets of every grid: full and quick (the paper's, `rows`), then each field
    grid's (FIELD_GRIDS: peers and peers-quick from `peer_rows`, or config peers.cells when
    not given; infopro and infopro-quick from config infopro.cells). A preset that cannot
    run is kept as its error, raised only when that preset is used."""
    full = Preset.from_config("full", config, select_cells(rows, config["select"], "select"), table_rows=rows)
    full.check_jobs()
    presets, errors = {"full": full}, {}
    for grid, quick in FIELD_GRIDS:
        _field_presets(config, grid, quick, peer_rows if grid == "peers" else None, presets, errors)
    _unique_names(rows, presets, errors)
    try:
        qrows = select_cells(rows, config["quick"]["select"], "quick.select")
    except PlanError as e:
        errors["quick"] = PlanError(
            f"the `quick` target trains the cells of config quick.select (by default the "
            f"Fashion-MNIST mlp row), but {e} ({cells_path(config)}); set quick.select to rows of "
            "this grid, e.g. --config 'quick={select: {datasets: [MNIST], networks: [mlp]}}'")
        return Presets(presets, errors)
    presets["quick"] = Preset.from_config("quick", config, qrows)
    try:
        presets["quick"].check_jobs()
    except PlanError as e:
        errors["quick"] = e
    return Presets(presets, errors)


# The field's grids: (grid = its preset and config section, its quick preset).
FIELD_GRIDS = (("peers", "peers-quick"), ("infopro", "infopro-quick"))


def _field_presets(config: dict, grid: str, quick: str, grid_rows: list[dict] | None, presets: dict,
                   errors: dict) -> None:
    """A field grid's preset (its full recipes, plus its holdout rows' hold-out; the seeds
    of its section or the top level, and the full preset's train settings) and its quick
    preset (its selected rows moved onto <quick section>.dataset at a tiny budget) into
    `presets`, or their errors."""
    section = PRESET_SECTIONS[quick][0]
    if grid not in config:   # a job script started by a Snakemake that loaded an older config
        return
    try:
        grid_rows = load_cells(cells_path(config, grid)) if grid_rows is None else grid_rows
        presets[grid] = Preset.from_config(
            grid, config, select_cells(grid_rows, config[grid]["select"], f"{grid}.select"), table_rows=grid_rows)
        presets[grid].check_jobs()
    except PlanError as e:
        errors[grid] = errors[quick] = e
        return
    q = config[section]
    try:
        moved = [moved_to(r, q["dataset"], q["cell_prefix"])
                 for r in select_cells(grid_rows, q["select"], f"{section}.select")]
        presets[quick] = Preset.from_config(quick, config, moved, moved=(q["dataset"], q["cell_prefix"]))
        presets[quick].check_jobs()
    except PlanError as e:
        errors[quick] = e


def _unique_names(rows: list[dict], presets: dict, errors: dict) -> None:
    """A cell names one recipe in every grid (the workflow finds a row by its name): a
    field grid reusing a name of another grid is refused, in one line."""
    owner = {r["cell"]: "the paper's grid" for r in rows}
    for name, p in list(presets.items()):
        if name in ("full", "quick"):
            continue
        for r in p.table_rows:
            seen = owner.setdefault(r["cell"], name)
            if seen != name and name not in errors:
                errors[name] = PlanError(f"{p.cells}: cell {r['cell']!r} is already a cell of {seen}; "
                                         "a cell's name must be unique across the grids")


def tracking_uri(config: dict, preset: Preset) -> str:
    """config mlflow.uri, else $MLFLOW_TRACKING_URI, else SQLite in the preset's folder."""
    return config["mlflow"]["uri"] or os.environ.get("MLFLOW_TRACKING_URI") or layout.default_store(preset.results)


def put_checkout_first() -> None:
    """Jobs inherit this process's environment: with this checkout first on PYTHONPATH
    they run its package, pip-installed or not (a clone beside another's install)."""
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


def data_dir(config: dict) -> str:
    """config data_dir, else $LOCALLEARN_DATA, else ./data (locallearn's own default)."""
    return layout.data_dir(config["data_dir"])


# --------------------------------------------------------------------------- the end of a run
# What Snakemake's onsuccess and onerror print (the Snakefile): read from the files the
# run left (tables/summary.csv, run folders, job logs), importing no reporting code.

# the Snakefile's targets that name a preset (its rule names); no target: `all`
TARGET_PRESETS = {"all": "full", "tables": "full", "quick": "quick", "peers": "peers", "peers_quick": "peers-quick",
                  "infopro": "infopro", "infopro_quick": "infopro-quick"}
VERDICTS = ("within", "outside", "budget", "holdout", "no published", "not yet run")


def requested_presets(argv: list[str]) -> list[str]:
    """The presets the command line's targets ask for (`all` where it names none)."""
    named = [TARGET_PRESETS[a] for a in argv if a in TARGET_PRESETS]
    return list(dict.fromkeys(named)) or ["full"]


def verdict_counts(summary_csv: Path) -> dict[str, int] | None:
    """How many cells of a compiled summary.csv have each kind of verdict (VERDICTS)."""
    import csv
    try:
        with open(summary_csv, newline="") as f:
            verdicts = [row["verdict"] for row in csv.DictReader(f)]
    except (OSError, KeyError, csv.Error):
        return None
    return {kind: sum(v.startswith(kind) for v in verdicts) for kind in VERDICTS}


def end_of_run(config: dict, presets: Presets, names: list[str], started: float, ok: bool) -> str:
    """onsuccess: where each preset's tables, README, report and MLflow runs are, and its
    verdict counts. onerror: the runs that failed in this invocation (no metrics.json, a
    job log written since `started`), each with its log, and how to resume them."""
    lines = []
    for name in names:
        try:
            p = presets[name]
        except PlanError:
            continue
        res = Path(p.results)
        if ok:
            counts = verdict_counts(res / "tables" / "summary.csv")
            uri = tracking_uri(config, p)
            if uri.startswith("sqlite:///"):
                ui = (f"mlflow ui --backend-store-uri {uri} --artifacts-destination {res / 'mlartifacts'}, "
                      "then open http://127.0.0.1:5000")
            else:
                ui = f"open {layout_uri(uri)}"
            target = next(t for t, n in TARGET_PRESETS.items() if n == name and t != "tables")
            lines += [f"locallearn: {name} preset done.",
                      f"  tables: {res / 'tables' / 'tables.md'} (numbers: summary.csv, LaTeX: summary.tex)",
                      f"  README: {p.readme}",
                      f"  report: snakemake --report {res / 'report.html'} {'' if target == 'all' else target}".rstrip(),
                      f"  MLflow: {ui}"]
            if counts is not None:
                lines.append(f"  verdicts: {counts['within']} within tolerance, {counts['outside']} outside, "
                             f"{counts['budget']} budget runs, {counts['holdout']} holdout runs, "
                             f"{counts['no published']} without a published number, {counts['not yet run']} not yet run")
            continue
        failed = []
        for r in p.rows:
            for seed in p.seeds:
                log = res / "logs" / "train" / r["cell"] / f"seed{seed}.log"
                done = Path(p.metrics(r["cell"], seed)).is_file()
                if not done and log.is_file() and log.stat().st_mtime >= started:
                    failed.append(f"  {r['cell']} seed {seed}: {log}")
        if failed:
            lines += [f"locallearn: {len(failed)} run(s) of the {name} preset failed:", *failed,
                      "  Each log's last lines say why. Rerunning the same command resumes them from their "
                      "last checkpoint; finished runs are never trained again."]
    return "\n".join(lines)


def layout_uri(uri: str) -> str:
    """A tracking server's address as it may be shown (credentials taken out)."""
    from ..credentials import redact_uri
    return redact_uri(uri)


# --------------------------------------------------------------------------- estimates
# Measured where someone measured (recipe/gridcost.py: `locallearn bench --grid` on the device),
# else a cost model: multiply-adds of a training and a test example counted from the
# architecture (recipe/cost.py), 2 FLOP each, over an effective device throughput, plus a fixed
# cost per optimizer step (config key `estimate`).

def estimate_hours(row: dict, est: dict, epochs: int | None = None,
                   max_train: int = 0, max_test: int = 0) -> float:
    """FLOP-model device hours of one run of `row` (config key `estimate`)."""
    cfg = recipe(row)
    n_train, n_test = gridcost.examples_seen(run_spec(cfg), max_train, max_test)
    cost = network_cost(cfg)
    flops = 2 * (cost.train_macs * n_train + cost.eval_macs * n_test)
    steps = math.ceil(n_train / 128)
    seconds_per_epoch = flops / (est["tflops"] * 1e12) + steps * est["step_overhead_ms"] / 1000
    return (epochs or int(row["epochs"])) * seconds_per_epoch / 3600


UNMODELLED_HOURS = 24   # GPU hours assumed for a run of a network without a cost model


def measured_table(config: dict, preset: Preset) -> dict | None:
    """The grid cost measured on this preset's kind of device in its precision, if any."""
    kind = "cuda" if preset.gpu else "cpu"
    return gridcost.load_table(gridcost.table_path(results_root(config), kind, preset.precision))


def runtime_minutes(row: dict, config: dict, preset: Preset, attempt: int = 1) -> int:
    """The `runtime` resource (minutes): config train.runtime_minutes[dataset], else the
    measured hours (or, unmeasured, the FLOP model's) x estimate.safety_factor + 10
    minutes of start-up; times the attempt, so that a job killed at its time limit (an
    estimate, never measured on that GPU) is retried with more."""
    return attempt * _runtime_minutes(row, config, preset)


def _runtime_minutes(row: dict, config: dict, preset: Preset) -> int:
    fixed = config["train"]["runtime_minutes"].get(row["dataset"])
    if fixed:
        return int(fixed)
    est = config["estimate"]
    budget = (preset.epochs, preset.max_train_examples, preset.max_test_examples)
    table = measured_table(config, preset)
    hours = gridcost.cell_hours(table, row, *budget, spec=run_spec(recipe(row))) if table else None
    if hours is None:
        try:
            hours = estimate_hours(row, est, *budget)
        except ConfigError:   # a network recipe/cost.py has no model of yet: a day, x safety_factor
            hours = UNMODELLED_HOURS
        if preset.gpu == 0:
            hours *= est["cpu_slowdown"]
    return int(math.ceil(hours * 60 * est["safety_factor"])) + 10


def mem_mb(row: dict, config: dict, attempt: int = 1) -> int:
    """The `mem_mb` resource: config train.mem_mb[dataset] (else its default), times the
    attempt: a job retried (the SLURM profile's retries) gets more than the one that failed."""
    m = config["train"]["mem_mb"]
    return int(m.get(row["dataset"], m["default"])) * attempt


def hours_by_dataset(rows: list[dict], est: dict, seeds: int = 1) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rows:
        out[r["dataset"]] = out.get(r["dataset"], 0.0) + seeds * estimate_hours(r, est)
    return out


if __name__ == "__main__":  # python -m locallearn.workflow.plan: the README's estimate table
    cfg = load_config()
    rows = load_cells(cells_path(cfg))
    table = hours_by_dataset(rows, cfg["estimate"])
    print("| Dataset | Cells | Estimated GPU-hours (1 seed) |\n|:--|--:|--:|")
    for ds, h in table.items():
        print(f"| {ds} | {sum(r['dataset'] == ds for r in rows)} | {h:.1f} |")
    print(f"| **all** | {len(rows)} | {sum(table.values()):.1f} |")
