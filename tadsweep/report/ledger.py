"""The ledger: GPU-hours spent per run and per phase (every attempt of train and detect, counted
by tadsweep.plan.spend) beside the estimate, and a check of `resources.minutes_per_epoch` against
the first runs' measured epochs. `python -m tadsweep.report.ledger results/<study>` prints it.
"""

import argparse
import math
import re
import statistics
from datetime import datetime
from pathlib import Path

import pandas as pd

from tadsweep import cli, readers
from tadsweep.errors import InputError
from tadsweep.plan import costs
from tadsweep.plan import summary as plan_summary
from tadsweep.plan.spend import run_files, run_ledger, step_gpus

# the estimate is off when the measured epoch time differs from it by more than this fraction
TOLERANCE = 0.25
FIRST_EPOCHS = 3  # "the first finished epochs" of a run; more when they span under a minute
MIN_SPAN_S = 60.0  # log.json timestamps have whole seconds
MAX_LOGS = 8  # runs read for the epoch-time check (the status must stay fast)


def study_runs(study_dir) -> tuple[list[str], pd.DataFrame | None]:
    """Run ids and the plan: plan.tsv's, else every run folder (no plan yet, or a broken one)."""
    study_dir = Path(study_dir)
    try:
        plan = pd.read_csv(study_dir / "plan.tsv", sep="\t")
        return [str(r) for r in plan["run_id"]], plan
    except (OSError, ValueError, KeyError):
        runs = study_dir / "runs"
        ids = sorted(str(p.relative_to(runs)) for p in runs.glob("*/*/seed=*") if p.is_dir())
        return ids, None


def study_ledger(study_dir, run_ids, cfg: dict | None = None, problems=None) -> pd.DataFrame:
    """One row per run: phase, GPU-hours spent (train, detect, total), attempts, failed ones."""
    study_dir = Path(study_dir)
    if cfg is None:
        cfg = read_study(study_dir)
    gpus = step_gpus(cfg)
    rows = []
    for rid in run_ids:
        train_json = study_dir / "runs" / rid / "train.json"
        rec = run_ledger(run_files(study_dir, rid), gpus, train_json, problems)
        rows.append({"run_id": rid, "phase": rid.split("/")[0], **rec})
    cols = ["run_id", "phase", "gpu_hours_actual", "gpu_hours_train", "gpu_hours_detect"]
    return pd.DataFrame(rows, columns=[*cols, "attempts", "failed_attempts", "source"])


def summary_columns(params: list, files: list[dict], cfg: dict) -> pd.DataFrame:
    """summary.tsv's ledger columns (docs/outputs.md), one row per run: params.json files and
    run_files() dicts in the same order."""
    gpus, rows = step_gpus(cfg), []
    for par, f in zip(params, files, strict=True):
        p = readers.read_json(par)
        try:
            estimate = costs.gpu_hours(cfg, p["variants"])
        except (KeyError, TypeError):  # no study.json: nothing to estimate from
            estimate = math.nan
        rows.append({**run_ledger(f, gpus), "run_id": p["run_id"], "gpu_hours_estimate": estimate})
    cols = ["run_id", "gpu_hours_actual", "gpu_hours_estimate", "attempts", "failed_attempts"]
    return pd.DataFrame(rows, columns=cols)  # run_ledger's other keys left out


def headline_spend(summary: pd.DataFrame, cfg: dict) -> dict:
    """The report's line: spent (summary.tsv's ledger) / planned (the plan's estimate) / budget."""
    runs = summary.drop_duplicates("run_id")
    col = "gpu_hours_actual" if "gpu_hours_actual" in runs else "gpu_hours"
    spent = float(pd.to_numeric(runs.get(col), errors="coerce").fillna(0).sum())
    try:
        planned = float(sum(r["est_gpu_hours"] for r in plan_summary.plan_rows(cfg)))
    except (KeyError, TypeError, ValueError):  # no study.json: no plan to compare with
        planned = None
    budget_h = budget(cfg)
    line = spend_line(spent, planned, budget_h)
    if "attempts" in runs and "failed_attempts" in runs:
        n = runs[["attempts", "failed_attempts"]].apply(pd.to_numeric, errors="coerce").sum()
        attempts, failed = int(n["attempts"]), int(n["failed_attempts"])
        line += f" ({attempts} attempts, {failed} failed, stopped or lost)"
    return {"spent": spent, "planned": planned, "budget": budget_h, "line": line}


def phase_table(ledger: pd.DataFrame, plan: pd.DataFrame | None) -> pd.DataFrame:
    """Per phase: GPU-hours spent, planned (plan.tsv's training estimate), attempts."""
    spent = ledger.groupby("phase", sort=False).agg(
        runs=("run_id", "size"),
        gpu_hours_actual=("gpu_hours_actual", "sum"),
        attempts=("attempts", "sum"),
        failed_attempts=("failed_attempts", "sum"),
    )
    if plan is not None and "est_gpu_hours" in plan and "run_id" in plan:
        phase = plan["run_id"].astype(str).str.split("/").str[0]  # run ids start with the phase
        spent["gpu_hours_planned"] = plan["est_gpu_hours"].groupby(phase).sum()
    return spent.reset_index()


def read_study(study_dir) -> dict:
    """study.json's content, {} when it is missing or unreadable (a ledger reports, never stops)."""
    try:
        data = readers.read_json(Path(study_dir) / "study.json")
    except InputError:
        return {}
    return data if isinstance(data, dict) else {}


