"""tadsweep.report.video_bootstrap: re-weighted matches against tadsweep's own evaluator, the
gain intervals, and what the sweep and the statistics step do with them."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import reportdata as R
from cases import ground_truth_and_predictions

from tadsweep.cli import status
from tadsweep.detections import ensemble, postprocess
from tadsweep.detections.evaluate import evaluate, load_ground_truth, write_matches
from tadsweep.errors import InputError
from tadsweep.report import headline, stats
from tadsweep.report import video_bootstrap as vb


def write_db(tmp_path, db, name="gt.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"database": db}))
    return path


def matched(tmp_path, db, res):
    gt = load_ground_truth(write_db(tmp_path, db))
    out = evaluate(gt, res, strict=False, matches=True)
    return gt, out, vb.arrange(out["matches"])


def random_cases(seed, n=30):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        db, res = ground_truth_and_predictions(rng)
        if any(v["subset"] == "validation" and v["annotations"] for v in db.values()):
            yield rng, db, res


@pytest.mark.parametrize("seed", range(3))
def test_all_weights_one_is_the_evaluator(tmp_path, seed):
    # ties in scores and tIoUs, other-subset videos, labels that are no class: all kept as is
    checked = 0
    for _, db, res in random_cases(seed):
        try:
            gt, out, run = matched(tmp_path, db, res)
        except InputError:  # every instance of the subset was a zero-length or duplicate one
            continue
        got = vb.average_map(run, np.ones((2, len(gt.videos))))
        assert got == pytest.approx([out["average_mAP"]] * 2, abs=1e-12)
        checked += 1
    assert checked > 15


def duplicated(db, res, videos, weights):
    """The database and predictions with subset video v present weights[v] times (renamed)."""
    new_db = {k: v for k, v in db.items() if k not in videos}
    new_res = {k: v for k, v in res.items() if k not in videos}
    for name, w in zip(videos, weights):
        for k in range(int(w)):
            new_db[f"{name}~{k}"] = db[name]
            if name in res:
                new_res[f"{name}~{k}"] = res[name]
    return new_db, new_res


@pytest.mark.parametrize("seed", range(3))
def test_a_resample_is_the_evaluator_on_the_duplicated_videos(tmp_path, seed):
    # Exact when equal scores share their TP flag: distinct scores here (copies tie with
    # themselves only). Weights 0 omit videos, and with them sometimes a whole class.
    checked = 0
    for rng, db, res in random_cases(seed):
        for entries in res.values():
            for e in entries:
                e["score"] = float(rng.random())
        try:
            gt, _, run = matched(tmp_path, db, res)
        except InputError:
            continue
        n = len(gt.videos)
        for w in rng.multinomial(n, np.ones(n) / n, size=4):
            dup_db, dup_res = duplicated(db, res, gt.videos, w)
            try:
                dup_gt = load_ground_truth(write_db(tmp_path, dup_db, "dup.json"))
            except InputError:  # the resample holds no ground truth: no evaluation exists
                assert math.isnan(vb.average_map(run, w[None])[0])
                continue
            want = evaluate(dup_gt, dup_res, strict=False)["average_mAP"]
            assert vb.average_map(run, w[None])[0] == pytest.approx(want, abs=1e-12)
            checked += 1
    assert checked > 40


def synthetic(tmp_path, n_videos=24, seed=0):
    """Ground truth and a detector of given quality: each instance found with its boundaries
    jittered by `noise` seconds (score falling with the jitter), plus background detections."""
    rng = np.random.default_rng(seed)
    db = {}
    for v in range(n_videos):
        starts = rng.uniform(0, 100, rng.integers(1, 4))
        anns = [{"segment": [s, s + rng.uniform(3, 8)], "label": f"c{rng.integers(0, 3)}"}
                for s in starts]  # fmt: skip
        db[f"v{v:02d}"] = {"subset": "validation", "annotations": anns}
    gt = load_ground_truth(write_db(tmp_path, db))

    def detector(noise, seed):
        r = np.random.default_rng(seed)
        res = {}
        for name, info in db.items():
            entries = []
            for a in info["annotations"]:
                s, e = a["segment"]
                js, je = r.normal(0, noise, 2)
                score = float(np.exp(-(abs(js) + abs(je))) * r.uniform(0.5, 1))
                seg = [max(s + js, 0.0), max(e + je, s + js + 0.5)]
                entries.append({"segment": seg, "label": a["label"], "score": score})
            for _ in range(5):
                s = r.uniform(0, 100)
                label, score = f"c{r.integers(0, 3)}", float(r.uniform(0, 0.5))
                entries.append(
                    {"segment": [s, s + r.uniform(1, 8)], "label": label, "score": score}
                )
            res[name] = entries
        return res

    return gt, detector


def test_gain_intervals(tmp_path):
    gt, detector = synthetic(tmp_path)
    runs = {}
    for seed, (key, noise) in enumerate((("good1", 0.3), ("good2", 0.3), ("bad1", 2), ("bad2", 2))):
        out = evaluate(gt, detector(noise, seed + 1), matches=True)
        runs[key] = (out["average_mAP"], vb.arrange(out["matches"]))
    good, bad = runs["good1"][1], runs["bad1"][1]
    same = vb.gain_interval([(good, good)], n_resamples=200)
    assert same["diff"] == 0.0 and same["ci"] == [0.0, 0.0]
    assert same["over"].startswith("videos") and same["n_videos"] == len(gt.videos)
    one = vb.gain_interval([(good, bad)], n_resamples=400, seed=3)
    assert one["diff"] == pytest.approx((runs["good1"][0] - runs["bad1"][0]) * 100, abs=1e-9)
    assert 0 < one["ci"][0] < one["diff"] < one["ci"][1]
    assert vb.gain_interval([(good, bad)], n_resamples=400, seed=3) == one  # seeded
    pairs = [(runs["good1"][1], runs["bad1"][1]), (runs["good2"][1], runs["bad2"][1])]
    two = vb.gain_interval(pairs, n_resamples=400)
    assert two["over"] == "seeds and videos" and two["n_pairs"] == 2
    want = np.mean([runs[f"good{k}"][0] - runs[f"bad{k}"][0] for k in (1, 2)]) * 100
    assert two["diff"] == pytest.approx(want, abs=1e-9)
    assert two["ci"][0] < two["diff"] < two["ci"][1]


def test_the_sweep_writes_the_default_settings_matches(tmp_path):
    gt, detector = synthetic(tmp_path, n_videos=6)
    cand = tmp_path / "cand.json"
    cand.write_text(json.dumps({"results": detector(0.3, 1)}))
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps([{"setting": "default", "sigma": 0.7}, {"setting": "s1"}]))
    args = ["sweep", "--gt", str(tmp_path / "gt.json"), "--candidates", str(cand)]
    args += ["--grid", str(grid), "--out", str(tmp_path / "sweep.tsv")]
    assert status(postprocess.main, [*args, "--matches", str(tmp_path / "m.npz")]) == 0
    run = vb.read_matches(tmp_path / "m.npz")
    sweep = pd.read_csv(tmp_path / "sweep.tsv", sep="\t").set_index("setting")
    got = vb.average_map(run, np.ones((1, len(gt.videos))))[0]
    assert got == pytest.approx(sweep.loc["default", "average_mAP"], abs=1e-12)
    grid.write_text(json.dumps([{"setting": "s1"}]))
    with pytest.raises(InputError, match='no setting "default"'):
        postprocess.main([*args, "--matches", str(tmp_path / "m2.npz")])


def test_stats_gives_first_screen_gains_video_intervals(tmp_path):
    gt, detector = synthetic(tmp_path)
    quality = {"p1/base": 2.0, "p1/lora=A": 0.3}
    rows, matches = [], {}
    for k, (cid, noise) in enumerate(quality.items()):
        for seed in (1, 2):
            out = evaluate(gt, detector(noise, 10 * k + seed), matches=True)
            rid = f"{cid}/seed={seed}"
            write_matches(out["matches"], tmp_path / "runs" / rid / "matches.npz")
            matches[rid] = str(tmp_path / "runs" / rid / "matches.npz")
            variants = {"lora": "A"} if cid.endswith("=A") else {}
            rows += [r for r in R.rows_for(cid, variants, [out["average_mAP"]] * 2)
                     if r["seed"] == seed]  # fmt: skip
    summary = pd.DataFrame(rows)
    assert vb.match_files(matches.values(), summary["run_id"].unique()) == matches
    with pytest.raises(InputError, match="not the matches.npz of one run"):
        vb.match_files([tmp_path / "other" / "matches.npz"], summary["run_id"].unique())
    claims = [
        {"claim": "LoRA capacity", "axis": "lora", "low": 2, "high": 5},
        {"claim": "Post-processing", "axis": "postprocess", "low": 0.5, "high": 1.5},
    ]
    head = stats.analyze(
        summary, "p1/base", claims=claims, n_boot=200, matches=matches, video_resamples=300
    ).headline
    gain = head["best"]["gain"]
    assert head["best"]["config_id"] == "p1/lora=A"
    video = gain["video_ci"]
    assert video["over"] == "seeds and videos" and video["n_resamples"] == 300
    assert video["diff"] == pytest.approx(gain["diff"], abs=1e-4)  # same runs, same videos
    assert video["ci"][0] < gain["diff"] < video["ci"][1]
    lora, pp = head["claims"]
    assert lora["video_ci"] == video  # the same comparison, the same resamples
    assert pp["video_ci"] is None  # no matches_best.npz given
    text = dict(headline.lines(head))
    assert "over seeds and videos (300 resamples): 95% CI" in text["Gain over baseline"]
    assert "over seeds and videos (300 resamples)" in text["Seed-plan claims"]
    assert "resamples" not in text["Post-processing"]


def test_postprocess_and_ensemble_gains_get_video_intervals(tmp_path):
    """The rules' commands on two tiny runs: the sweep, the headline's setting (choose), the runs'
    matches under it, the ensemble's matches, then the statistics; all weights 1 reproduce the
    evaluator's gains."""
    gt, detector = synthetic(tmp_path, n_videos=12)
    grid = [{"setting": "default"}, {"setting": "s1", "max_seg_num": 2}, {"setting": "s2"}]
    grid[2]["sigma"] = 0.9
    files = {k: tmp_path / f"{k}.json" for k in ("grid", "default", "study", "best")}
    files["grid"].write_text(json.dumps(grid))
    files["default"].write_text(json.dumps(grid[0]))
    claim = {"claim": "PP", "axis": "postprocess", "low": 0.5, "high": 1.5}
    files["study"].write_text(json.dumps({"claims": [claim]}))
    gt_args = ["--gt", str(tmp_path / "gt.json")]
    rows, cands, runs = [], [], [f"p1/base/seed={k}" for k in (1, 2)]
    for k, rid in enumerate(runs):
        d = tmp_path / "runs" / rid
        d.mkdir(parents=True)
        cands.append(d / "candidates.json")
        cands[-1].write_text(json.dumps({"results": detector(1.0, k + 1)}))
        args = ["sweep", *gt_args, "--candidates", str(cands[-1]), "--grid", str(files["grid"])]
        args += ["--out", str(d / "sweep.tsv"), "--matches", str(d / "matches.npz")]
        assert status(postprocess.main, args) == 0
        sweep = pd.read_csv(d / "sweep.tsv", sep="\t")
        default = sweep["setting"] == "default"
        run = {"run_id": rid, "config_id": "p1/base", "seed": k + 1, "status": "done"}
        rows.append(sweep.assign(**run, gpu_hours=1.0, is_default_setting=default))
    summary = pd.concat(rows)
    summary.to_csv(tmp_path / "summary.tsv", sep="\t", index=False)
    args = ["choose", str(tmp_path / "summary.tsv"), "--study-json", str(files["study"])]
    assert status(vb.main, [*args, "--grid", str(files["grid"]), "--out", str(files["best"])]) == 0
    best = []
    for rid, cand in zip(runs, cands):
        best.append(tmp_path / "runs" / rid / "matches_best.npz")
        args = ["matches", *gt_args, "--candidates", str(cand), "--setting", str(files["best"])]
        assert status(vb.main, [*args, "--out", str(best[-1])]) == 0
    ens = tmp_path / "ensemble"
    args = [*gt_args, "--candidates", *map(str, cands), "--names", *runs, "--greedy"]
    args += ["--setting", str(files["default"]), "--out", str(ens / "ensemble.tsv")]
    assert status(ensemble.main, [*args, "--matches", str(ens / "matches.npz")]) == 0
    args = [str(tmp_path / "summary.tsv"), "--study-json", str(files["study"]), "--n-boot", "100"]
    args += ["--matches", *[str(tmp_path / "runs" / r / "matches.npz") for r in runs]]
    args += ["--best-matches", *map(str, best), "--ensemble", str(ens / "ensemble.tsv")]
    args += ["--ensemble-matches", str(ens / "matches.npz"), "--video-resamples", "200"]
    assert status(stats.main, [*args, "--out-dir", str(tmp_path / "stats")]) == 0
    head = json.loads((tmp_path / "stats" / "headline.json").read_text())
    pp, ens_head = head["postprocess"], head["ensemble"]
    assert json.loads(files["best"].read_text()) == grid[2]  # s1 (max_seg_num 2) costs recall
    assert pp["setting"] == "s2" and vb.matches_label(best[0], "setting") == "s2"
    v = pp["video_ci"]
    assert v["over"] == "runs and videos" and v["n_pairs"] == 2 == pp["n_runs"]
    assert v["diff"] == pytest.approx(pp["diff"], abs=1e-9)  # the evaluator's gain, exactly
    assert v["ci"][0] <= v["diff"] <= v["ci"][1] and v["ci"][0] < v["ci"][1]
    assert head["claims"][0]["video_ci"] == v
    e = ens_head["video_ci"]
    assert e["n_pairs"] == 1 and e["over"].startswith("videos")
    assert e["diff"] == pytest.approx(ens_head["gain"], abs=1e-9)
    assert e["ci"][0] <= e["diff"] <= e["ci"][1]
    text = dict(headline.lines(head))
    assert "over runs and videos (200 resamples): 95% CI" in text["Post-processing"]
    assert "(200 resamples): 95% CI" in text["Ensemble"]
    # matches of another setting than the headline's: one line, not a wrong interval
    vb.write_matches(vb_arrays(best[0]), best[1], setting="s1")
    with pytest.raises(InputError, match="matches of setting 's1', the headline's is 's2'"):
        stats.main([*args, "--out-dir", str(tmp_path / "stats2")])
    vb.write_matches(vb_arrays(best[0]), best[1], setting="s2")
    vb.write_matches(vb_arrays(ens / "matches.npz"), ens / "matches.npz", members="p1/x")
    with pytest.raises(InputError, match="matches.npz: matches of members 'p1/x', the headline"):
        stats.main([*args, "--out-dir", str(tmp_path / "stats2")])
    # one candidate: the "ensemble" is that run; no gain of 0 in a 0-wide interval, but words
    one = tmp_path / "one"
    args1 = [*gt_args, "--candidates", str(cands[0]), "--names", runs[0], "--greedy"]
    args1 += ["--setting", str(files["default"]), "--out", str(one / "ensemble.tsv")]
    assert status(ensemble.main, [*args1, "--matches", str(one / "matches.npz")]) == 0
    argv = [a.replace(str(ens), str(one)) for a in args]
    assert status(stats.main, [*argv, "--out-dir", str(tmp_path / "stats3")]) == 0
    head = json.loads((tmp_path / "stats3" / "headline.json").read_text())
    assert head["ensemble"]["n_members"] == 1 and "video_ci" not in head["ensemble"]
    text = dict(headline.lines(head))["Ensemble"]
    assert text.startswith("no ensemble beat the best single run on all videos (p1/base/seed=1")


