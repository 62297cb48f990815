#!/usr/bin/env bash
# Bring up a single-node Slurm test cluster on localhost with two fake GPUs.
#
# Usage: tests/slurm/up.sh [STATE_DIR]     (default /tmp/tadsweep-slurm)
#
# Idempotent: if the cluster already answers and the node is usable it only prints the status line.
# Installs nothing (CI installs slurm-wlm and munge); it checks the binaries and names what is
# missing. Must run as root (slurmd needs it and the config is linked into /etc/slurm).
set -euo pipefail

STATE_DIR="${1:-${TADSWEEP_SLURM_STATE:-/tmp/tadsweep-slurm}}"
WAIT_S="${TADSWEEP_SLURM_WAIT_S:-60}"
START_S=$(date +%s.%N)

die() {
    echo "tests/slurm/up.sh: $*" >&2
    exit 1
}

# --- preconditions ---------------------------------------------------------------------------
missing=()
for b in munged munge unmunge slurmctld slurmd sinfo scontrol sbatch squeue srun; do
    command -v "$b" >/dev/null 2>&1 || missing+=("$b")
done
if ((${#missing[@]})); then
    die "missing binaries: ${missing[*]} (install with: apt-get install -y --no-install-recommends slurm-wlm munge)"
fi
[[ $(id -u) -eq 0 ]] || die "must run as root (slurmd runs jobs as their user and /etc/slurm is written)"
id munge >/dev/null 2>&1 || die "user 'munge' does not exist (the munge package creates it)"

mkdir -p "$STATE_DIR"/{state,spool,log}
STATE_DIR=$(cd "$STATE_DIR" && pwd)
CONF="$STATE_DIR/slurm.conf"
GRES="$STATE_DIR/gres.conf"
JOBCOMP="$STATE_DIR/jobcomp.txt"

# --- munge -----------------------------------------------------------------------------------
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
    if [[ ! -s /etc/munge/munge.key ]]; then
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile=/etc/munge/munge.key
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    # A stale pid/socket from a killed munged makes the new one refuse to start.
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged
    touch "$STATE_DIR/munged.started-by-up"
    for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
    munge_ok || die "munged did not start (see /var/log/munge/munged.log)"
fi

# --- configuration ---------------------------------------------------------------------------
# Node hardware as slurmd sees it; RealMemory at 90% so slurmd never marks the node as having less
# memory than configured (which would drain it).
hw=$(slurmd -C | head -n1)
field() { sed -n "s/.*\\b$1=\\([0-9]*\\).*/\\1/p" <<<"$hw"; }
CPUS=$(field CPUs)
BOARDS=$(field Boards)
SOCKETS=$(field SocketsPerBoard)
CORES=$(field CoresPerSocket)
THREADS=$(field ThreadsPerCore)
MEM=$(($(field RealMemory) * 9 / 10))
[[ -n $CPUS && -n $CORES && $MEM -gt 0 ]] || die "could not parse 'slurmd -C': $hw"

new_conf=$(
    cat <<EOF
# Written by tests/slurm/up.sh -- a throwaway single-node test cluster; do not edit by hand.
ClusterName=tadsweep-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
# Jobs without --mem get DefMemPerCPU instead of the whole node, so they can run side by side.
DefMemPerCPU=500
# Finished jobs stay visible to 'scontrol show job' and squeue for 10 minutes (no slurmdbd here);
# the plugin's squeue status mode needs this >= 3x its first status delay.
MinJobAge=600
AccountingStorageType=accounting_storage/none
# No cgroups here, so --mem is enforced by sampling: every second slurmstepd sums the RSS of each
# step's processes and SIGKILLs a step over the job's --mem ("Exceeded job memory limit" in the
# job log). The job ends FAILED (a real cluster's cgroup OOM kill says OUT_OF_MEMORY); Snakemake
# treats both as a failed job and retries it with the next attempt's resources.
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
# One line per finished job, written by jobcomp.lua (next to this file) into $JOBCOMP.
JobCompType=jobcomp/lua
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS Boards=$BOARDS SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost Default=NO MaxTime=INFINITE State=UP
EOF
)
# Job completion records. Without slurmdbd, gres/gpu cannot be an accounted TRES (slurmctld exits:
# "slurmdbd is required to run with TRES gres/gpu"), so jobcomp/filetxt never shows GPUs. The lua
# plugin sees the job's request fields (tres_per_job/node/task) and writes them, one tab-separated
# key=value line per finished job. pcall: an error must never disturb slurmctld.
new_lua=$(
    cat <<EOF
-- Written by tests/slurm/up.sh; slurmctld calls this once per finished job.
-- Names of the base job states (slurm.h enum job_states; flags live above the low byte).
local states = {[0] = "PENDING", "RUNNING", "SUSPENDED", "COMPLETED", "CANCELLED", "FAILED",
  "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY"}
local keys = {"job_id", "array_job_id", "array_task_id", "name", "partition", "tres_per_job",
  "tres_per_node", "tres_per_task", "gres_used", "tres_fmt_alloc_str", "min_mem_per_node",
  "min_mem_per_cpu", "time_limit", "total_cpus", "restart_cnt", "work_dir", "std_out"}
local function wait_status(ec)
  if type(ec) ~= "number" then return tostring(ec) end
  return math.floor(ec / 256) % 256 .. ":" .. ec % 128
end
function slurm_jobcomp_log_record(job)
  local ok, err = pcall(function()
    local st = job.job_state
    local parts = {
      "state=" .. (type(st) == "number" and (states[st % 256] or tostring(st)) or tostring(st)),
      "exit=" .. wait_status(job.exit_code),
      "derived_exit=" .. wait_status(job.derived_ec),
    }
    for _, k in ipairs(keys) do
      parts[#parts + 1] = k .. "=" .. string.gsub(tostring(job[k]), "%s", " ")
    end
    local f = assert(io.open("$JOBCOMP", "a"))
    f:write(table.concat(parts, "\t") .. "\n")
    f:close()
  end)
  if not ok then slurm.log_error("tadsweep jobcomp.lua: %s", tostring(err)) end
  return slurm.SUCCESS
end
EOF
)
# Two device files give the gpu gres real "devices", so jobs get CUDA_VISIBLE_DEVICES=0/1.
new_gres="NodeName=localhost Name=gpu File=/dev/null,/dev/zero"

changed=0
if [[ ! -f $CONF ]] || [[ $(cat "$CONF") != "$new_conf" ]]; then
    printf '%s\n' "$new_conf" >"$CONF"
    changed=1
fi
if [[ ! -f $STATE_DIR/jobcomp.lua ]] || [[ $(cat "$STATE_DIR/jobcomp.lua") != "$new_lua" ]]; then
    printf '%s\n' "$new_lua" >"$STATE_DIR/jobcomp.lua"
    changed=1
fi
if [[ ! -f $GRES ]] || [[ $(cat "$GRES") != "$new_gres" ]]; then
    printf '%s\n' "$new_gres" >"$GRES"
    changed=1
fi

# The plugin's job side strips SLURM_CONF before its nested srun, so the config must also be found
# at the compiled-in default path. Keep a real file someone else put there.
mkdir -p /etc/slurm
for f in slurm.conf gres.conf jobcomp.lua; do
    target="$STATE_DIR/$f"
    if [[ -e /etc/slurm/$f && ! -L /etc/slurm/$f ]]; then
        [[ -e /etc/slurm/$f.before-tadsweep ]] || mv "/etc/slurm/$f" "/etc/slurm/$f.before-tadsweep"
        rm -f "/etc/slurm/$f"
    fi
    [[ $(readlink "/etc/slurm/$f" 2>/dev/null) == "$target" ]] || ln -sfn "$target" "/etc/slurm/$f"
done
export SLURM_CONF="$CONF"

# --- daemons ---------------------------------------------------------------------------------
pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_daemon() {
    local pidfile=$1 pid
    pid_alive "$pidfile" || return 0
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
if ((changed)); then
    # Running with an older config: restart, because 'scontrol reconfigure' does not apply
    # every setting. Job records survive in the state folder.
    stop_daemon "$STATE_DIR/slurmd.pid"
    stop_daemon "$STATE_DIR/slurmctld.pid"
fi
if ! pid_alive "$STATE_DIR/slurmctld.pid"; then
    # -i: do not stop on errors in state files written under an earlier configuration.
    slurmctld -i -f "$CONF"
fi
slurmd_started=0
if ! pid_alive "$STATE_DIR/slurmd.pid"; then
    slurmd_started=$(date +%s)
    slurmd -N localhost -f "$CONF"
fi

# slurmctld restores the node as idle from its state files before slurmd has registered, so a
# fresh slurmd counts only once the node's SlurmdStartTime is not older than its start.
registered() {
    ((slurmd_started == 0)) && return 0
    local t
    t=$(scontrol show node localhost 2>/dev/null | sed -n 's/.*SlurmdStartTime=\([^ ]*\).*/\1/p')
    [[ -n $t && $t != None ]] || return 1
    (($(date -d "$t" +%s) >= slurmd_started - 1))
}

node_state() { sinfo -h -N -n localhost -p debug -o '%T' 2>/dev/null | head -n1 || true; }
state=""
ready=0
deadline=$(($(date +%s) + WAIT_S))
while (($(date +%s) < deadline)); do
    state=$(node_state)
    case "$state" in
        idle | mixed | allocated | completing) registered && ready=1 && break ;;
        drain* | down* | fail*)
            # e.g. left drained by an earlier run with other hardware numbers
            scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
            ;;
    esac
    sleep 0.2
done
if ((!ready)); then
    echo "--- last lines of $STATE_DIR/log/slurmctld.log" >&2
    tail -n 15 "$STATE_DIR/log/slurmctld.log" >&2 || true
    echo "--- last lines of $STATE_DIR/log/slurmd.log" >&2
    tail -n 15 "$STATE_DIR/log/slurmd.log" >&2 || true
    die "node localhost not usable after ${WAIT_S}s (state: '${state:-no answer}')"
fi

elapsed=$(awk -v a="$START_S" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
gres=$(sinfo -h -N -n localhost -p debug -o '%G' | head -n1)
echo "slurm up: node localhost $state, ${CPUS} cpus, ${MEM} MB, ${gres}, partitions debug(default),gpu;" \
    "SLURM_CONF=$CONF; jobcomp $JOBCOMP; ${elapsed}s"
