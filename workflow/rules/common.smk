# Config and grid, validated before any job is scheduled; helpers for the rules.
# The logic lives in workflow/scripts/plan.py (plain Python, unit-tested).
#
# Which runs are trained is decided here, not by Snakemake's rerun triggers: a run
# folder with a finished metrics.json of its current recipe is final (plan.run_state).
# Its metrics.json is read by the tables and figures but is no job's output in the DAG,
# so no trigger (mtime, code, params, input, software-env), profile, --forcerun or a
# fresh `git clone` can schedule it again, delete it or overwrite it.
import re
import sys
import time

from snakemake.exceptions import WorkflowError

sys.path[:0] = [str(Path(workflow.basedir)), str(Path(workflow.basedir) / "workflow" / "scripts")]
import plan  # noqa: E402

try:
    _checked = plan.validate_config(config)
    CELLS = plan.load_cells(plan.cells_path(_checked))
    PRESETS = plan.make_presets(_checked, CELLS)  # "quick" raises on use where its rows are missing
    STAGES = plan.pipeline_stages(_checked, CELLS)  # cell -> pipeline stages (1: one process)
except plan.HarnessError as e:
    raise WorkflowError(str(e)) from None
config.clear()
config.update(_checked)  # the typed config: what the scripts read as snakemake.config

ROW = {r["cell"]: r for r in CELLS}
RES = plan.results_root(config)
CONDA_ENV = "../../envs/environment.yaml"  # relative to workflow/rules/
# Names the folder a replaced run is moved to (seed<k>.replaced-<STAMP>): this invocation.
STAMP = time.strftime("%Y%m%d-%H%M%S")


wildcard_constraints:
    preset="|".join(plan.PRESETS),
    cell="|".join(re.escape(c) for c in ROW),
    seed=r"\d+",
    dataset="|".join(sorted({r["dataset"] for r in CELLS})),
    stamp=r"\d{8}-\d{6}",


def preset(name):
    """The named preset, or the reason it cannot run (as a Snakemake error)."""
    try:
        return PRESETS[name]
    except plan.HarnessError as e:
        raise WorkflowError(str(e)) from None


def train_args(wildcards):
    """The flags that decide a run's numbers: the row's recipe, the preset's budget and
    train.extra_args (plan.Preset.args). When they differ from a finished run's, the
    run is moved aside and trained again."""
    return preset(wildcards.preset).args(ROW[wildcards.cell])


def train_inputs(wildcards):
    """The dataset checked, the MLflow experiment created and, for a run folder holding
    a run of another recipe, that run moved aside first (rule set_aside)."""
    p = preset(wildcards.preset)
    inputs = {
        "data": f"{RES}/.prepared/{ROW[wildcards.cell]['dataset']}.ok",
        "tracking": f"{RES}/{wildcards.preset}/mlflow.init.json",
    }
    if p.state(ROW[wildcards.cell], wildcards.seed) == plan.REPLACE:
        inputs["replaced"] = f"{p.run_dir(wildcards.cell, wildcards.seed)}.replaced-{STAMP}/replaced.json"
    return inputs


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


def targets(name):
    """Everything a named target (all, quick) builds: its runs still to train, then the
    figures, tables and README from every finished run."""
    p = preset(name)
    if REPORTING:
        return report_targets(p)
    return [
        *p.to_train(),
        *[f"{p.results}/figures/{kind}/{r['cell']}.png" for r in p.rows for kind in ("curves", "layers")],
        f"{p.results}/figures/scatter.png",
        f"{p.results}/tables/summary.md",
        f"{p.results}/tables/readme.ok",
    ]


def report_targets(p):
    """The report's part of a preset that exists now: each cell's figures, the scatter,
    and the tables (these only when all of compile_tables' outputs exist, since the
    report needs every output of a job it shows). The tables list the cells not yet run."""
    figures = [f"{p.results}/figures/{kind}/{r['cell']}.png" for r in p.table_rows for kind in ("curves", "layers")]
    tables = [f"{p.results}/tables/{name}.md" for name in ("tables", "summary", "pending")]
    made = [f for f in [*figures, f"{p.results}/figures/scatter.png", f"{p.results}/tables/readme.ok"]
            if Path(f).is_file()]   # readme.ok: not in the report, but its job's runtime is
    return made + (tables if all(Path(f).is_file() for f in tables) else [])
