"""Collect every run x post-processing setting into one tidy table (summary.tsv)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tadsweep.atomic import atomic_path

METRICS = ["average_mAP", "mAP@0.3", "mAP@0.4", "mAP@0.5", "mAP@0.6", "mAP@0.7"]
# The post-processing knobs a summary row carries (the rest are fixed or merged as inert).
PP_PARAMS = (
    "sigma",
    "max_seg_num",
    "multiclass",
    "method",
    "voting_thresh",
    "min_score",
    "video_topk",
    "video_thresh",
)


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


def _blocks_text(blocks: list[int]) -> str:
    """Adapter blocks as compact text: 0-11, or 0-5, or 0,2,4."""
    if blocks == list(range(blocks[0], blocks[-1] + 1)):
        return f"{blocks[0]}-{blocks[-1]}"
    return ",".join(map(str, blocks))


def run_rows(results_dir: str | Path, run_id: str, gpus: int) -> list[dict]:
    rdir = Path(results_dir) / "runs" / run_id
    p = json.loads((rdir / "params.json").read_text())
    train = json.loads((rdir / "train.json").read_text())
    curves = pd.read_csv(rdir / "curves.tsv", sep="\t")
    sweep = pd.read_csv(rdir / "sweep.tsv", sep="\t")
    evals = curves.dropna(subset=["average_mAP"])
    best = evals.loc[evals["average_mAP"].idxmax()] if len(evals) else None
    # train.json sums every launch of a resumed run (a benchmark file times only the last one)
    seconds = float(train.get("seconds", np.nan))
    gpu_seconds = float(train.get("gpu_seconds", seconds * gpus))
    base = {
        **_identity(p, "done"),
        "lora_r": p["lora"]["r"],
        "lora_alpha": p["lora"]["alpha"],
        "lora_dropout": p["lora"]["dropout"],
        "lr": p["schedule"]["lr"],
        "head_lr": p["schedule"]["head_lr"],
        "warmup_epoch": p["schedule"]["warmup_epoch"],
        "epochs": p["schedule"]["epochs"],
        "cosine_epochs": p["schedule"]["cosine_epochs"],
        "drop_path_rate": p["structure"]["drop_path_rate"],
        "adapter_index": _blocks_text(p["structure"]["adapter_index"]),
        "best_epoch": int(best["epoch"]) if best is not None else np.nan,
        "best_average_mAP": float(best["average_mAP"]) if best is not None else np.nan,
        "final_log_average_mAP": float(evals["average_mAP"].iloc[-1]) if len(evals) else np.nan,
        "train_seconds": seconds,
        "gpu_hours": gpu_seconds / 3600.0,
    }
    rows = []
    for rec in sweep.to_dict("records"):
        row = dict(base)
        row["setting"] = rec["setting"]
        row["is_default_setting"] = rec["setting"] == "default"
        for key in PP_PARAMS:
            row[key] = rec.get(key)
        for m in METRICS:
            row[m] = rec.get(m, np.nan)
        rows.append(row)
    return rows


def failed_row(results_dir: str | Path, run_id: str, failure: dict) -> dict:
    """A failed run: its parameters, no metrics, the step and log that say why."""
    p = json.loads((Path(results_dir) / "runs" / run_id / "params.json").read_text())
    return {
        **_identity(p, "failed"),
        "failed_step": failure.get("step"),
        "log": failure.get("log"),
    }


def collect(results_dir, run_ids, gpus: int, out, failed: dict | None = None) -> pd.DataFrame:
    """summary.tsv from the finished runs, plus one row per failed run (status failed, no
    metrics, with its log) so that the report names it."""
    rows = [row for rid in run_ids for row in run_rows(results_dir, rid, gpus)]
    rows += [failed_row(results_dir, rid, f) for rid, f in (failed or {}).items()]
    table = pd.DataFrame(rows)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return table
