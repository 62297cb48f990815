"""Cross-fitted selection: the fixed split, per-half metrics from one evaluation, phase winners
chosen on half a with the swap recorded, and honest figures below optimistic ones when every
configuration is equal in truth and only the noise differs."""

import json

import numpy as np
import pandas as pd
import pytest
import reference_opentad as ref

from tadsweep.detections.evaluate import evaluate, load_ground_truth, split_halves
from tadsweep.errors import InputError
from tadsweep.plan import select


def test_split_sorts_names_and_alternates():
    videos = ["v10", "v2", "v1", "v3", "v20"]  # sorted: v1 v10 v2 v20 v3
    assert split_halves(videos) == {"v1": "a", "v10": "b", "v2": "a", "v20": "b", "v3": "a"}
    assert split_halves(reversed(videos)) == split_halves(videos)  # names only, not order


def _case(rng):
    """Videos with ground truth and predictions of continuous scores (no ties: a half's ranking
    is then the same whether it is cut from the full one or sorted alone)."""
    db, res = {}, {}
    for v in range(int(rng.integers(4, 9))):
        anns = []
        for _ in range(int(rng.integers(1, 6))):
            s = float(rng.uniform(0, 30))
            end = s + float(rng.uniform(0.5, 5))
            anns.append({"segment": [s, end], "label": f"c{rng.integers(3)}"})
        db[f"v{v}"] = {"subset": "validation", "annotations": anns}
        starts = rng.uniform(0, 30, int(rng.integers(0, 15)))
        res[f"v{v}"] = [
            {"segment": [s, s + float(rng.uniform(0.5, 5))], "label": f"c{rng.integers(3)}",
             "score": float(rng.random())}
            for s in starts
        ]  # fmt: skip
    db["other"] = {"subset": "training", "annotations": []}
    res["other"] = [{"segment": [1.0, 2.0], "label": "c0", "score": 0.9}]  # in neither half
    return db, res


def test_half_metrics_equal_each_half_evaluated_alone(tmp_path):
    rng = np.random.default_rng(0)
    for _ in range(25):
        db, res = _case(rng)
        path = tmp_path / "gt.json"
        path.write_text(json.dumps({"database": db}))
        gt = load_ground_truth(path)
        got = evaluate(gt, res, strict=False, halves=True)
        halves = got.pop("halves")
        assert got == evaluate(gt, res, strict=False)  # the full set is untouched
        split = split_halves(gt.videos)
        for h in ("a", "b"):
            alone = {v: dict(i, subset="training") for v, i in db.items()}
            alone.update({v: db[v] for v in split if split[v] == h})
            expected = ref.evaluate(alone, {v: res[v] for v in split if split[v] == h})
            expected.pop("per_class")
            assert halves[h] == pytest.approx(expected, abs=1e-12)


