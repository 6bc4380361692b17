#!/usr/bin/env bash
# Everything locallearn needs on a fresh Debian machine with Python 3.11, idempotent:
# the real Fashion-MNIST (Debian's package) for the quick replication and the tests,
# SLURM + munge for the cluster test, PyTorch, and this package with its tools.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
  need=()
  [ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
  command -v slurmctld >/dev/null 2>&1 || need+=(slurm-wlm)
  command -v munged >/dev/null 2>&1 || need+=(munge)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

# torch first and pinned: on this kind of machine pip takes both from local disk.
python -m pip install -q torch==2.14.1 torchvision==0.29.1
python -m pip install -q -e '.[dev]'
