rule compile_tables:
    """The paper's tables with our errors beside the published ones, and the summary
    (delta, verdict). Waits for every selected run; reads every run that exists."""
    input:
        preset_metrics,
    output:
        tables=report(f"{RES}/{{preset}}/tables/tables.md", caption="../report/tables.rst", category="Tables"),
        summary=report(f"{RES}/{{preset}}/tables/summary.md", caption="../report/summary.rst", category="Tables"),
        pending=report(f"{RES}/{{preset}}/tables/pending.md", caption="../report/pending.rst", category="Tables"),
        csv=f"{RES}/{{preset}}/tables/summary.csv",   # one row per cell, the numbers (pandas)
        latex=f"{RES}/{{preset}}/tables/summary.tex",
    log:
        f"{RES}/{{preset}}/logs/tables.log",
    params:
        locallearn=LOCALLEARN,
        report=lambda wc: report_flags(wc.preset),
        readme=lambda wc: quoted(["--readme", preset(wc.preset).readme]),   # figure links start from it
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "{params.locallearn} report tables {params.report} {params.readme} > {log} 2>&1"


rule tables:
    """Named target: tables, figures and the README from whatever runs of the full preset
    exist now, and those runs mirrored into its MLflow store; trains nothing. Cells
    without metrics.json are counted as not run. `locallearn tables` runs the same steps."""
    log:
        f"{RES}/full/logs/tables-target.log",
    params:
        locallearn=LOCALLEARN,
        report=report_flags("full"),
        readme=readme_flags("full"),
        store=quoted(["--mlflow-uri", mlflow_uri(PRESETS["full"]), "--mlflow-experiment",
                      PRESETS["full"].experiment]),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "{params.locallearn} report all {params.report} {params.readme} {params.store} 2>&1 | tee {log}"
