rule set_aside:
    """A run folder holding a run of another recipe (its row in cells.tsv, the quick
    budget or train.extra_args changed) is moved, whole, to seed<k>.replaced-<time>/
    before its new run is scheduled: nothing of it (metrics.json, checkpoint, train.log)
    is ever deleted. replaced.json says what was moved and why."""
    output:
        f"{RES}/{{preset}}/runs/{{cell}}/seed{{seed}}.replaced-{{stamp}}/replaced.json",
    log:
        f"{RES}/{{preset}}/logs/set_aside/{{cell}}/seed{{seed}}-{{stamp}}.log",
    params:
        args=train_args,
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/run_locallearn.py"


rule train:
    """One cell x seed not yet finished: `locallearn train <recipe> --seed S --out <run
    dir> ...` (under `torchrun --nproc-per-node S ... --pipeline-stages S` for a pipelined
    cell). Only metrics.json is declared: the checkpoint beside it survives a failed job,
    and the same command resumes from it. The run folder keeps its own train.log, one
    header (command, host, time) per attempt; the rule's log holds the last attempt."""
    input:
        unpack(train_inputs),
    output:
        f"{RES}/{{preset}}/runs/{{cell}}/seed{{seed}}/metrics.json",
    log:
        f"{RES}/{{preset}}/logs/train/{{cell}}/seed{{seed}}.log",
    benchmark:
        f"{RES}/{{preset}}/benchmarks/train/{{cell}}/seed{{seed}}.tsv"
    params:
        args=train_args,
    # A pipelined cell (config pipeline_stages) runs S processes: S x threads, S x GPUs.
    threads: lambda wc: preset(wc.preset).threads * STAGES[wc.cell]
    resources:
        gpu=lambda wc: preset(wc.preset).gpu * STAGES[wc.cell],
        mem_mb=lambda wc: plan.mem_mb(ROW[wc.cell], config),
        runtime=lambda wc: plan.runtime_minutes(ROW[wc.cell], config, preset(wc.preset)),
    conda:
        CONDA_ENV
    script:
        "../scripts/run_locallearn.py"
