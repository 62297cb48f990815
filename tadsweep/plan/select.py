"""Pick a phase's winner by the study's fixed rule: the configuration with the best aggregate over
seeds of the final-epoch metric under the default post-processing. The base phase's winner competes
as the incumbent with its existing runs (never retrained)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tadsweep.atomic import atomic_path, write_json


def phase_scores(results_dir: str, run_ids: list[str], metric: str) -> pd.DataFrame:
    """One row per run: config, seed, variants and its metric at the default setting."""
    rows = []
    for rid in run_ids:
        rdir = Path(results_dir) / "runs" / rid
        params = json.loads((rdir / "params.json").read_text())
        sweep = pd.read_csv(rdir / "sweep.tsv", sep="\t")
        default = sweep.loc[sweep["setting"] == "default"]
        rows.append(
            {
                "config_id": params["config_id"],
                "run_id": rid,
                "seed": params["seed"],
                "score": float(default[metric].iloc[0]),
                "variants": params["variants"],
            }
        )
    return pd.DataFrame(rows)


def choose(scores: pd.DataFrame, aggregate: str) -> pd.DataFrame:
    """Ranking of configurations, best first; ties keep the order of the config (stable)."""
    order = {c: i for i, c in enumerate(dict.fromkeys(scores["config_id"]))}
    ranking = (
        scores.groupby("config_id", sort=False)["score"]
        .agg(score=aggregate, std="std", seeds="count")
        .reset_index()
    )
    ranking["order"] = ranking["config_id"].map(order)
    return ranking.sort_values(["score", "order"], ascending=[False, True], kind="stable").drop(
        columns="order"
    )


def write_winner(selection: dict, run_ids: list[str], results_dir: str, base_files, out) -> None:
    """winner.json and ranking.tsv of a phase from its runs (and its base phase's winner)."""
    metric, agg = selection["metric"], selection["aggregate"]
    scores = phase_scores(results_dir, run_ids, metric)
    if base_files:  # the incumbent: the base phase's winner, with the runs it already has
        inc = json.loads(Path(base_files[0]).read_text())
        scores = pd.concat([phase_scores(results_dir, inc["run_ids"], metric), scores])
    ranking = choose(scores, agg)
    best = ranking.iloc[0]["config_id"]
    chosen = scores[scores["config_id"] == best]
    write_json(
        {
            "config_id": best,
            "variants": chosen["variants"].iloc[0],
            "metric": metric,
            "aggregate": agg,
            "score": float(ranking.iloc[0]["score"]),
            "run_ids": list(chosen["run_id"]),
            "seed_scores": {str(s): float(v) for s, v in zip(chosen["seed"], chosen["score"])},
        },
        out.winner,
    )
    with atomic_path(out.ranking) as tmp:
        ranking.to_csv(tmp, sep="\t", index=False)


def top_runs(results_dir: str, run_ids: list[str], metric: str, k: int) -> list[str]:
    """The k best single runs by the selection metric at the default setting (ensemble members)."""
    scores = phase_scores(results_dir, run_ids, metric)
    order = scores.sort_values("score", ascending=False, kind="stable")
    return list(order["run_id"].head(k))
