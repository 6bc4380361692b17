rule curve:
    """Test and train error per epoch of one cell, every seed, against the published error."""
    input:
        seed_metrics,
    output:
        report(
            f"{RES}/{{preset}}/figures/curves/{{cell}}.png",
            caption="../report/curve.rst",
            category="Learning curves",
            subcategory=lambda wc: ROW[wc.cell]["dataset"],
            labels={"cell": "{cell}"},
        ),
    log:
        f"{RES}/{{preset}}/logs/figures/{{cell}}.log",
    params:
        locallearn=LOCALLEARN,
        report=lambda wc: report_flags(wc.preset),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "{params.locallearn} report curve {wildcards.cell} {params.report} > {log} 2>&1"


rule layers:
    """One cell's layers over the epochs: each hidden layer's local error (or local loss)
    beside the output's training and test error."""
    input:
        seed_metrics,
    output:
        report(
            f"{RES}/{{preset}}/figures/layers/{{cell}}.png",
            caption="../report/layers.rst",
            category="Per-layer errors",
            subcategory=lambda wc: ROW[wc.cell]["dataset"],
            labels={"cell": "{cell}"},
        ),
    log:
        f"{RES}/{{preset}}/logs/figures/{{cell}}.layers.log",
    params:
        locallearn=LOCALLEARN,
        report=lambda wc: report_flags(wc.preset),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "{params.locallearn} report layers {wildcards.cell} {params.report} > {log} 2>&1"


rule scatter:
    """Our final test error against the published one, every selected cell."""
    input:
        preset_metrics,
    output:
        report(
            f"{RES}/{{preset}}/figures/scatter.png",
            caption="../report/scatter.rst",
            category="Ours vs published",
        ),
    log:
        f"{RES}/{{preset}}/logs/figures/scatter.log",
    params:
        locallearn=LOCALLEARN,
        report=lambda wc: report_flags(wc.preset),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "{params.locallearn} report scatter {params.report} > {log} 2>&1"


rule field:
    """The field in one picture (the peers presets): test error against cost (peak
    memory, multiply-adds), one point per finished cell of this preset's grid and of the
    paper's grid beside it."""
    input:
        preset_metrics,
    output:
        report(
            f"{RES}/{{preset}}/figures/field.png",
            caption="../report/field.rst",
            category="Error against cost",
        ),
    log:
        f"{RES}/{{preset}}/logs/figures/field.log",
    params:
        locallearn=LOCALLEARN,
        report=lambda wc: report_flags(wc.preset),
        also=lambda wc: quoted(["--field-also", preset("full").results, preset("full").cells]),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "{params.locallearn} report field {params.report} {params.also} > {log} 2>&1"
