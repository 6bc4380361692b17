rule splice_readme:
    """Put the tables between the README's markers (full: config `readme`; quick:
    <results_dir>/quick/README.md, made if missing). Writes only when they changed; the
    README itself is not a declared output, so Snakemake never deletes it."""
    input:
        f"{RES}/{{preset}}/tables/tables.md",
    output:
        f"{RES}/{{preset}}/tables/readme.ok",
    log:
        f"{RES}/{{preset}}/logs/readme.log",
    params:
        locallearn=LOCALLEARN,
        report=lambda wc: report_flags(wc.preset),
        readme=lambda wc: readme_flags(wc.preset),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "{params.locallearn} report readme {params.report} {params.readme} > {log} 2>&1 && touch {output}"
