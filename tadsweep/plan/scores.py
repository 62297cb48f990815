"""A run's score, as selection and the gates see it: its metric at the default post-processing
setting, on all evaluation videos and on each cross-fitting half (tadsweep.plan.select,
tadsweep.plan.budget)."""

import pandas as pd

from tadsweep import readers
from tadsweep.detections.evaluate import HALVES, half_column
from tadsweep.errors import InputError

SCORES = {"all": "score", **{h: f"score_{h}" for h in HALVES}}  # basis -> column


def run_scores(params_files, sweep_files, metric: str, halves: bool = False) -> pd.DataFrame:
    """One row per run: phase, config, seed, variants and its metric at the default setting on
    all videos (``score``) and on each half (``score_a``, ``score_b``; NaN in a sweep without
    them, an error with ``halves``)."""
    if len(params_files) != len(sweep_files):
        raise InputError(f"{len(params_files)} params files for {len(sweep_files)} sweeps")
    rows = []
    for params_file, sweep_file in zip(params_files, sweep_files):
        params = readers.read_json(params_file)
        sweep = pd.read_csv(sweep_file, sep="\t")
        default = sweep.loc[sweep["setting"] == "default"]
        if default.empty or metric not in default:
            raise InputError(f"{sweep_file}: no {metric} for setting 'default'")
        half = {}
        for h in HALVES:
            col = half_column(metric, h)
            if halves and col not in default:
                raise InputError(
                    f"{sweep_file}: no {col} (cross-fitting needs per-half scores: delete this "
                    "sweep.tsv to rerun the sweep, or set selection.crossfit: false)"
                )
            half[SCORES[h]] = float(default[col].iloc[0]) if col in default else float("nan")
        rows.append(
            {
                "phase": params["phase"],
                "config_id": params["config_id"],
                "run_id": params["run_id"],
                "seed": params["seed"],
                "score": float(default[metric].iloc[0]),
                **half,
                "variants": params["variants"],
            }
        )
    columns = ["phase", "config_id", "run_id", "seed", *SCORES.values(), "variants"]
    return pd.DataFrame(rows, columns=columns)