def noisy_scores(n_configs=40, seeds=2, sd=0.02, seed=3) -> pd.DataFrame:
    """Every configuration is worth 0.5; each half adds its own noise, all videos average them."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_configs):
        for s in range(seeds):
            a, b = 0.5 + rng.normal(0, sd, 2)
            rows.append({"phase": "p1", "config_id": f"p1/c{c}", "run_id": f"p1/c{c}/seed={s}",
                         "seed": s, "score": (a + b) / 2, "score_a": a, "score_b": b,
                         "variants": {"lora": f"c{c}"}})  # fmt: skip
    return pd.DataFrame(rows)


def test_winner_is_chosen_on_half_a_and_the_swap_is_recorded():
    scores = noisy_scores()
    means = scores.groupby("config_id")[["score", "score_a", "score_b"]].mean()
    content, ranking = select.winner(scores, "p1", None, "average_mAP", "mean", crossfit_on=True)
    cf = content["crossfit"]
    assert content["config_id"] == means["score_a"].idxmax() == cf["chosen_on_a"]["config_id"]
    assert content["scored_on"] == cf["decisions"] == "half a"
    assert content["score"] == pytest.approx(means["score_a"].max()) == ranking["score"].iloc[0]
    swap = cf["chosen_on_b"]
    assert swap["config_id"] == means["score_b"].idxmax()
    assert swap["a"] == pytest.approx(means.loc[swap["config_id"], "score_a"])
    chosen = cf["chosen_on_a"]
    assert (chosen["a"], chosen["all"]) == pytest.approx(
        (means.loc[chosen["config_id"], "score_a"], means.loc[chosen["config_id"], "score"])
    )
    assert cf["honest"] == pytest.approx((chosen["b"] + swap["a"]) / 2)
    assert cf["optimistic"] == pytest.approx(means["score"].max())
    # All equal in truth (0.5): the optimistic figure is the noise's maximum, the honest one is not
    assert cf["optimistic"] - cf["honest"] > 0.01
    assert abs(cf["honest"] - 0.5) < 0.03  # 3 SD of the honest figure's noise
    # Without cross-fitting, today's rule on all videos; both figures still there.
    plain, _ = select.winner(scores, "p1", None, "average_mAP", "mean")
    assert plain["config_id"] == means["score"].idxmax() and plain["scored_on"] == "all videos"
    assert plain["crossfit"]["honest"] == cf["honest"]


def test_honest_is_unbiased_where_optimistic_is_not():
    """Over 30 studies of 40 equal configurations: the optimistic figure is the maximum of 40
    noisy means (about +2.2 SD of a mean, +0.022); the honest one stays at the truth."""
    figures = []
    for seed in range(30):
        cf = select.winner(noisy_scores(seed=seed), "p1", None, "average_mAP", "mean", True)[0]
        figures.append((cf["crossfit"]["optimistic"], cf["crossfit"]["honest"]))
    optimistic, honest = np.mean(figures, axis=0) - 0.5
    assert optimistic > 0.015
    assert abs(honest) < 0.006  # 3 standard errors (0.0107 / sqrt(30))


def _run_files(tmp_path, scores: pd.DataFrame, halves=True):
    params, sweeps = [], []
    for k, r in enumerate(scores.to_dict("records")):
        p, w = tmp_path / f"params{k}.json", tmp_path / f"sweep{k}.tsv"
        keys = ("phase", "config_id", "run_id", "seed", "variants")
        p.write_text(json.dumps({key: r[key] for key in keys}))
        row = {"setting": "default", "average_mAP": r["score"]}
        if halves:
            row.update({"a:average_mAP": r["score_a"], "b:average_mAP": r["score_b"]})
        pd.DataFrame([row]).to_csv(w, sep="\t", index=False)
        params.append(str(p))
        sweeps.append(str(w))
    return params, sweeps


def test_select_cli_with_crossfit_and_an_old_sweep(tmp_path):
    scores = noisy_scores(n_configs=4)
    params, sweeps = _run_files(tmp_path, scores)
    out = ["--winner", str(tmp_path / "w.json"), "--ranking", str(tmp_path / "r.tsv")]
    argv = ["--phase", "p1", "--params", *params, "--sweeps", *sweeps, "--metric", "average_mAP",
            "--aggregate", "mean"]  # fmt: skip
    assert select.main([*argv, "--crossfit", *out]) == 0
    winner = json.loads((tmp_path / "w.json").read_text())
    ranking = pd.read_csv(tmp_path / "r.tsv", sep="\t")
    assert winner["config_id"] == scores.groupby("config_id")["score_a"].mean().idxmax()
    assert winner["crossfit"]["chosen_on_b"]["config_id"] in set(ranking["config_id"])
    assert list(ranking.columns) == ["config_id", "score", "std", "seeds", "score_all",
                                     "score_a", "score_b"]  # fmt: skip
    assert (ranking["score"] == ranking["score_a"]).all()
    old_params, old_sweeps = _run_files(tmp_path, scores, halves=False)
    old = ["--phase", "p1", "--params", *old_params, "--sweeps", *old_sweeps, *argv[-4:]]
    with pytest.raises(InputError, match=r"sweep0\.tsv: no a:average_mAP .*selection\.crossfit"):
        select.main([*old, "--crossfit", *out])
    assert select.main([*old, "--no-crossfit", *out]) == 0  # today's rule needs no halves
    assert json.loads((tmp_path / "w.json").read_text())["crossfit"] is None
