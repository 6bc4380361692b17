#!/usr/bin/env bash
# Bring up a real single-node SLURM cluster on this machine (munged, slurmctld,
# slurmd, all on localhost), for the integration test of the SLURM profile
# (tests/test_slurm.py) and for trying the profile by hand.
#
#   bash .ci/slurm-up.sh            # start (idempotent: a second call only checks)
#   bash .ci/slurm-down.sh          # stop exactly what this script started
#
# Why it looks like this (see also shared/notes/slurm-single-node.md):
# - Debian's slurm-wlm (22.05) + munge, installed with apt-get when missing.
# - No slurmdbd: AccountingStorageType=accounting_storage/none, so `sacct` cannot
#   report jobs. MinJobAge=3600 keeps finished jobs visible to `squeue`, which is
#   what the Snakemake executor polls (`slurm-status-command: squeue`).
# - Daemons run in the foreground (-D/-F) in their own session (setsid), and their
#   pids are written to $STATE/pids/, so slurm-down.sh stops only what we started.
# - The node advertises GPUs as GRES so that the profile's per-job GPU request
#   (`gpu: 1` -> `sbatch --gpus=1`) runs unchanged here. On a machine with NVIDIA
#   GPUs these are the real /dev/nvidia* devices; elsewhere they are fake devices
#   (plain files): SLURM still allocates them and sets CUDA_VISIBLE_DEVICES per
#   job, torch just finds no CUDA and the trainer runs on the CPU.
#
# Environment knobs:
#   LOCALLEARN_SLURM_STATE      state folder (default /tmp/locallearn-slurm)
#   LOCALLEARN_SLURM_FAKE_GPUS  GPUs to advertise when there is no NVIDIA GPU (default 2; 0 = none)
#   LOCALLEARN_SLURM_NO_INSTALL=1  never call apt-get (fail if the packages are missing)
#
# Exit codes: 0 up (or already up), 1 failed (diagnostics printed),
#             3 this machine cannot run the daemons at all (not root, no apt-get
#               and no slurm binaries); the test turns 3 into a skip.
set -uo pipefail

STATE=${LOCALLEARN_SLURM_STATE:-/tmp/locallearn-slurm}
FAKE_GPUS=${LOCALLEARN_SLURM_FAKE_GPUS:-2}
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
MARKER="# written by locallearn .ci/slurm-up.sh"
NODE=$(hostname -s)

say() { echo "slurm-up: $*"; }
die() { echo "slurm-up: ERROR: $*" >&2; exit 1; }
cannot() { echo "slurm-up: CANNOT RUN HERE: $*" >&2; exit 3; }

# Process alive and really the program we think (a recycled pid must not count).
alive() {  # alive PIDFILE COMM
    local pid
    [[ -s $1 ]] || return 1
    pid=$(cat "$1")
    [[ -d /proc/$pid ]] || return 1
    # a zombie (exited, not yet reaped) is not alive
    grep -q '^State:[[:space:]]*Z' /proc/$pid/status 2>/dev/null && return 1
    [[ $(cat /proc/$pid/comm 2>/dev/null) == "$2"* ]]
}

show_log() {  # show_log FILE: last lines of a daemon log, for failure diagnostics
    [[ -f $1 ]] || return 0
    echo "----- last lines of $1 -----" >&2
    tail -n 25 "$1" >&2
    echo "-----" >&2
}

# ---------------------------------------------------------------- preconditions
[[ $(id -u) == 0 ]] || cannot "must run as root (slurmd and munged need it); uid is $(id -u)"

mkdir -p "$STATE"/{pids,log,ctld,spool,gpus} || die "cannot create state folder $STATE"

need_install=0
for bin in munged munge unmunge slurmctld slurmd sinfo squeue sbatch scontrol srun; do
    command -v "$bin" >/dev/null 2>&1 || need_install=1
