# Config and grid, validated before any job is scheduled; helpers for the rules.
# The logic lives in locallearn/workflow/plan.py (plain Python, torch-free, unit-tested).
#
# Which runs are trained is decided by the trainer's own function (locallearn.runs.runstate,
# through plan.Preset.state), not by Snakemake's rerun triggers: a run folder with a
# finished metrics.json of its current recipe is final.
# Its metrics.json is read by the tables and figures but is no job's output in the DAG,
# so no trigger (mtime, code, params, input, software-env), profile, --forcerun or a
# fresh `git clone` can schedule it again, delete it or overwrite it.
import os
import re
import shlex
import sys
import time

from snakemake.exceptions import WorkflowError

# Snakemake puts the Snakefile's folder (this checkout) first on sys.path: its package.
from locallearn.workflow import plan

try:
    _checked = plan.validate_config(config)
    CELLS = plan.load_cells(plan.cells_path(_checked))
    # the presets of every grid: full, quick (CELLS); peers, peers-quick, infopro, infopro-quick
    # (the field's grids). "quick" and the field's presets raise on use where their rows are missing or bad.
    PRESETS = plan.make_presets(_checked, CELLS)
    STAGES = plan.pipeline_stages(_checked, CELLS)  # cell -> pipeline stages (1: one process)
except plan.PlanError as e:
    raise WorkflowError(str(e)) from None
config.clear()
config.update(_checked)  # the typed config

from locallearn.credentials import take_credentials  # noqa: E402
from locallearn.runs.runstate import REPLACE  # noqa: E402  (the trainer's own decision)

# How every job runs the package. config `command`, else this Python with the checkout
# first on PYTHONPATH (jobs inherit it), so jobs run this checkout's package whether or
# not it is pip-installed.
LOCALLEARN = config["command"] or f"{shlex.quote(sys.executable)} -m locallearn"
plan.put_checkout_first()

# every row any preset may train or show (the field grids' and their quick presets' moved rows too)
ROW = {r["cell"]: r for r in CELLS}
for _p in PRESETS.values():   # dict's own values: the presets that can run
    ROW.update({r["cell"]: r for r in _p.table_rows})
for _cell in ROW:   # config pipeline_stages is of the paper's grid: the field's cells run in one process
    STAGES.setdefault(_cell, 1)
RES = plan.results_root(config)
CONDA_ENV = "../../envs/environment.yaml"  # relative to workflow/rules/
# Names the folder a replaced run is moved to (seed<k>.replaced-<STAMP>): this invocation.
STAMP = time.strftime("%Y%m%d-%H%M%S")
STARTED = time.time()   # the end-of-run text names the runs that failed since (Snakefile onerror)


wildcard_constraints:
    preset="|".join(re.escape(p) for p in sorted(plan.PRESETS, key=len, reverse=True)),
    cell="|".join(re.escape(c) for c in ROW),
    seed=r"\d+",
    dataset="|".join(sorted({r["dataset"] for r in ROW.values()})),
    stamp=r"\d{8}-\d{6}",


def preset(name):
    """The named preset, or the reason it cannot run (as a Snakemake error)."""
    try:
        return PRESETS[name]
    except plan.PlanError as e:
        raise WorkflowError(str(e)) from None


def quoted(args):
    return shlex.join(str(a) for a in args)


def recipe_flags(wildcards):
    """The flags that decide a run's numbers: the row's recipe, the preset's budget and
    train.extra_args (plan.Preset.args). When they differ from a finished run's, the
    trainer moves that run aside and trains this recipe."""
    return quoted(preset(wildcards.preset).args(ROW[wildcards.cell]))


def mlflow_uri(p):
    """The preset's tracking URI as it may be shown; credentials go to MLflow's
    variables in the environment, which the jobs inherit (docs: security)."""
    return take_credentials(plan.tracking_uri(config, p))


def run_flags(wildcards, threads):
    """Where and how a run trains, none of which changes its numbers (plan.Preset.run_flags):
    data, MLflow, run name and tags, device, threads per process, pipeline stages."""
    p, row = preset(wildcards.preset), ROW[wildcards.cell]
    return quoted(p.run_flags(config, row, wildcards.seed, threads, STAGES[wildcards.cell]))


def report_flags(name):
    """What a preset's reporting steps read: its rows, seeds, tolerances and budget."""
    p = preset(name)
    flags = ["--results", p.results, "--cells", p.cells, "--seeds", *p.seeds,
             "--tolerance", *[f"{k}={v}" for k, v in config["tolerance"].items()]]
    if p.moved:   # peers-quick, infopro-quick: the grid's rows moved onto another dataset
        flags += ["--on-dataset", *p.moved]
    if name in ("quick", "peers-quick", "infopro-quick"):   # as the grid file names them (before a move)
        flags += ["--only", *[r.get("moved_from", r["cell"]) for r in p.table_rows]]
    if p.epochs:
        flags += ["--epochs", p.epochs]
    if p.max_train_examples:
        flags += ["--max-train-examples", p.max_train_examples]
    if p.max_test_examples:
        flags += ["--max-test-examples", p.max_test_examples]
    return quoted(flags)


