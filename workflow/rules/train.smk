rule train:
    """One cell x seed: `locallearn train <recipe> --seed S --out <run dir> ...` (under
    `torchrun --nproc-per-node S ... --pipeline-stages S` for a pipelined cell).
    Only metrics.json is declared: the checkpoint beside it survives a failed job, and the
    same command resumes from it. The full command line heads the log."""
    input:
        data=lambda wc: ancient(f"{RES}/.prepared/{ROW[wc.cell]['dataset']}.ok"),
        tracking=ancient(f"{RES}/{{preset}}/mlflow.init.json"),
    output:
        f"{RES}/{{preset}}/runs/{{cell}}/seed{{seed}}/metrics.json",
    log:
        f"{RES}/{{preset}}/logs/train/{{cell}}/seed{{seed}}.log",
    benchmark:
        f"{RES}/{{preset}}/benchmarks/train/{{cell}}/seed{{seed}}.tsv"
    params:
        args=train_args,
    # A pipelined cell (config pipeline_stages) runs S processes: S x threads, S x GPUs.
    threads: lambda wc: PRESETS[wc.preset].threads * STAGES[wc.cell]
    resources:
        gpu=lambda wc: PRESETS[wc.preset].gpu * STAGES[wc.cell],
        mem_mb=lambda wc: harness.mem_mb(ROW[wc.cell], config),
        runtime=lambda wc: harness.runtime_minutes(ROW[wc.cell], config, PRESETS[wc.preset]),
    conda:
        CONDA_ENV
    script:
        "../scripts/run_locallearn.py"
