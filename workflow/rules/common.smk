# Config and grid, validated before any job is scheduled; helpers for the rules.
# The logic lives in workflow/scripts/harness.py (plain Python, unit-tested).
import re
import sys

from snakemake.exceptions import WorkflowError

sys.path[:0] = [str(Path(workflow.basedir)), str(Path(workflow.basedir) / "workflow" / "scripts")]
import harness  # noqa: E402

try:
    _checked = harness.validate_config(config)
    CELLS = harness.load_cells(harness.cells_path(_checked))
    PRESETS = harness.make_presets(_checked, CELLS)
    STAGES = harness.pipeline_stages(_checked, CELLS)  # cell -> pipeline stages (1: one process)
except harness.HarnessError as e:
    raise WorkflowError(str(e)) from None
config.clear()
config.update(_checked)  # the typed config: what the scripts read as snakemake.config

ROW = {r["cell"]: r for r in CELLS}
RES = harness.results_root(config)
CONDA_ENV = "../../envs/environment.yaml"  # relative to workflow/rules/


wildcard_constraints:
    preset="|".join(harness.PRESETS),
    cell="|".join(re.escape(c) for c in ROW),
    seed=r"\d+",
    dataset="|".join(sorted({r["dataset"] for r in CELLS})),


def train_args(wildcards):
    """The flags that decide a run's numbers: the row's recipe, the preset's budget and
    train.extra_args. They are the train rule's only params, so changing them (and only
    them) makes Snakemake rerun a finished cell."""
    from locallearn.cells import recipe_args

    preset = PRESETS[wildcards.preset]
    extra = config["train"]["extra_args"] if preset.name == "full" else []
    return harness.with_flags(recipe_args(ROW[wildcards.cell]), preset.budget_args()) + extra


def seed_metrics(wildcards):
    preset = PRESETS[wildcards.preset]
    return [preset.metrics(wildcards.cell, s) for s in preset.seeds]


def preset_metrics(wildcards):
    return PRESETS[wildcards.preset].all_metrics()


def targets(name):
    """Everything a named target (all, quick) builds."""
    preset = PRESETS[name]
    return [
        *preset.all_metrics(),
        *[f"{preset.results}/figures/curves/{r['cell']}.png" for r in preset.rows],
        f"{preset.results}/figures/scatter.png",
        f"{preset.results}/tables/summary.md",
        f"{preset.results}/tables/readme.ok",
    ]