def budget(cfg: dict) -> float | None:
    """budget.gpu_hours of the study, or None (no budget)."""
    value = (cfg.get("budget") or {}).get("gpu_hours") if isinstance(cfg, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def hours(value: float) -> str:
    """GPU-hours for people: 1 decimal, 3 below one hour (the demo's runs take seconds)."""
    return f"{value:,.1f}" if value >= 1 else f"{value:.3f}"


def spend_line(spent: float, planned: float | None, budget_h: float | None) -> str:
    """The one line: spent / planned / budget."""
    planned_s = "?" if planned is None else hours(planned)
    budget_s = "no budget" if budget_h is None else f"budget {hours(budget_h)}"
    return f"spent {hours(spent)} / planned {planned_s} (estimate) / {budget_s}"


_MARK = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) Train INFO: "
    r"(?:\[Train\]: Epoch (\d+) started|Training Over)"
)


def epoch_seconds(log) -> tuple[float, int] | None:
    """(seconds per epoch, epochs measured) over the first finished epochs of a training log's
    first launch: from one `Epoch e started` to the next (its evaluation included) or to
    `Training Over`. At least FIRST_EPOCHS epochs, more while they span under MIN_SPAN_S (the
    timestamps have whole seconds); None before one epoch has finished."""
    last = None  # (time, epoch) of the previous mark; epoch None: Training Over
    intervals: list[float] = []
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            for m in filter(None, map(_MARK.match, f)):
                t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
                epoch = int(m.group(2)) if m.group(2) is not None else None
                if last is not None:
                    if last[1] is None or (epoch is not None and epoch != last[1] + 1):
                        break  # after Training Over, or a resumed launch: the first one is over
                    intervals.append(t - last[0])
                last = t, epoch
                if len(intervals) >= FIRST_EPOCHS and sum(intervals) >= MIN_SPAN_S:
                    break
    except OSError:
        return None
    if not intervals or sum(intervals) <= 0:
        return None
    return sum(intervals) / len(intervals), len(intervals)


def epoch_check(cfg: dict, study_dir) -> dict | None:
    """`resources.minutes_per_epoch` against the first runs' measured epochs: each run's seconds
    per epoch over what the estimate gives it (its LoRA cost factor included); the median ratio
    turns into the minutes per epoch the config should say. None before any epoch finished."""
    study_dir = Path(study_dir)
    logs = (study_dir / "runs").glob("*/*/seed=*/work/log.json")
    ratios, runs = [], []
    for log in sorted(logs, key=lambda p: (p.stat().st_mtime, p))[:MAX_LOGS]:
        measured = epoch_seconds(log)
        try:
            p = readers.read_json(log.parent.parent / "params.json")
            epochs = int(p["schedule"]["epochs"])
            expected = costs.gpu_hours(cfg, p["variants"]) / step_gpus(cfg)["train"] / epochs
        except (InputError, KeyError, TypeError, ValueError):
            continue
        if measured and expected > 0:
            ratios.append(measured[0] / 3600.0 / expected)
            runs.append(str(log.parent.parent.relative_to(study_dir / "runs")))
    if not ratios:
        return None
    configured = float(cfg["resources"]["minutes_per_epoch"])
    ratio = statistics.median(ratios)
    return {
        "configured": configured,
        "measured": configured * ratio,
        "ratio": ratio,
        "runs": runs,
        "off": abs(ratio - 1.0) > TOLERANCE,
    }


def estimate_warnings(cfg: dict, study_dir) -> list[str]:
    """The status's warning when minutes_per_epoch is off by more than TOLERANCE."""
    try:
        check = epoch_check(cfg, study_dir)
    except (OSError, KeyError, TypeError, ValueError):  # the status must never fail on this
        return []
    if not check or not check["off"]:
        return []
    return [
        f"resources.minutes_per_epoch {check['configured']:g} is off by "
        f"{100 * (check['ratio'] - 1):+.0f}%: the first finished epochs of "
        f"{len(check['runs'])} run(s) measured {check['measured']:.3g} min per epoch of the "
        "baseline; GPU-hour estimates, the budget check and SLURM wall times use the config's "
        "value: set it to the measured one"
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tadsweep.report.ledger", description=__doc__)
    ap.add_argument("study_dir", help="results/<study>")
    ap.add_argument("--tsv", help="also write the per-run ledger here")
    args = ap.parse_args(argv)
    cli.check_outputs([], [args.tsv])
    study_dir = Path(args.study_dir)
    if not study_dir.is_dir():
        raise InputError(f"{study_dir}: no such study folder")
    cfg, problems = read_study(study_dir), []
    ids, plan = study_runs(study_dir)
    table = study_ledger(study_dir, ids, cfg, problems)
    print(phase_table(table, plan).to_string(index=False, float_format="{:.2f}".format))
    planned = float(plan["est_gpu_hours"].sum()) if plan is not None else None
    print("GPU-hours: " + spend_line(table["gpu_hours_actual"].sum(), planned, budget(cfg)))
    for w in problems + (estimate_warnings(cfg, study_dir) if cfg else []):
        print(f"warning: {w}")
    if args.tsv:
        table.to_csv(args.tsv, sep="\t", index=False)
    return 0


if __name__ == "__main__":
    cli.run(main)
