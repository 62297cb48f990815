"""A run's folder: the parameters that fix what its work dir trains (each backend refuses to
resume a work dir with others), its final checkpoint, FAILED.json when a step failed by
itself, so the rest of the study can finish and report it, and attempts.jsonl, one line per
attempt of each step (wall time, GPUs, outcome): Snakemake writes a job's benchmark only when it
succeeds, so failed and killed attempts are counted here (tadsweep.plan.spend reads both)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tadsweep import cli, readers
from tadsweep.atomic import write_json
from tadsweep.errors import InputError
from tadsweep.plan.axes import training_keys

# Keys that change what is trained (seed, every training axis, batch, EMA, AMP, model); the rest
# (ids, post-processing) may change without retraining. The backends refuse to resume a work dir
# trained with other values of these.
TRAINING_KEYS = training_keys()


def final_checkpoint(params: dict | str | Path, work_dir: str | Path) -> Path:
    """The checkpoint of the last epoch (0-based epoch numbers, as OpenTAD names them); the study's
    fixed rule for the checkpoint that detection uses."""
    if not isinstance(params, dict):
        source, params = params, readers.read_json(params)
        epochs = params.get("schedule", {}).get("epochs") if isinstance(params, dict) else None
        if not isinstance(epochs, int) or isinstance(epochs, bool):
            raise InputError(f"{source}: schedule.epochs: missing or not an integer")
    return Path(work_dir) / "checkpoint" / f"epoch_{params['schedule']['epochs'] - 1}.pth"


FAILED = "FAILED.json"


def read_failure(marker) -> dict:
    """A FAILED.json as run_step writes it (an object with step, status, log), else one line
    naming the file and what to do."""
    try:
        data = readers.read_json(marker)
    except InputError as exc:
        raise InputError(f"{exc}; ignored: delete it") from None
    if not (isinstance(data, dict) and isinstance(data.get("step"), str)):
        raise InputError(
            f"{marker}: not a failure record (run_step writes an object with step, status and "
            f"log); ignored: delete it"
        )
    return data


def failed_runs(markers: dict, problems: list | None = None) -> dict[str, dict]:
    """Runs whose train or detect step failed by itself (exit status, not a kill): run id ->
    the content of its FAILED.json, for the runs whose marker file (markers[run id]) exists.
    A marker tadsweep did not write (not a failure record) is ignored and reported in
    `problems`: it must neither hide a finished run nor stop the study."""
    out = {}
    for rid, marker in markers.items():
        if Path(marker).exists():
            try:
                out[rid] = read_failure(marker)
            except InputError as exc:
                if problems is not None:
                    problems.append(str(exc))
    return out


ATTEMPTS = "attempts.jsonl"
HEARTBEAT_S = 60.0  # how often a running attempt's end time is saved: what a hard kill can lose


def _open_attempt(run_dir, step: str) -> Path:
    """The attempt in progress (its end time refreshed by the heartbeat)."""
    return Path(run_dir, f".attempt-{step}.json")


def _append_attempt(run_dir, record: dict) -> None:
    with open(Path(run_dir, ATTEMPTS), "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def _close_lost_attempt(run_dir, step: str) -> None:
    """An attempt killed with the wrapper (SIGKILL, node failure) left its open record: it is
    counted up to its last heartbeat."""
    path = _open_attempt(run_dir, step)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return
    if isinstance(record, dict) and isinstance(record.get("start"), (int, float)):
        end = record.get("end", record["start"])
        _append_attempt(
            run_dir, {**record, "seconds": round(end - record["start"], 3), "outcome": "lost"}
        )
    path.unlink(missing_ok=True)


def _allocated_gpus() -> int | None:
    """GPUs SLURM gave this job (None outside SLURM: the ledger uses the configured count)."""
    value = os.environ.get("SLURM_GPUS_ON_NODE", "")
    return int(value) if value.isdigit() else None


def run_step(run_dir: str | Path, step: str, log: str, cmd: list[str]) -> int:
    """Run a backend step. A non-zero exit marks the run failed (with the log to read); a signal
    (preemption, scancel, out-of-memory kill) does not: SLURM or a rerun retries and resumes.
    Every attempt, whatever its outcome, is appended to attempts.jsonl."""
    marker = Path(run_dir, FAILED)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    _close_lost_attempt(run_dir, step)
    start = time.time()
    record = {
        "step": step,
        "start": start,
        "gpus": _allocated_gpus(),
        "job": os.environ.get("SLURM_JOB_ID", ""),
    }
    write_json({**record, "end": start}, _open_attempt(run_dir, step))
    proc = subprocess.Popen(cmd)
    received = []  # signals this wrapper got: the step was stopped from outside

    def forward(num, _frame):  # pass preemption on to the step
        received.append(num)
        if proc.poll() is None:
            proc.send_signal(num)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, forward)
    while True:
        try:
            status = proc.wait(timeout=HEARTBEAT_S)
            break
        except subprocess.TimeoutExpired:
            write_json({**record, "end": time.time()}, _open_attempt(run_dir, step))
    failed = status > 0 and not received  # a stopped step may exit 1 or 128 + signal by itself
    if status == 0:
        marker.unlink(missing_ok=True)
    elif failed:
        write_json({"step": step, "status": status, "log": log, "time": time.time()}, marker)
    end = time.time()
    outcome = "ok" if status == 0 else "failed" if failed else "stopped"
    record.update(end=end, seconds=round(end - start, 3), status=status, outcome=outcome)
    _append_attempt(run_dir, record)
    _open_attempt(run_dir, step).unlink(missing_ok=True)
    return status if status >= 0 else 128 - status


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tadsweep.plan.rundir", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a backend step, marking the run failed if it fails")
    r.add_argument("--run-dir", required=True)
    r.add_argument("--step", required=True)
    r.add_argument("--log", required=True, help="the step's log, named in FAILED.json")
    r.add_argument("command", nargs=argparse.REMAINDER, help="-- then the step's command")
    args = ap.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    return run_step(args.run_dir, args.step, args.log, cmd)


if __name__ == "__main__":
    cli.run(main)
