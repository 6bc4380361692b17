"""The host a run uses: the process, GPU leases, the environment, precision, kernel flags."""