def vb_arrays(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_choose_and_matches_refuse_bad_input_in_one_line(tmp_path, capsys):
    summary = pd.DataFrame(R.rows_for("p1/base", {}, [0.5, 0.52]))
    summary.to_csv(tmp_path / "summary.tsv", sep="\t", index=False)
    (tmp_path / "study.json").write_text("{}")
    grid, out = tmp_path / "grid.json", str(tmp_path / "best.json")
    args = ["choose", str(tmp_path / "summary.tsv"), "--study-json", str(tmp_path / "study.json")]
    grid.write_text(json.dumps([s for s in R.PP_GRID if s["setting"] != "default"]))
    assert status(vb.main, [*args, "--grid", str(grid), "--out", out]) == 2
    assert capsys.readouterr().err == f'error: {grid}: no setting "default"\n'
    grid.write_text(json.dumps([s for s in R.PP_GRID if s["setting"] in ("default", "s3")]))
    assert status(vb.main, [*args, "--grid", str(grid), "--out", out]) == 2  # s2 won (first of 2)
    assert capsys.readouterr().err.endswith(f"setting 's2' is not in {grid}\n")
    grid.write_text(json.dumps(R.PP_GRID))
    assert status(vb.main, [*args, "--grid", str(grid), "--out", out]) == 0
    assert json.loads((tmp_path / "best.json").read_text())["setting"] == "s2"  # +1.2 points
    argv = ["matches", "--gt", out, "--candidates", out, "--setting", out, "--out", out]
    assert status(vb.main, argv) == 2 and out in capsys.readouterr().err
    with pytest.raises(InputError, match="best.json: not a matches file"):
        vb.matches_label(out, "setting")
