rule splice_readme:
    """Put the tables between the README's markers (full: config `readme`; quick:
    <results_dir>/quick/README.md). Writes only when they changed; the README itself is
    not a declared output, so Snakemake never deletes it."""
    input:
        f"{RES}/{{preset}}/tables/tables.md",
    output:
        f"{RES}/{{preset}}/tables/readme.ok",
    log:
        f"{RES}/{{preset}}/logs/readme.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/report.py"
