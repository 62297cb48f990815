"""A run's folder: the parameters that fix what its work dir trains, its final checkpoint,
FAILED.json when a step failed by itself (the rest of the study finishes and reports it), and
attempts.jsonl, one line per attempt of each step, whatever its outcome (tadsweep.plan.spend)."""

import argparse
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tadsweep import cli, readers
from tadsweep.atomic import write_json
from tadsweep.errors import InputError


def final_checkpoint(params_file: str | Path, work_dir: str | Path) -> Path:
    """The checkpoint of the last epoch (0-based epoch numbers, as OpenTAD names them); the study's
    fixed rule for the checkpoint that detection uses."""
    params = readers.read_json(params_file)
    epochs = params.get("schedule", {}).get("epochs") if isinstance(params, dict) else None
    if type(epochs) is not int:
        raise InputError(f"{params_file}: schedule.epochs: missing or not an integer")
    return Path(work_dir) / "checkpoint" / f"epoch_{epochs - 1}.pth"


def checkpoints(ckpt_dir: str | Path) -> dict[int, Path]:
    """Epoch -> checkpoint file of a work dir's checkpoint/ folder (OpenTAD's epoch_{N}.pth)."""
    found = {}
    for path in Path(ckpt_dir).glob("epoch_*.pth"):
        if m := re.fullmatch(r"epoch_(\d+)\.pth", path.name):
            found[int(m.group(1))] = path
    return found


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
    """Run id -> its FAILED.json (markers[run id]), for the runs whose step failed by itself. A
    marker tadsweep did not write is ignored and reported in `problems`: it must neither hide a
    finished run nor stop the study."""
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
OPEN_ATTEMPT = ".attempt-{}.json"  # a step's attempt in progress, its end time kept by heartbeats
HEARTBEAT_S = 60.0  # how often a running attempt's end time is saved: what a hard kill can lose


def open_attempt(run_dir, step: str) -> dict | None:
    """A step's attempt still open (in progress, or killed with its wrapper), its seconds up to
    its last heartbeat; None when there is none, or it cannot be read."""
    try:
        rec = json.loads(Path(run_dir, OPEN_ATTEMPT.format(step)).read_text())
    except (OSError, ValueError):
        return None
    times = [rec.get(k) if isinstance(rec, dict) else None for k in ("start", "end")]
    if not all(isinstance(t, (int, float)) for t in times):
        return None
    return {**rec, "seconds": times[1] - times[0]}


def _append_attempt(run_dir, record: dict) -> None:
    with open(Path(run_dir, ATTEMPTS), "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def run_step(run_dir: str | Path, step: str, log: str, cmd: list[str]) -> int:
    """Run a backend step. A non-zero exit marks the run failed (with the log to read); a signal
    (preemption, scancel, out-of-memory kill) does not: SLURM or a rerun retries and resumes.
    Every attempt, whatever its outcome, is appended to attempts.jsonl."""
    marker, opened = Path(run_dir, FAILED), Path(run_dir, OPEN_ATTEMPT.format(step))
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    lost = open_attempt(run_dir, step)  # killed with this wrapper: up to its last heartbeat
    if lost is not None:
        _append_attempt(run_dir, {**lost, "seconds": round(lost["seconds"], 3), "outcome": "lost"})
    start = time.time()
    gpus = os.environ.get("SLURM_GPUS_ON_NODE", "")  # outside SLURM the ledger uses the config's
    record = {
        "step": step,
        "start": start,
        "gpus": int(gpus) if gpus.isdigit() else None,
        "job": os.environ.get("SLURM_JOB_ID", ""),
    }
    write_json({**record, "end": start}, opened)
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
            write_json({**record, "end": time.time()}, opened)
    failed = status > 0 and not received  # a stopped step may exit 1 or 128 + signal by itself
    if status == 0:
        marker.unlink(missing_ok=True)
    elif failed:
        write_json({"step": step, "status": status, "log": log, "time": time.time()}, marker)
    end = time.time()
    outcome = "ok" if status == 0 else "failed" if failed else "stopped"
    record.update(end=end, seconds=round(end - start, 3), status=status, outcome=outcome)
    _append_attempt(run_dir, record)
    opened.unlink(missing_ok=True)
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
