rule prepare_data:
    """Fetch or import a dataset once and verify its checksums, before its training jobs."""
    output:
        f"{RES}/.prepared/{{dataset}}.ok",
    log:
        f"{RES}/.prepared/{{dataset}}.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/run_locallearn.py"


rule tracking_init:
    """Create the MLflow store and experiment of a preset once, before its jobs (which
    would otherwise race to create them)."""
    output:
        f"{RES}/{{preset}}/mlflow.init.json",
    log:
        f"{RES}/{{preset}}/logs/tracking_init.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/run_locallearn.py"
