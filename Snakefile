# locallearn: the paper's grid as a Snakemake workflow (see README.md).
#
#   snakemake --cores all                  # `all`: the full replication (every selected cell x seed)
#   snakemake --cores all quick            # the Fashion-MNIST mlp row, 2 epochs, on the CPU
#   snakemake --cores 1 tables             # tables + figures from whatever runs exist; README
#
# Config: workflow/config/config.yaml (checked against workflow/schemas/ before any job).
# The grid: workflow/config/cells.tsv, one row per cell.
# Only runs without a finished metrics.json of their recipe become jobs (rules/common.smk);
# the stages: rules/data.smk (prepare_data, tracking_init), rules/train.smk (set_aside,
# train), rules/figures.smk, rules/tables.smk, rules/readme.smk.
from snakemake.utils import min_version

min_version("9.0")


# Taken from the repository wherever snakemake runs (--directory elsewhere works).
configfile: Path(workflow.basedir) / "workflow" / "config" / "config.yaml"


include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"


rule all:
    """The full replication: train every selected cell x seed, then tables, figures, README."""
    default_target: True
    input:
        lambda wildcards: targets("full"),


rule quick:
    """A few minutes on a CPU: the Fashion-MNIST mlp row with a small epoch budget
    (config quick.select; only this target needs those rows in the grid)."""
    input:
        lambda wildcards: targets("quick"),


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/readme.smk"
