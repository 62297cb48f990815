"""Pick a phase's winner by the study's fixed rule: the best aggregate over seeds of the
final-epoch metric under the default post-processing. The base phase's winner competes as the
incumbent with its existing runs (never retrained). Cross-fitting: docs/outputs.md."""

import argparse

import pandas as pd

from tadsweep import cli
from tadsweep.atomic import atomic_path, write_json
from tadsweep.detections.evaluate import basis_name
from tadsweep.errors import InputError
from tadsweep.plan.budget import read_gate
from tadsweep.plan.runs import read_winner
from tadsweep.plan.scores import SCORES, run_scores


def choose(scores: pd.DataFrame, aggregate: str, basis: str = "all") -> pd.DataFrame:
    """Ranking of configurations by the aggregate of their scores on ``basis`` (``score``), best
    first; ties keep the order of the config (stable). ``score_all``/``score_a``/``score_b``:
    the same aggregate on all videos and on each half."""
    grouped = scores.groupby("config_id", sort=False)  # groups in the order of the config
    ranking = grouped[SCORES[basis]].agg(score=aggregate, std="std", seeds="count")
    for b, col in SCORES.items():
        ranking[f"score_{b}"] = grouped[col].agg(aggregate)
    return ranking.reset_index().sort_values("score", ascending=False, kind="stable")


def crossfit(scores: pd.DataFrame, key: str, aggregate: str = "mean", decisions: str = "a"):
    """Choose the best ``key`` (config, setting, ...) on half a, on half b and on all videos, by
    the aggregate of ``score_a``/``score_b``/``score`` over its rows (first on ties), and score
    each choice on a, b and all. honest = mean(the a-choice on b, the b-choice on a): each half
    judges a choice it did not make; optimistic = the all-videos choice on all videos."""
    agg = scores.groupby(key, sort=False)[list(SCORES.values())].agg(aggregate)
    out = {"decisions": basis_name(decisions)}
    for basis, col in SCORES.items():
        if agg[col].isna().all():
            return None  # no per-half scores (results from before cross-fitting)
        best = agg[col].idxmax()  # the first of equal maxima
        out[f"chosen_on_{basis}"] = {key: best, **{b: agg.at[best, c] for b, c in SCORES.items()}}
    out["honest"] = (out["chosen_on_a"]["b"] + out["chosen_on_b"]["a"]) / 2.0
    out["optimistic"] = out["chosen_on_all"]["all"]
    return out


def winner(
    scores: pd.DataFrame, phase: str, incumbent: dict | None, metric, aggregate, crossfit_on=False
):
    """winner.json's content and the ranking of a phase's configurations (and its incumbent's),
    chosen on half a with ``crossfit_on``, else on all videos."""
    competing = scores[scores["phase"] == phase]
    if incumbent is not None:  # the base phase's winner, with the runs it already has
        runs = incumbent["run_ids"]
        if missing := sorted(set(runs) - set(scores["run_id"])):
            raise InputError(f"incumbent runs without results: {', '.join(missing)}")
        competing = pd.concat([scores[scores["run_id"].isin(runs)], competing])
    if competing.empty:
        raise InputError(f"phase {phase}: no finished run to choose from")
    basis = "a" if crossfit_on else "all"
    ranking = choose(competing, aggregate, basis)
    best = ranking.iloc[0]["config_id"]
    chosen = competing[competing["config_id"] == best]
    seed_scores = zip(chosen["seed"], chosen[SCORES[basis]])
    content = {
        "config_id": best,
        "variants": chosen["variants"].iloc[0],
        "metric": metric,
        "aggregate": aggregate,
        "scored_on": basis_name(basis),  # "score" and "seed_scores" are on these videos
        "score": float(ranking.iloc[0]["score"]),
        "run_ids": list(chosen["run_id"]),
        "seed_scores": {str(s): float(v) for s, v in seed_scores},
        "crossfit": crossfit(competing, "config_id", aggregate, basis),
    }
    return content, ranking


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tadsweep.plan.select", description=__doc__)
    ap.add_argument("--phase", required=True)
    ap.add_argument("--params", nargs="+", required=True, help="the runs' params.json")
    ap.add_argument("--sweeps", nargs="+", required=True, help="the runs' sweep.tsv, same order")
    ap.add_argument("--incumbent", help="the base phase's winner.json (phases on a phase)")
    ap.add_argument("--metric", required=True)
    ap.add_argument("--aggregate", required=True, choices=["mean", "median"])
    ap.add_argument(
        "--crossfit",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="choose on half a of the videos (selection.crossfit); default: all",
    )
    ap.add_argument("--gate", help="the phase's gate.json: arms it did not complete cannot win")
    ap.add_argument("--winner", required=True, help="winner.json to write")
    ap.add_argument("--ranking", required=True, help="ranking.tsv to write")
    args = ap.parse_args(argv)
    inputs = [args.params, args.sweeps, args.incumbent, args.gate]
    cli.check_outputs(inputs, [args.winner, args.ranking])
    scores = run_scores(args.params, args.sweeps, args.metric, halves=args.crossfit)
    incumbent = read_winner(args.incumbent) if args.incumbent else None
    if args.gate:  # staged seeds / budget: an arm left on one seed must not win on it
        incomplete = set(read_gate(args.gate)["incomplete"])
        complete = scores[~scores["config_id"].isin(incomplete)]
        # (unless no arm is complete and no incumbent competes: then all compete on one seed)
        scores = complete if incumbent or (complete["phase"] == args.phase).any() else scores
    content, ranking = winner(
        scores, args.phase, incumbent, args.metric, args.aggregate, args.crossfit
    )
    write_json(content, args.winner)
    with atomic_path(args.ranking) as tmp:
        ranking.to_csv(tmp, sep="\t", index=False)
    return 0


if __name__ == "__main__":
    cli.run(main)
