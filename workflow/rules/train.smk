rule set_aside:
    """A run folder holding a run of another recipe (its row in cells.tsv, the quick
    budget or train.extra_args changed) is moved, whole, to seed<k>.replaced-<time>/
    by the trainer before Snakemake may delete the old metrics.json (it removes a job's
    declared outputs before the job runs): nothing of it is ever deleted. replaced.json
    says what was moved and why."""
    output:
        f"{RES}/{{preset}}/runs/{{cell}}/seed{{seed}}.replaced-{{stamp}}/replaced.json",
    log:
        f"{RES}/{{preset}}/logs/set_aside/{{cell}}/seed{{seed}}-{{stamp}}.log",
    params:
        locallearn=LOCALLEARN,
        recipe=recipe_flags,
        out=lambda wc: preset(wc.preset).run_dir(wc.cell, wc.seed),
        to=lambda wc, output: os.path.dirname(output[0]),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "{params.locallearn} train {params.recipe} --seed {wildcards.seed} --out {params.out}"
        " --set-aside-to {params.to} > {log} 2>&1"


rule train:
    """One cell x seed not yet finished. The trainer owns the run folder: it resumes an
    unfinished run of this recipe from its checkpoint, appends train.log (one header per
    attempt; this rule's log holds the last attempt), leases its GPU(s) and, for a
    pipelined cell, starts its stages under torchrun. Only metrics.json is declared:
    the checkpoint beside it survives a failed job."""
    input:
        unpack(train_inputs),
    output:
        f"{RES}/{{preset}}/runs/{{cell}}/seed{{seed}}/metrics.json",
    log:
        f"{RES}/{{preset}}/logs/train/{{cell}}/seed{{seed}}.log",
    benchmark:
        f"{RES}/{{preset}}/benchmarks/train/{{cell}}/seed{{seed}}.tsv"
    params:
        locallearn=LOCALLEARN,
        recipe=recipe_flags,
        out=lambda wc: preset(wc.preset).run_dir(wc.cell, wc.seed),
        run=run_flags,
    # A pipelined cell (config pipeline_stages) runs S processes: S x threads, S x GPUs.
    threads: lambda wc: preset(wc.preset).threads * STAGES[wc.cell]
    resources:
        gpu=lambda wc: preset(wc.preset).gpu * STAGES[wc.cell],
        # both grow with the attempt: a retried job (the SLURM profile retries) gets more
        mem_mb=lambda wc, attempt: plan.mem_mb(ROW[wc.cell], config, attempt),
        runtime=lambda wc, attempt: plan.runtime_minutes(ROW[wc.cell], config, preset(wc.preset), attempt),
    conda:
        CONDA_ENV
    shell:
        "{params.locallearn} train {params.recipe} --seed {wildcards.seed} --out {params.out} {params.run}"
        " --job-log {log}"
