"""GPU-hours a run spent, from its own files (docs/cluster.md, "The ledger"): wall time x GPUs of
every attempt in runs/<run>/attempts.jsonl (tadsweep.plan.rundir) and of any still open, a
successful one timed by its Snakemake benchmark; a run with neither falls back on its train.json.
What the budget's gates count (tadsweep.plan.budget) and the ledger reports (report.ledger).
"""

import csv
import json
import math
from pathlib import Path

from tadsweep import readers
from tadsweep.errors import InputError
from tadsweep.plan.rundir import ATTEMPTS, open_attempt

STEPS = ("train", "detect")


def run_files(study_dir, run_id: str) -> dict:
    """Where a run's ledger lives: its attempts and its steps' benchmarks."""
    study_dir = Path(study_dir)
    return {
        "attempts": study_dir / "runs" / run_id / ATTEMPTS,
        **{step: study_dir / "benchmarks" / step / f"{run_id}.tsv" for step in STEPS},
    }


def read_attempts(path, problems: list | None = None) -> list[dict]:
    """attempts.jsonl, plus any attempt still open (in progress, or killed with its wrapper):
    a line that is not a record is skipped and named in `problems` (a ledger never stops a study
    or its status)."""
    path = Path(path)
    out = []
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    for number, line in enumerate(lines, start=1):
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if _is_attempt(rec):
            out.append(rec)
        elif line.strip() and problems is not None:
            problems.append(f"{path}:{number}: not an attempt record; skipped")
    for step in STEPS:
        rec = open_attempt(path.parent, step)
        if rec is not None and _is_attempt(rec := {**rec, "outcome": "running"}):
            out.append(rec)
    return out


def _is_attempt(rec) -> bool:
    return (
        isinstance(rec, dict)
        and rec.get("step") in STEPS
        and isinstance(rec.get("seconds"), (int, float))
        and math.isfinite(rec["seconds"])
        and rec["seconds"] >= 0
        and (rec.get("gpus") is None or (type(rec["gpus"]) is int and rec["gpus"] > 0))
    )


def benchmark_seconds(path) -> float | None:
    """Wall seconds of a Snakemake benchmark file (column `s`; the last row), else None."""
    try:
        with open(path, newline="") as f:
            s = float(list(csv.DictReader(f, delimiter="\t"))[-1]["s"])
    except (OSError, ValueError, KeyError, IndexError, TypeError, csv.Error):
        return None
    return s if math.isfinite(s) and s >= 0 else None


def run_ledger(files: dict, gpus: dict, train_json=None, problems: list | None = None) -> dict:
    """One run's spend. files: run_files(); gpus: step -> configured GPUs; train_json: the
    fallback for a run with no ledger at all."""
    attempts = read_attempts(files["attempts"], problems)
    out = {"gpu_hours_actual": 0.0, "attempts": 0, "failed_attempts": 0}
    for step in STEPS:
        recs = [dict(r) for r in attempts if r["step"] == step]
        bench = benchmark_seconds(files[step])
        if bench is not None:  # the successful attempt, as the job itself measured it
            if ok := [r for r in recs if r.get("outcome") == "ok"]:
                ok[-1]["seconds"] = bench
            else:
                recs.append({"step": step, "seconds": bench, "outcome": "ok"})
        hours = sum(r["seconds"] * (r.get("gpus") or gpus[step]) for r in recs) / 3600.0
        out[f"gpu_hours_{step}"] = hours
        out["gpu_hours_actual"] += hours
        out["attempts"] += len(recs)
        out["failed_attempts"] += sum(r.get("outcome") not in ("ok", "running") for r in recs)
    out["source"] = "ledger" if out["attempts"] else "none"
    if not out["attempts"] and train_json is not None and Path(train_json).is_file():
        try:
            t = readers.read_json(train_json)
            seconds = float(t.get("gpu_seconds", float(t["seconds"]) * gpus["train"]))
        except (InputError, KeyError, TypeError, ValueError, AttributeError):
            return out
        out.update(gpu_hours_actual=seconds / 3600.0, gpu_hours_train=seconds / 3600.0)
        out["source"] = "train.json"
    return out


def step_gpus(cfg: dict) -> dict:
    """The configured GPUs of each step (what a job asks SLURM for)."""
    res = cfg.get("resources", {}) if isinstance(cfg, dict) else {}
    return {s: int(res.get(s, {}).get("gpus", 1) or 1) for s in STEPS}


def add_arguments(ap) -> None:
    """The ledger files of a command's runs, one per run in the same order (the workflow passes
    every run's, which may not exist yet: no attempt so far)."""
    for name in ("attempts", "bench-train", "bench-detect"):
        ap.add_argument(f"--{name}", nargs="*", default=[], help=f"every run's {name}, same order")


def files_from(args, n: int, command: str) -> list[dict]:
    """add_arguments' files as run_files() dicts, checked: one of each per run."""
    files = [args.attempts, args.bench_train, args.bench_detect]
    if any(len(f) != n for f in files):
        raise InputError(f"{command}: --attempts/--bench-train/--bench-detect need one per run")
    return [{"attempts": a, "train": t, "detect": d} for a, t, d in zip(*files)]
