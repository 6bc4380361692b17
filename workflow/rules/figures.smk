rule curve:
    """Test and train error per epoch of one cell, every seed, against the published error."""
    input:
        seed_metrics,
    output:
        f"{RES}/{{preset}}/figures/curves/{{cell}}.png",
    log:
        f"{RES}/{{preset}}/logs/figures/{{cell}}.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/report.py"


rule scatter:
    """Our final test error against the published one, every selected cell."""
    input:
        preset_metrics,
    output:
        f"{RES}/{{preset}}/figures/scatter.png",
    log:
        f"{RES}/{{preset}}/logs/figures/scatter.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/report.py"
