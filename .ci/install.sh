#!/usr/bin/env bash
# Set up everything the quick replication and the tests need, in a virtual environment
# `.venv/` at the repository root, then use it:
#
#   bash .ci/install.sh && . .venv/bin/activate
#
# - Python: $PYTHON if set, else `python3` (>= 3.11). A distribution's python3 is fine:
#   nothing is installed into it (a venv is not "externally managed", PEP 668). Where
#   its venv module is missing (Debian/Ubuntu without python3-venv) it is installed with
#   apt-get when we are root.
# - Debian's real Fashion-MNIST (dataset-fashion-mnist), for the quick replication and
#   the tests, with apt-get when we are root; elsewhere pass `--config download=true`.
# - The locked environment, envs/requirements.txt: the exact versions of everything the
#   project runs and tests with (PyTorch, mlflow, snakemake, the SLURM executor plugin,
#   pytest, ...; docs/environment.md), then this package, editable, without dependencies
#   (the lock has them all; `pip check` confirms it). pip reads the machine's pip
#   configuration as usual, so a machine that serves these wheels from local disk still does.
# - Not SLURM or munge: only the cluster tests need them, and .ci/slurm-up.sh, which
#   those tests call, installs them.
#
# Idempotent: a second run with the same lock, pyproject.toml and this same script reuses
# the populated venv without calling pip (about a second). `rm -rf .venv` starts over.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd -P)
VENV=.venv
STAMP=$VENV/.locallearn-installed
LOCK=envs/requirements.txt

say() { echo "install: $*"; }
die() { echo "install: error: $*" >&2; exit 1; }
as_root_with_apt() { [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; }
apt_install() {
  say "apt-get install $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---------------------------------------------------------------- the interpreter
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || die "no '$PY' on PATH; install Python >= 3.11 or set PYTHON=/path/to/python3"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$PY is Python $("$PY" -c 'import platform; print(platform.python_version())'); locallearn needs >= 3.11 (set PYTHON=...)"

# ------------------------------------------------------------------ Debian packages
if [[ ! -d /usr/share/datasets/fashion-mnist ]]; then
  if as_root_with_apt; then
    apt_install dataset-fashion-mnist
  else
    say "note: Debian's dataset-fashion-mnist is not installed (needs root and apt-get);" \
        "run the quick replication with --config download=true"
  fi
fi

# --------------------------------------------------------------------- the venv
# A venv whose interpreter no longer runs (Python upgraded or removed) is rebuilt.
if [[ -e $VENV ]] && ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
  say "$VENV is broken (its python does not run); rebuilding it"
  rm -rf "$VENV"
fi
if [[ ! -e $VENV ]]; then
  # Debian/Ubuntu split venv's pip bootstrap (ensurepip) into python3.X-venv; without
  # it `python3 -m venv` fails half-way, leaving a venv without pip.
  if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    as_root_with_apt || die "'$PY -m venv' does not work here (on Debian/Ubuntu: apt-get install python$ver-venv, as root)"
    apt_install "python$ver-venv"
    "$PY" -m venv "$VENV" || die "'$PY -m venv $VENV' failed even with python$ver-venv installed"
  fi
  say "created $VENV with $("$VENV/bin/python" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
fi

# ------------------------------------------------------------- the Python packages
# What decides the venv's contents: the lock, pyproject.toml, this script, and where the
# editable install points (a moved repository needs a new venv anyway).
want=$(cat "$LOCK" pyproject.toml .ci/install.sh <(echo "$REPO") | sha256sum | cut -d' ' -f1)
if [[ -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
  say "$VENV is up to date ($(.venv/bin/locallearn --version))"
  exit 0
fi
rm -f "$STAMP"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
# The lock first (on this project's machines pip takes torch and torchvision from local
# disk), then the package itself, built with the lock's setuptools.
"${PIP[@]}" -r "$LOCK"
"${PIP[@]}" --no-deps --no-build-isolation -e '.[dev,gpu]'
"$VENV/bin/python" -m pip check >/dev/null || die "$LOCK does not hold all that is installed needs: $("$VENV/bin/python" -m pip check | head -3)"
"$VENV/bin/locallearn" --version >/dev/null || die "the installed locallearn does not start"
echo "$want" >"$STAMP"
say "ready: $("$VENV/bin/locallearn" --version) in $REPO/$VENV (activate: . $VENV/bin/activate)"
