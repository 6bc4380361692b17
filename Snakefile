# locallearn: the paper's grid as a Snakemake workflow (see README.md).
#
#   snakemake --cores all                  # `all`: the full replication (every selected cell x seed)
#   snakemake --cores all quick            # the Fashion-MNIST mlp row, 2 epochs, on the CPU
#   snakemake --cores 1 tables             # tables + figures from whatever runs exist; README
#   snakemake --cores all peers            # the field's grid, AugLocal's table (docs/peers.md); not in `all`
#   snakemake --cores all peers_quick      # every method of it on Fashion-MNIST, a tiny budget, on the CPU
#   snakemake --cores all infopro          # InfoPro's Table 2, 5 seeds (docs/infopro.md); not in `all`
#   snakemake --cores all infopro_quick    # greedy SL and InfoPro (Contrast) of it on Fashion-MNIST, on the CPU
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


rule peers:
    """The field's grid (config peers.cells): BP, DGL, PredSim, InfoPro and AugLocal on
    the CIFAR ResNets, beside AugLocal's published table; tables into docs/peers.md."""
    input:
        lambda wildcards: targets("peers"),


rule peers_quick:
    """Every method of the peers grid's ResNet-32 CIFAR-10 rows on real Fashion-MNIST at
    a tiny budget (config peers_quick), on the CPU in minutes."""
    input:
        lambda wildcards: targets("peers-quick"),


rule infopro:
    """InfoPro's Table 2 at K=16 (config infopro.cells): end-to-end, greedy SL, DGL and
    InfoPro (Softmax, Contrast) against its mean ± std of 5 trials; tables into docs/infopro.md."""
    input:
        lambda wildcards: targets("infopro"),


rule infopro_quick:
    """Greedy SL and InfoPro (Contrast) of the infopro grid on real Fashion-MNIST at a
    tiny budget (config infopro_quick), on the CPU."""
    input:
        lambda wildcards: targets("infopro-quick"),


onsuccess:
    # where the tables, README, report and MLflow runs are, and the verdicts (plan.end_of_run)
    print(plan.end_of_run(config, PRESETS, plan.requested_presets(sys.argv[1:]), STARTED, ok=True))


onerror:
    # the runs that failed, each with its log, and how to resume them
    print(plan.end_of_run(config, PRESETS, plan.requested_presets(sys.argv[1:]), STARTED, ok=False),
          file=sys.stderr)


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/readme.smk"
