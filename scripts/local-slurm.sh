#!/usr/bin/env bash
# A real one-node Slurm cluster (munged + slurmctld + slurmd) for pccheck's tests and demos.
#
#   scripts/local-slurm.sh start  [STATE_DIR]   install (apt, only if missing) and start; idempotent
#   scripts/local-slurm.sh stop   [STATE_DIR] [--purge]   cancel jobs, stop exactly the daemons started here
#   scripts/local-slurm.sh status [STATE_DIR]   exit 0 when all three daemons run and the node answers
#   scripts/local-slurm.sh env    [STATE_DIR]   print the export line (SLURM_CONF=...)
#
# STATE_DIR defaults to $PCCHECK_SLURM_STATE or /tmp/pccheck-slurm. Everything (config, munge socket
# and key, controller state, spool, logs, pid files) lives under it. Needs root (jobs run as root).
# The configuration is tuned for fast tests (see docs in local-slurm-notes.md):
#   cred_expire=10 + sched_interval=2  -> a requeued job runs again after ~12-17 s instead of ~160 s
#   KillWait=5                         -> SIGKILL 5 s after SIGTERM (real clusters: 30 s or more)
#   JobRequeue=1, PreemptMode=REQUEUE  -> partitions "debug" (default) and "high" (preempts debug)
#   SlurmdParameters=config_overrides  -> the node advertises $PCCHECK_SLURM_CPUS CPUs (default 8)
# Environment knobs: PCCHECK_SLURM_CPUS, PCCHECK_SLURM_NO_INSTALL=1 (fail instead of apt-get).
set -euo pipefail

cmd=${1:-status}
shift || true
STATE=${PCCHECK_SLURM_STATE:-/tmp/pccheck-slurm}
PURGE=0
for a in "$@"; do
    case "$a" in
        --purge) PURGE=1 ;;
        -*) echo "local-slurm.sh: unknown option $a" >&2; exit 2 ;;
        *) STATE=$a ;;
    esac
done
STATE=$(realpath -m -- "$STATE")
CONF=$STATE/etc/slurm.conf
NODE=$(hostname -s)
CPUS=${PCCHECK_SLURM_CPUS:-8}
DAEMONS=(munged slurmctld slurmd)

log() { echo "local-slurm: $*" >&2; }
die() { echo "local-slurm: error: $*" >&2; exit 1; }

pidfile() { echo "$STATE/run/$1.pid"; }

# True when the pid in the daemon's pid file is alive *and* is that daemon started for this STATE.
# No pipes here (under pipefail, `tr | grep -q` fails at random: grep's early exit SIGPIPEs tr).
pid_alive() {
    local name=$1 f pid cmdline
    f=$(pidfile "$name")
    [[ -s $f ]] || return 1
    read -r pid <"$f" || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$name"* && $cmdline == *"$STATE"* ]]
}

any_alive() {
    local d
    for d in "${DAEMONS[@]}"; do pid_alive "$d" && return 0; done
    return 1
}

all_alive() {
    local d
    for d in "${DAEMONS[@]}"; do pid_alive "$d" || return 1; done
    return 0
}

ensure_installed() {
    local missing=0 b
    for b in munged mungekey slurmctld slurmd sbatch scontrol squeue sinfo scancel srun; do
        command -v "$b" >/dev/null 2>&1 || [[ -x /usr/sbin/$b ]] || missing=1
    done
    ((missing == 0)) && return 0
    [[ ${PCCHECK_SLURM_NO_INSTALL:-0} == 1 ]] && die "Slurm or munge is not installed and PCCHECK_SLURM_NO_INSTALL=1"
    command -v apt-get >/dev/null || die "Slurm is not installed and there is no apt-get; install slurmctld slurmd slurm-client munge"
    [[ $(id -u) == 0 ]] || die "installing Slurm needs root"
    log "installing slurmctld slurmd slurm-client munge (apt-get)"
    local policy_made=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        # keep the packages' postinst from starting system-wide daemons
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_made=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            slurmctld slurmd slurm-client munge >"$STATE/log/apt.log" 2>&1 ||
            {
                apt-get update -q >>"$STATE/log/apt.log" 2>&1 &&
                    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                        slurmctld slurmd slurm-client munge >>"$STATE/log/apt.log" 2>&1
            }
    } || rc=$?
    ((policy_made)) && rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || die "apt-get install failed (rc=$rc); see $STATE/log/apt.log"
}

write_config() {
    local mem
    mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    [[ -n $mem ]] || mem=1024
    local tmp=$CONF.tmp
    cat >"$tmp" <<EOF
# Written by pccheck scripts/local-slurm.sh; state in $STATE
ClusterName=pccheck
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket,cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=5,batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobRequeue=1
KillWait=5
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=60 PriorityTier=1 State=UP
PartitionName=high Nodes=$NODE MaxTime=60 PriorityTier=2 State=UP
EOF
    mv "$tmp" "$CONF"
}

node_state() {
    SLURM_CONF=$CONF sinfo -h -n "$NODE" -o %t 2>/dev/null || true
}

wait_idle() {
    local i s
    for ((i = 0; i < 300; i++)); do
        s=$(node_state)
        case "$s" in
            idle* | mix* | alloc*) return 0 ;;
            drain* | down*)
                if ((i % 25 == 24)); then
                    SLURM_CONF=$CONF scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
                fi
                ;;
        esac
        sleep 0.2
    done
    die "node $NODE did not become idle within 60 s (state '${s}'); see $STATE/log/slurmctld.log and slurmd.log"
}

