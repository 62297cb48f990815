"""Pick a phase's winner by the study's fixed rule: the configuration with the best aggregate over
seeds of the final-epoch metric under the default post-processing. The base phase's winner competes
as the incumbent with its existing runs (never retrained).

    python -m tadsweep.plan.select --phase P --params PARAMS... --sweeps SWEEPS... \
        [--incumbent WINNER.json] --metric M --aggregate A --winner OUT.json --ranking OUT.tsv

PARAMS and SWEEPS are the runs' params.json and sweep.tsv, in the same order: the phase's own runs,
and those of its ancestor phases (the incumbent's runs are among them).
"""

from __future__ import annotations

import argparse

import pandas as pd

from tadsweep import cli, readers
from tadsweep.atomic import atomic_path, write_json
from tadsweep.errors import InputError
from tadsweep.plan.runs import read_winner


def _read_json(path) -> dict:
    return readers.read_json(path)


def run_scores(params_files, sweep_files, metric: str) -> pd.DataFrame:
    """One row per run: phase, config, seed, variants and its metric at the default setting."""
    if len(params_files) != len(sweep_files):
        raise InputError(f"{len(params_files)} params files for {len(sweep_files)} sweeps")
    rows = []
    for params_file, sweep_file in zip(params_files, sweep_files):
        params = _read_json(params_file)
        sweep = pd.read_csv(sweep_file, sep="\t")
        default = sweep.loc[sweep["setting"] == "default"]
        if default.empty or metric not in default:
            raise InputError(f"{sweep_file}: no {metric} for setting 'default'")
        rows.append(
            {
                "phase": params["phase"],
                "config_id": params["config_id"],
                "run_id": params["run_id"],
                "seed": params["seed"],
                "score": float(default[metric].iloc[0]),
                "variants": params["variants"],
            }
        )
    return pd.DataFrame(rows, columns=["phase", "config_id", "run_id", "seed", "score", "variants"])


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


def winner(scores: pd.DataFrame, phase: str, incumbent: dict | None, metric, aggregate):
    """winner.json's content and the ranking of a phase's configurations (and its incumbent's)."""
    competing = scores[scores["phase"] == phase]
    if incumbent is not None:  # the base phase's winner, with the runs it already has
        runs = incumbent["run_ids"]
        missing = sorted(set(runs) - set(scores["run_id"]))
        if missing:
            raise InputError(f"incumbent runs without results: {', '.join(missing)}")
        competing = pd.concat([scores[scores["run_id"].isin(runs)], competing])
    if competing.empty:
        raise InputError(f"phase {phase}: no finished run to choose from")
    ranking = choose(competing, aggregate)
    best = ranking.iloc[0]["config_id"]
    chosen = competing[competing["config_id"] == best]
    content = {
        "config_id": best,
        "variants": chosen["variants"].iloc[0],
        "metric": metric,
        "aggregate": aggregate,
        "score": float(ranking.iloc[0]["score"]),
        "run_ids": list(chosen["run_id"]),
        "seed_scores": {str(s): float(v) for s, v in zip(chosen["seed"], chosen["score"])},
    }
    return content, ranking


def top_runs(scores: pd.DataFrame, k: int) -> list[str]:
    """The k best single runs by score (ensemble members)."""
    order = scores.sort_values("score", ascending=False, kind="stable")
    return list(order["run_id"].head(k))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tadsweep.plan.select", description=__doc__)
    ap.add_argument("--phase", required=True)
    ap.add_argument("--params", nargs="+", required=True, help="the runs' params.json")
    ap.add_argument("--sweeps", nargs="+", required=True, help="the runs' sweep.tsv, same order")
    ap.add_argument("--incumbent", help="the base phase's winner.json (phases on a phase)")
    ap.add_argument("--metric", required=True)
    ap.add_argument("--aggregate", required=True, choices=["mean", "median"])
    ap.add_argument("--winner", required=True, help="winner.json to write")
    ap.add_argument("--ranking", required=True, help="ranking.tsv to write")
    args = ap.parse_args(argv)
    inputs = [args.params, args.sweeps, args.incumbent]
    cli.check_outputs(inputs, [args.winner, args.ranking])
    scores = run_scores(args.params, args.sweeps, args.metric)
    incumbent = read_winner(args.incumbent) if args.incumbent else None
    content, ranking = winner(scores, args.phase, incumbent, args.metric, args.aggregate)
    write_json(content, args.winner)
    with atomic_path(args.ranking) as tmp:
        ranking.to_csv(tmp, sep="\t", index=False)
    return 0


if __name__ == "__main__":
    cli.run(main)
