rule prepare_data:
    """Fetch or import a dataset once and verify its checksums, before its training jobs."""
    output:
        f"{RES}/.prepared/{{dataset}}.ok",
    log:
        f"{RES}/.prepared/{{dataset}}.log",
    params:
        locallearn=LOCALLEARN,
        where=lambda wc: quoted(["--data-dir", plan.data_dir(config)]
                                + (["--download"] if config["download"] else [])
                                + (["--source", config["data_source"]] if config["data_source"] else [])),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "{params.locallearn} data prepare {wildcards.dataset} {params.where} --record {output} > {log} 2>&1"


rule tracking_init:
    """Create the MLflow store and experiment of a preset once, before its jobs (which
    would otherwise race to create them)."""
    output:
        f"{RES}/{{preset}}/mlflow.init.json",
    log:
        f"{RES}/{{preset}}/logs/tracking_init.log",
    params:
        locallearn=LOCALLEARN,
        store=lambda wc: quoted(["--uri", mlflow_uri(preset(wc.preset)),
                                 "--experiment", preset(wc.preset).experiment]),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "{params.locallearn} tracking init {params.store} --record {output} > {log} 2>&1"