done
if (( need_install )); then
    [[ ${LOCALLEARN_SLURM_NO_INSTALL:-0} == 1 ]] && cannot "slurm-wlm/munge missing and LOCALLEARN_SLURM_NO_INSTALL=1"
    command -v apt-get >/dev/null 2>&1 || cannot "slurm-wlm/munge missing and no apt-get to install them"
    say "installing slurm-wlm and munge with apt-get (about 15 s)"
    export DEBIAN_FRONTEND=noninteractive
    # Try without `apt-get update` first (fast when the lists are fresh); a fresh
    # machine has no lists, so update and retry once.
    if ! apt-get install -y --no-install-recommends slurm-wlm munge >"$STATE/log/apt.log" 2>&1; then
        apt-get update >>"$STATE/log/apt.log" 2>&1
        apt-get install -y --no-install-recommends slurm-wlm munge >>"$STATE/log/apt.log" 2>&1 \
            || { tail -n 20 "$STATE/log/apt.log" >&2; cannot "apt-get install slurm-wlm munge failed (log: $STATE/log/apt.log)"; }
    fi
fi

# -------------------------------------------------------------------- munge
# SLURM authenticates every RPC with munge: a shared key and a local daemon.
munge_ok() { munge -n 2>/dev/null | unmunge 2>/dev/null | grep -q 'STATUS: *Success'; }

if munge_ok; then
    say "munged already answers (pid file: $(alive "$STATE/pids/munged.pid" munged && echo ours || echo 'not ours, left alone'))"
else
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
    chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key; chmod 755 /run/munge
    # --force: munged refuses to start over a stale socket left by a killed daemon.
    setsid munged -F --force >"$STATE/log/munged.out" 2>&1 < /dev/null &
    echo $! >"$STATE/pids/munged.pid"
    for _ in $(seq 50); do munge_ok && break; sleep 0.2; done
    munge_ok || { show_log "$STATE/log/munged.out"; show_log /var/log/munge/munged.log; die "munged did not come up (munge -n | unmunge fails)"; }
    say "munged up (pid $(cat "$STATE/pids/munged.pid"))"
fi

# --------------------------------------------------------------- slurm.conf
ctld_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

if alive "$STATE/pids/slurmctld.pid" slurmctld && alive "$STATE/pids/slurmd.pid" slurmd && ctld_ok; then
    say "already up: $(sinfo -h -N -o '%N %T %G' 2>/dev/null)"
    exit 0
fi
if ctld_ok && ! alive "$STATE/pids/slurmctld.pid" slurmctld; then
    # Someone else's controller (a real install, or one started by hand): use it,
    # never touch it.
    say "a slurmctld not started by this script already answers; leaving it alone"
    sinfo 2>&1
    exit 0
fi

