"""Snakemake `script:` of the rules that call the locallearn CLI; the jobs are in jobs.py.

Kept this short on purpose: Snakemake reruns every finished job whose script text
changed (its "code" rerun trigger), so a change to the job logic must not touch this
file, or every trained cell would be trained again."""
import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821  (snakemake is injected by Snakemake)
import jobs  # noqa: E402

jobs.main(snakemake)  # noqa: F821
