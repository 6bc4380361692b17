"""Snakemake `script:` of the rules that call the locallearn CLI (prepare_data,
tracking_init, set_aside, train): a shim into jobs.py, where the jobs are."""
import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821  (snakemake is injected by Snakemake)
import jobs  # noqa: E402

jobs.main(snakemake)  # noqa: F821