# The configuration is (re)written only while our slurmctld is down: a running
# controller keeps the file it started with (slurmd must read the same one).
write_config() {
    # Refuse to overwrite a slurm.conf we did not write: this may be a real cluster node.
    for f in "$CONF" "$GRES_CONF"; do
        if [[ -s $f ]] && ! grep -qF "$MARKER" "$f"; then
            die "$f exists and was not written by this script; refusing to overwrite it (move it away to use the test cluster)"
        fi
    done

    # GPUs: the real ones if nvidia-smi sees any, else fake device files.
    GPU_FILES=()
    n=0
    command -v nvidia-smi >/dev/null 2>&1 && n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
    if (( n > 0 )); then
        for ((i = 0; i < n; i++)); do GPU_FILES+=("/dev/nvidia$i"); done
        say "advertising $n real GPU(s)"
    else
        # SLURM wants a character device per GPU (it reads its major/minor). Make
        # them with the numbers of harmless memory devices (null, zero, full,
        # random, urandom): nothing ever opens them. Hence at most 5 fake GPUs.
        minors=(3 5 7 8 9)
        (( FAKE_GPUS > 5 )) && FAKE_GPUS=5
        for ((i = 0; i < FAKE_GPUS; i++)); do
            f=$STATE/gpus/fakegpu$i
            rm -f "$f"
            mknod "$f" c 1 "${minors[$i]}" 2>/dev/null \
                || f=$(echo /dev/null /dev/zero /dev/full /dev/random /dev/urandom | cut -d' ' -f$((i + 1)))
            GPU_FILES+=("$f")
        done
        (( FAKE_GPUS > 0 )) && say "no NVIDIA GPU: advertising $FAKE_GPUS fake GPU(s) (files under $STATE/gpus)"
    fi

    # CPU topology exactly as slurmd detects it (a mismatch drains the node), memory
    # a bit below what is available (RealMemory above the real figure drains it too).
    topology=$(slurmd -C 2>/dev/null | head -n1 | grep -o 'CPUs=.*ThreadsPerCore=[0-9]*')
    [[ -n $topology ]] || topology="CPUs=$(nproc)"
    avail_mib=$(awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo)
    real_mib=$(( avail_mib * 85 / 100 ))
    gres_node=""; gres_types=""
    if (( ${#GPU_FILES[@]} > 0 )); then
        gres_node="Gres=gpu:${#GPU_FILES[@]}"; gres_types="GresTypes=gpu"
    fi

    mkdir -p /etc/slurm
    cat >"$CONF" <<EOF
$MARKER (state in $STATE); slurm-down.sh --purge removes it
ClusterName=locallearn
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds (default 120) before it may start
# again; 10 s keeps the requeue test short.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/ctld/slurmctld.daemon.pid
SlurmdPidFile=$STATE/spool/slurmd.daemon.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in containers: track processes by parent pid, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# A node that came back (daemon restart) returns to service by itself.
ReturnToService=2
# No slurmdbd: sacct cannot see jobs; keep finished jobs in squeue for an hour.
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=3600
# No PMIx on this machine; jobs are not MPI.
MpiDefault=none
# Let requeued jobs run again (SLURM's own retry; --requeue in the profile).
JobRequeue=1
# Quick cancellation in tests.
KillWait=5
$gres_types
NodeName=$NODE $topology RealMemory=$real_mib $gres_node State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    if (( ${#GPU_FILES[@]} > 0 )); then
        {
            echo "$MARKER"
            for f in "${GPU_FILES[@]}"; do echo "NodeName=$NODE Name=gpu File=$f"; done
        } >"$GRES_CONF"
    else
        rm -f "$GRES_CONF"
    fi
}
alive "$STATE/pids/slurmctld.pid" slurmctld || write_config

# ---------------------------------------------------------------- daemons
if ! alive "$STATE/pids/slurmctld.pid" slurmctld; then
    # -c: start clean, ignoring job state saved by an earlier run of this script.
    setsid slurmctld -D -c >"$STATE/log/slurmctld.out" 2>&1 < /dev/null &
    echo $! >"$STATE/pids/slurmctld.pid"
fi
for _ in $(seq 100); do
    ctld_ok && break
    alive "$STATE/pids/slurmctld.pid" slurmctld || break
    sleep 0.2
done
if ! ctld_ok; then
    show_log "$STATE/log/slurmctld.out"; show_log "$STATE/log/slurmctld.log"
    die "slurmctld did not come up (scontrol ping fails); config: $CONF"
fi
say "slurmctld up (pid $(cat "$STATE/pids/slurmctld.pid"))"

if ! alive "$STATE/pids/slurmd.pid" slurmd; then
    setsid slurmd -D >"$STATE/log/slurmd.out" 2>&1 < /dev/null &
    echo $! >"$STATE/pids/slurmd.pid"
fi
state=""
for _ in $(seq 100); do
    state=$(sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1)
    [[ $state == idle* || $state == mixed* || $state == allocated* ]] && break
    alive "$STATE/pids/slurmd.pid" slurmd || break
    sleep 0.2
done
if [[ $state != idle* && $state != mixed* && $state != allocated* ]]; then
    show_log "$STATE/log/slurmd.out"; show_log "$STATE/log/slurmd.log"; show_log "$STATE/log/slurmctld.log"
    echo "node state: '${state}'" >&2; sinfo -R >&2 2>&1; scontrol show node "$NODE" >&2 2>&1
    die "node $NODE is not idle"
fi
say "slurmd up (pid $(cat "$STATE/pids/slurmd.pid")); node $NODE $state"

# Smoke test: a real job step through slurmctld -> slurmd -> slurmstepd.
if ! out=$(timeout 60 srun -N1 -n1 hostname 2>&1); then
    echo "$out" >&2; show_log "$STATE/log/slurmd.log"
    die "srun -N1 hostname failed"
fi
say "srun answers from $out"
sinfo -N -o '%N %P %T %c %m %G'