def readme_flags(name):
    """The README that receives a preset's tables (the quick preset's is made if missing)."""
    p = preset(name)
    flags = ["--readme", p.readme]
    if name == "quick":
        flags += ["--readme-title", "locallearn: quick replication (budget run)", "--readme-body",
                  "Made by `snakemake --cores all quick`; regenerated on every run. The replication proper "
                  "is `snakemake --cores all` (tables in the top-level README.md)."]
    elif name in ("peers-quick", "infopro-quick"):
        grid = name.split("-")[0]
        flags += ["--readme-title", f"locallearn: the field's methods ({grid}), quick (budget run)", "--readme-body",
                  f"Made by `snakemake --cores all {grid}_quick`; regenerated on every run. The grid "
                  f"proper is `snakemake --cores all {grid}` (tables in docs/{grid}.md)."]
    return quoted(flags)


def train_inputs(wildcards):
    """The dataset checked, the MLflow experiment created and, for a run folder holding
    a run of another recipe, that run moved aside first (rule set_aside)."""
    p = preset(wildcards.preset)
    inputs = {
        "data": f"{RES}/.prepared/{ROW[wildcards.cell]['dataset']}.ok",
        "tracking": f"{RES}/{wildcards.preset}/mlflow.init.json",
    }
    if p.state(ROW[wildcards.cell], wildcards.seed) == REPLACE:
        inputs["replaced"] = aside_record(p, wildcards.cell, wildcards.seed)
    return inputs


def aside_record(p, cell, seed):
    """replaced.json of the folder a run of another recipe is moved to (rule set_aside)."""
    return f"{p.run_dir(cell, seed)}.replaced-{STAMP}/replaced.json"


def to_set_aside(p):
    """The set_aside jobs of a preset, asked for by name: Snakemake runs a job whose
    output is missing only when something needs it, and the train job that waits for
    it would otherwise look finished (its old metrics.json exists)."""
    return [aside_record(p, r["cell"], s) for r in p.rows for s in p.seeds if p.state(r, s) == REPLACE]


def seed_metrics(wildcards):
    """The runs of one cell still to train (the figure waits for them)."""
    p = preset(wildcards.preset)
    return p.to_train([ROW[wildcards.cell]])


def preset_metrics(wildcards):
    """The runs of a preset still to train (tables and scatter wait for them)."""
    return preset(wildcards.preset).to_train()


# `snakemake --report` builds the DAG of its target but runs nothing, and fails on any
# file marked for the report that does not exist: so for the report a target stands for
# what has been made (report_targets), whatever has run so far.
REPORTING = any(a == "--report" or a.startswith("--report=") for a in sys.argv) and "--report-after-run" not in sys.argv


FIELD_FIGURE = ("peers", "peers-quick", "infopro", "infopro-quick")   # presets that draw error against cost (rule field)


def targets(name):
    """Everything a named target (all, quick) builds: its runs still to train, then the
    figures, tables and README from every finished run."""
    p = preset(name)
    if REPORTING:
        return report_targets(p)
    return [
        *to_set_aside(p),
        *p.to_train(),
        *[f"{p.results}/figures/{kind}/{r['cell']}.png" for r in p.rows for kind in ("curves", "layers")],
        f"{p.results}/figures/scatter.png",
        *([f"{p.results}/figures/field.png"] if name in FIELD_FIGURE else []),
        f"{p.results}/tables/summary.md",
        f"{p.results}/tables/readme.ok",
    ]


def report_targets(p):
    """The report's part of a preset that exists now: each cell's figures, the scatter,
    and the tables (these only when all of compile_tables' outputs exist, since the
    report needs every output of a job it shows). The tables list the cells not yet run."""
    figures = [f"{p.results}/figures/{kind}/{r['cell']}.png" for r in p.table_rows for kind in ("curves", "layers")]
    tables = [f"{p.results}/tables/{name}.md" for name in ("tables", "summary", "pending")]
    made = [f for f in [*figures, f"{p.results}/figures/scatter.png", f"{p.results}/figures/field.png",
                        f"{p.results}/tables/readme.ok"]
            if Path(f).is_file()]   # readme.ok: not in the report, but its job's runtime is
    return made + (tables if all(Path(f).is_file() for f in tables) else [])
