#!/usr/bin/env bash
# Stop the single-node SLURM cluster that .ci/slurm-up.sh started.
#
#   bash .ci/slurm-down.sh           # cancel its jobs, stop slurmd, slurmctld, munged
#   bash .ci/slurm-down.sh --purge   # also remove the state folder and the
#                                    # /etc/slurm/{slurm,gres}.conf it wrote
#
# Only processes whose pids slurm-up.sh recorded in $STATE/pids/ are stopped (and
# only if /proc says they still are that program), so a munged or SLURM that was
# running before slurm-up.sh is left alone. Idempotent: nothing to stop is fine.
set -uo pipefail

STATE=${LOCALLEARN_SLURM_STATE:-/tmp/locallearn-slurm}
MARKER="# written by locallearn .ci/slurm-up.sh"
PURGE=0
[[ ${1:-} == --purge ]] && PURGE=1

say() { echo "slurm-down: $*"; }

ours() {  # ours NAME: prints the pid if $STATE/pids/NAME.pid is a live NAME process
    local f=$STATE/pids/$1.pid pid
    [[ -s $f ]] || return 1
    pid=$(cat "$f")
    [[ -d /proc/$pid && $(cat /proc/$pid/comm 2>/dev/null) == "$1"* ]] || return 1
    grep -q '^State:[[:space:]]*Z' /proc/$pid/status 2>/dev/null && return 1  # exited already
    echo "$pid"
}

# Cancel the jobs first, while slurmctld and slurmd still run: otherwise their
# slurmstepd processes (children of slurmd that outlive it) keep running.
if pid=$(ours slurmctld); then
    jobs=$(squeue -h -t PENDING,RUNNING,REQUEUED,SUSPENDED,CONFIGURING,COMPLETING -o %i 2>/dev/null | tr '\n' ' ')
    if [[ -n ${jobs// } ]]; then
        say "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null
        for _ in $(seq 50); do
            [[ -z $(squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null) ]] && break
            sleep 0.2
        done
    fi
fi

stop() {  # stop NAME: SIGTERM, wait up to 10 s, then SIGKILL
    local pid
    if ! pid=$(ours "$1"); then
        rm -f "$STATE/pids/$1.pid"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null
    gone() { [[ ! -d /proc/$pid ]] || grep -q '^State:[[:space:]]*Z' /proc/$pid/status 2>/dev/null; }
    for _ in $(seq 50); do gone && break; sleep 0.2; done
    if ! gone; then
        say "$1 (pid $pid) ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null
        sleep 0.5
    fi
    rm -f "$STATE/pids/$1.pid"
    say "stopped $1 (pid $pid)"
}

# Reverse order of start: the node, the controller, then authentication.
stop slurmd
stop slurmctld
stop munged

if (( PURGE )); then
    for f in /etc/slurm/slurm.conf /etc/slurm/gres.conf; do
        [[ -f $f ]] && grep -qF "$MARKER" "$f" && rm -f "$f" && say "removed $f"
    done
    [[ -d $STATE ]] && rm -rf "$STATE" && say "removed $STATE"
fi
exit 0
