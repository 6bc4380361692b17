rule compile_tables:
    """The paper's tables with our errors beside the published ones, and the summary
    (delta, verdict). Waits for every selected run; reads every run that exists."""
    input:
        preset_metrics,
    output:
        tables=report(f"{RES}/{{preset}}/tables/tables.md", caption="../report/tables.rst", category="Tables"),
        summary=report(f"{RES}/{{preset}}/tables/summary.md", caption="../report/summary.rst", category="Tables"),
        pending=report(f"{RES}/{{preset}}/tables/pending.md", caption="../report/pending.rst", category="Tables"),
    log:
        f"{RES}/{{preset}}/logs/tables.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/report.py"


rule tables:
    """Named target: tables, figures and the README from whatever runs of the full preset
    exist now, and those runs mirrored into its MLflow store; trains nothing. Cells
    without metrics.json show as "not run"."""
    log:
        f"{RES}/full/logs/tables-target.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/report.py"