link_etc() {
    # Clients without SLURM_CONF look for /etc/slurm/slurm.conf (else a DNS SRV lookup that fails).
    mkdir -p /etc/slurm 2>/dev/null || return 0
    if [[ -L /etc/slurm/slurm.conf ]]; then
        local target
        target=$(readlink /etc/slurm/slurm.conf)
        if [[ $target != "$CONF" && ( $target == */pccheck-slurm*/etc/slurm.conf || ! -e $target ) ]]; then
            ln -sfn "$CONF" /etc/slurm/slurm.conf
        fi
    elif [[ ! -e /etc/slurm/slurm.conf ]]; then
        ln -s "$CONF" /etc/slurm/slurm.conf 2>/dev/null || true
    fi
}

start_daemon() {
    # $1 = name, rest = command; waits for the pid file of a daemonizing command
    local name=$1 i
    shift
    rm -f "$(pidfile "$name")"
    "$@" || die "$name failed to start (rc=$?); see $STATE/log/$name.log"
    for ((i = 0; i < 100; i++)); do
        pid_alive "$name" && return 0
        sleep 0.1
    done
    die "$name did not come up; see $STATE/log/$name.log"
}

do_start() {
    [[ $(id -u) == 0 ]] || die "must run as root (the daemons and test jobs run as root)"
    mkdir -p "$STATE"/{etc,run,log,ctld,spool,munge}
    if all_alive && [[ -f $CONF ]] && [[ $(node_state) =~ ^(idle|mix|alloc) ]]; then
        log "already running in $STATE"
        link_etc
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    any_alive && { log "some daemons of $STATE are running, others not: restarting all"; do_stop; }
    ensure_installed

    # munge: private daemon, socket dir must be world-executable (0755), owned by the munge user
    local key=/etc/munge/munge.key
    if [[ ! -r $key ]]; then
        key=$STATE/munge/munge.key
        [[ -s $key ]] || mungekey --create --keyfile="$key" >/dev/null
    fi
    local mu=root
    id munge >/dev/null 2>&1 && mu=munge
    chmod 0755 "$STATE" "$STATE/munge"
    chown "$mu" "$STATE/munge"
    [[ $key == $STATE/* ]] && { chown "$mu" "$key"; chmod 0400 "$key"; }
    local mcmd=(munged --socket="$STATE/munge/munge.socket" --pid-file="$STATE/munge/munged.pid"
        --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed" --key-file="$key")
    [[ $mu == root ]] && mcmd+=(--force)
    rm -f "$STATE/munge/munge.socket" "$STATE/munge/munge.socket.lock"
    if [[ $mu == munge ]]; then
        runuser -u munge -- "${mcmd[@]}" || die "munged failed; see $STATE/munge/munged.log"
    else
        "${mcmd[@]}" || die "munged failed; see $STATE/munge/munged.log"
    fi
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -s $STATE/munge/munged.pid ]] && break
        sleep 0.1
    done
    cp "$STATE/munge/munged.pid" "$(pidfile munged)" 2>/dev/null || die "munged wrote no pid file"
    pid_alive munged || die "munged is not running; see $STATE/munge/munged.log"

    write_config
    start_daemon slurmctld slurmctld -f "$CONF"
    start_daemon slurmd slurmd -f "$CONF" -N "$NODE"
    wait_idle
    link_etc
    log "running: node $NODE idle, $CPUS CPUs advertised, partitions debug (default) and high; state in $STATE"
    echo "export SLURM_CONF=$CONF"
}

stop_pid() {
    local name=$1 pid i f
    f=$(pidfile "$name")
    pid_alive "$name" || { rm -f "$f"; return 0; }
    read -r pid <"$f"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
    done
    if [[ -d /proc/$pid ]]; then
        log "$name (pid $pid) ignored SIGTERM for 10 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

do_stop() {
    if pid_alive slurmctld; then
        # cancel every job of this cluster first so no job steps are left running
        local ids
        ids=$(SLURM_CONF=$CONF squeue -h -o %i 2>/dev/null) || ids=""
        if [[ -n $ids ]]; then
            # shellcheck disable=SC2086
            SLURM_CONF=$CONF scancel $ids 2>/dev/null || true
            local i
            for ((i = 0; i < 75; i++)); do
                ids=$(SLURM_CONF=$CONF squeue -h -o %i 2>/dev/null) || ids=""
                [[ -z $ids ]] && break
                sleep 0.2
            done
        fi
    fi
    stop_pid slurmd
    stop_pid slurmctld
    stop_pid munged
    if ((PURGE)); then
        any_alive && die "refusing to purge $STATE: a daemon of it is still alive"
        [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$CONF" ]] && rm -f /etc/slurm/slurm.conf
        rm -rf -- "$STATE"
        log "stopped and purged $STATE"
    else
        log "stopped ($STATE kept; --purge removes it)"
    fi
}

do_status() {
    local d ok=0
    for d in "${DAEMONS[@]}"; do
        if pid_alive "$d"; then
            echo "$d: running (pid $(<"$(pidfile "$d")"))"
        else
            echo "$d: not running"
            ok=1
        fi
    done
    if ((ok == 0)); then
        echo "node $NODE: $(node_state)"
        echo "export SLURM_CONF=$CONF"
        [[ $(node_state) =~ ^(idle|mix|alloc) ]] || ok=1
    fi
    return $ok
}

case "$cmd" in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *)
        echo "usage: $0 start|stop|status|env [STATE_DIR] [--purge]" >&2
        exit 2
        ;;
esac
