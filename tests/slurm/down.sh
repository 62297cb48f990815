#!/usr/bin/env bash
# Stop the test cluster started by tests/slurm/up.sh (same STATE_DIR).
#
# Usage: tests/slurm/down.sh [STATE_DIR]     (default /tmp/tadsweep-slurm)
#
# Stops slurmd and slurmctld by their pid files (TERM, then KILL after 10 s), and munged only if
# up.sh started it. Leaves the state folder (logs, jobcomp.txt) for inspection; running jobs die
# with slurmd's steps.
set -uo pipefail

STATE_DIR="${1:-${TADSWEEP_SLURM_STATE:-/tmp/tadsweep-slurm}}"
[[ -d $STATE_DIR ]] || {
    echo "slurm down: nothing at $STATE_DIR"
    exit 0
}

# TERM all given daemons at once, wait up to 10 s for them to exit, then KILL what is left.
stop_pidfiles() {
    local pidfile pid pids=()
    for pidfile in "$@"; do
        # Read first: a daemon removes its own pid file as it exits.
        pid=$(cat "$pidfile" 2>/dev/null) || continue
        [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    done
    for _ in $(seq 100); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            echo "slurm down: pid $pid ignored TERM for 10 s, killing" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    rm -f "$@"
}

# Cancel what is still queued or running so slurmstepd processes do not outlive slurmd.
if [[ -s $STATE_DIR/slurmctld.pid ]] && kill -0 "$(cat "$STATE_DIR/slurmctld.pid")" 2>/dev/null; then
    export SLURM_CONF="$STATE_DIR/slurm.conf"
    jobs=$(timeout 10 squeue -h -t PD,R,CG -o '%A' 2>/dev/null | tr '\n' ' ')
    [[ -z ${jobs// /} ]] || timeout 10 scancel --quiet $jobs 2>/dev/null
fi
stop_pidfiles "$STATE_DIR/slurmd.pid" "$STATE_DIR/slurmctld.pid"
if [[ -e $STATE_DIR/munged.started-by-up ]]; then
    stop_pidfiles /run/munge/munged.pid
    rm -f "$STATE_DIR/munged.started-by-up"
fi
echo "slurm down: stopped daemons of $STATE_DIR"
