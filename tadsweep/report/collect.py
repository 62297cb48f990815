"""Collect every run x post-processing setting into one tidy table (summary.tsv)."""

import argparse

import numpy as np
import pandas as pd

from tadsweep import cli, readers
from tadsweep.atomic import atomic_path
from tadsweep.detections import knobs
from tadsweep.detections.evaluate import half_columns, tiou_columns
from tadsweep.errors import InputError
from tadsweep.plan import rundir, spend
from tadsweep.plan.axes import AXES
from tadsweep.report import ledger, tables

# The post-processing knobs a summary row carries: every knob of a setting (the sweep's columns).
PP_PARAMS = tuple(k.name for k in knobs.swept())


def _identity(p: dict, status: str) -> dict:
    """The columns that name a run, from its params.json."""
    return {
        "study": p["study"],
        "phase": p["phase"],
        "run_id": p["run_id"],
        "config_id": p["config_id"],
        "arm": p["arm"],
        "seed": p["seed"],
        "status": status,
        **{f"v_{k}": v for k, v in p["variants"].items()},
    }


def _table(path, need: tuple[str, ...]) -> pd.DataFrame:
    """A run's TSV (capped, tadsweep.readers), its columns checked: one line naming the file."""
    df = tables.read_table(path, "a run's table")
    if missing := [c for c in need if c not in df]:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


def run_rows(params, train, curves, sweep, gpus: int) -> list[dict]:
    """One row per post-processing setting of a finished run, from its four files."""
    p, train = readers.read_json(params), readers.read_json(train)
    evals = _table(curves, ("epoch", "average_mAP")).dropna(subset=["average_mAP"])
    sweep = _table(sweep, ("setting", "average_mAP"))
    best = evals.loc[evals["average_mAP"].idxmax()] if len(evals) else None
    # train.json sums every launch of a resumed run (a benchmark file times only the last one)
    seconds = float(train.get("seconds", np.nan))
    base = {
        **_identity(p, "done"),
        **{k: v for a, axis in AXES.items() for k, v in axis.summary(p[a]).items()},
        "best_epoch": int(best["epoch"]) if best is not None else np.nan,
        "best_average_mAP": float(best["average_mAP"]) if best is not None else np.nan,
        "final_log_average_mAP": float(evals["average_mAP"].iloc[-1]) if len(evals) else np.nan,
        "train_seconds": seconds,
        "gpu_hours": float(train.get("gpu_seconds", seconds * gpus)) / 3600.0,
    }
    # evaluation.tious as swept, and each metric on the cross-fitting halves
    metrics = ["average_mAP", *tiou_columns(sweep.columns), *half_columns(sweep.columns)]
    return [
        base
        | {"setting": rec["setting"], "is_default_setting": rec["setting"] == "default"}
        | {key: rec.get(key) for key in PP_PARAMS}
        | {m: rec.get(m, np.nan) for m in metrics}
        for rec in sweep.to_dict("records")
    ]


def failed_row(params, failed) -> dict:
    """A failed run: its parameters, no metrics, the step and log that say why (FAILED.json)."""
    p, failure = readers.read_json(params), rundir.read_failure(failed)
    return _identity(p, "failed") | {"failed_step": failure.get("step"), "log": failure.get("log")}


def collect(done: dict, failed: dict, gpus: int, out, spend: dict | None = None) -> pd.DataFrame:
    """summary.tsv from the finished runs' files (``done``: lists of params, train, curves,
    sweeps, in one order) and the failed runs' (``failed``: params, failed), one row each without
    metrics, so that the report names them; ``spend`` ({"study", "files"}: spend.run_files() of
    every run, finished then failed) adds the ledger's columns."""
    lists = [done[k] for k in ("params", "train", "curves", "sweeps")]
    if len({len(x) for x in lists}) != 1 or len(failed["params"]) != len(failed["failed"]):
        raise InputError("collect: the per-run file lists differ in length")
    rows = []
    for files in [*zip(*lists), *zip(failed["params"], failed["failed"])]:
        try:
            rows += run_rows(*files, gpus) if len(files) == 4 else [failed_row(*files)]
        except (KeyError, TypeError, AttributeError) as exc:  # valid JSON, wrong content
            raise InputError(f"{files[0]}: not a params.json of this study ({exc!r})") from None
    table = pd.DataFrame(rows)
    if spend is not None:
        params = [*done["params"], *failed["params"]]
        cols = ledger.summary_columns(params, spend["files"], spend["study"])
        table = table.merge(cols, on="run_id", how="left")
    with atomic_path(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tadsweep.report.collect",
        description="Every run x post-processing setting, and every failed run, in summary.tsv.",
    )
    for name in ("params", "train", "curves", "sweeps"):
        ap.add_argument(f"--{name}", nargs="*", default=[], help=f"finished runs' {name} files")
    ap.add_argument("--failed-params", nargs="*", default=[], help="failed runs' params.json")
    ap.add_argument("--failed", nargs="*", default=[], help="their FAILED.json, same order")
    gpus = cli.config_value("resources.train.gpus")
    ap.add_argument("--gpus", type=gpus, required=True, help="GPUs per training job")
    ap.add_argument("--study-json", help="study.json: with the ledger files, adds GPU-hours spent")
    spend.add_arguments(ap)
    ap.add_argument("--out", required=True, help="summary.tsv")
    args = ap.parse_args(argv)
    done = {k: getattr(args, k) for k in ("params", "train", "curves", "sweeps")}
    ledger_files = [args.attempts, args.bench_train, args.bench_detect]
    cli.check_outputs([*done.values(), args.failed_params, args.failed, *ledger_files], [args.out])
    spent = None
    if args.study_json:
        n = len(args.params) + len(args.failed_params)
        files = spend.files_from(args, n, "collect")
        spent = {"study": readers.read_json(args.study_json), "files": files}
    failed = {"params": args.failed_params, "failed": args.failed}
    collect(done, failed, args.gpus, args.out, spent)
    return 0


if __name__ == "__main__":
    cli.run(main)
