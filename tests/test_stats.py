"""tadsweep.report.stats on constructed results whose answers are known."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import reportdata as R
import yaml
from docutils.core import publish_parts

from tadsweep.cli import status
from tadsweep.errors import InputError
from tadsweep.report import bootstrap, headline, stats

FAST = 2000  # bootstrap resamples in tests: plenty for the constructed effects
# the seed plan's claims, as config.yaml carries them
SEED_PLAN = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())["claims"]


def analysis(summary=None, **kw):
    summary = R.study_summary() if summary is None else summary
    return stats.analyze(summary, "p1/base", n_boot=FAST, **{"claims": SEED_PLAN, **kw})


def test_bootstrap_interval_known_cases():
    assert all(math.isnan(v) for v in bootstrap.mean_interval([0.7]))
    assert all(math.isnan(v) for v in bootstrap.mean_interval([0.7, float("nan")]))
    assert bootstrap.mean_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    x = np.arange(20.0)
    lo, hi = bootstrap.mean_interval(x, n_resamples=4000, seed=3)
    assert lo < x.mean() < hi
    # the mean of 20 values has SE ~1.3: the 95% interval is about +-2.5 wide
    assert 1.5 < x.mean() - lo < 3.5 and 1.5 < hi - x.mean() < 3.5
    assert bootstrap.mean_interval(x, n_resamples=4000, seed=3) == (lo, hi)  # seeded


def test_one_bootstrap_draws_every_interval():
    """The seeds' intervals are bootstrap.interval's: the same draws give the same bounds, in
    batches or not (the video intervals draw in batches)."""
    x = np.array([3.0, 3.1, 2.9, 3.4])
    want = bootstrap.interval(lambda i: x[i].mean(axis=1), [4], 1000, seed=5)
    assert bootstrap.mean_interval(x, 1000, seed=5) == want
    assert bootstrap.interval(lambda i: x[i].mean(axis=1), [4], 1000, 5, batch=1000) == want
    rng = np.random.default_rng(5)  # what it draws: a matrix of indices per sample, in turn
    means = x[rng.integers(0, 4, (1000, 4))].mean(axis=1)
    assert list(want) == pytest.approx(np.quantile(means, [0.025, 0.975]), abs=1e-12)
    vs = stats.versus_baseline(R.study_summary(), "p1/base", n_boot=FAST).set_index("config_id")
    d = np.array([3.0, 3.1, 2.9])  # p1/lora=A minus p1/base, seeds 1-3
    lo, hi = bootstrap.mean_interval(d, FAST, stats.DEFAULT_SEED)
    assert (vs.loc["p1/lora=A", "diff_ci_low"], vs.loc["p1/lora=A", "diff_ci_high"]) == (
        pytest.approx(lo, abs=1e-9),
        pytest.approx(hi, abs=1e-9),
    )


def test_config_table_exact_mean_and_sd():
    cfg = stats.config_table(R.study_summary(), n_boot=FAST).set_index("config_id")
    base = cfg.loc["p1/base"]
    assert base["mean"] == pytest.approx(51.0)  # seeds 50, 52, 51 points
    assert base["std"] == pytest.approx(1.0)  # sample SD (ddof 1)
    assert base["n_seeds"] == 3 and base["seeds"] == "1,2,3"
    assert base["ci_low"] >= 50.0 and base["ci_high"] <= 52.0
    assert base["mean_mAP@0.3"] == pytest.approx(61.0)
    assert base["gpu_hours_total"] == pytest.approx(3.0)
    assert cfg.loc["p1/lora=A", "gpu_hours_per_run"] == pytest.approx(1.2)
    # the failed configuration has no finished run: it is not a row
    assert "p1/structure=first_half" not in cfg.index


def test_one_seed_has_no_sd_and_no_interval():
    s = pd.DataFrame(R.rows_for("p1/base", {}, [0.5]))
    row = stats.config_table(s, n_boot=FAST).iloc[0]
    assert row["mean"] == pytest.approx(50.0)
    assert math.isnan(row["std"]) and math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])


def test_paired_difference_excludes_zero():
    vs = stats.versus_baseline(R.study_summary(), "p1/base", n_boot=FAST).set_index("config_id")
    a = vs.loc["p1/lora=A"]
    # per seed +3.0, +3.1, +2.9 points: the mean is 3 and the interval stays within [2.9, 3.1]
    assert a["diff"] == pytest.approx(3.0)
    assert a["diff_ci_low"] >= 2.9 - 1e-9 and a["diff_ci_high"] <= 3.1 + 1e-9
    assert a["diff_ci_low"] > 0 and a["n_pairs"] == 3
    assert vs.loc["p1/base", "diff"] == 0.0
    none = vs.loc["p1/augment=none"]
    assert none["diff"] == pytest.approx(-5.0) and none["diff_ci_high"] < 0


def test_pairing_uses_shared_seeds_only():
    rows = R.rows_for("p1/base", {}, [0.50, 0.60, 0.70])
    rows += R.rows_for("p1/lora=A", {"lora": "A"}, [0.52, 0.62])  # seed 3 missing
    vs = stats.versus_baseline(pd.DataFrame(rows), "p1/base", n_boot=FAST)
    a = vs.set_index("config_id").loc["p1/lora=A"]
    assert a["n_pairs"] == 2 and a["pairs"] == "1,2"
    assert a["diff"] == pytest.approx(2.0)  # unpaired means would say -3.0


@pytest.mark.parametrize(
    ("diff", "lo", "hi", "expected"),
    [
        (3.0, 2.5, 3.5, "confirmed"),  # real (lo > 0) and as large as claimed (3 >= 2)
        (2.0, 0.1, 4.0, "confirmed"),  # point exactly at the claimed lower bound
        (1.0, 0.5, 1.5, "not confirmed"),  # real but the interval stays below 2
        (-3.0, -4.0, -2.0, "not confirmed"),  # harmful
        (2.5, -0.5, 5.0, "inconclusive"),  # could be nothing
        (1.5, 0.5, 2.5, "inconclusive"),  # real, smaller than claimed, interval reaches 2
        (3.0, math.nan, math.nan, "inconclusive"),  # no interval
        (math.nan, math.nan, math.nan, "inconclusive"),
    ],
)
def test_verdict_rule(diff, lo, hi, expected):
    assert stats.verdict(diff, lo, hi, low=2.0, high=5.0)[0] == expected


def test_verdict_notes():
    assert "above the claimed range" in stats.verdict(7.0, 6.0, 8.0, 2.0, 5.0)[1]
    assert "harmful" in stats.verdict(-3.0, -4.0, -2.0, 2.0, 5.0)[1]


def test_claims_on_the_constructed_study():
    a = analysis(ensemble=R.ensemble_table())
    c = a.claims.set_index("claim")
    lora = c.loc["LoRA capacity"]
    assert lora["verdict"] == "confirmed"
    # best lora variant with the other axes held equal: lora=A+schedule=v2 against schedule=v2
    assert lora["compared"] == "p1/lora=A+schedule=v2 vs p1/schedule=v2"
    assert lora["diff"] == pytest.approx(3.7)
    assert lora["n_candidates"] == 2 and "biased up" in lora["note"]
    aug = c.loc["Augmentation"]
    assert aug["verdict"] == "not confirmed" and "harmful" in aug["note"]
    assert c.loc["Structure", "verdict"] == "inconclusive"  # its only run failed
    assert "no configuration varies structure" in c.loc["Structure", "note"]
    pp = c.loc["Post-processing"]
    # sigma 0.5 and max_seg_num 2500 add 1.0 + 0.2 points on every run; voting_thresh is inert so
    # s2 and s3 tie and the first wins
    assert pp["verdict"] == "confirmed" and pp["candidate"] == "s2"
    assert pp["diff"] == pytest.approx(1.2) and pp["n_pairs"] == 15
    ens = c.loc["Ensembles"]
    assert ens["diff"] == pytest.approx(3.0)  # 59.0 at 3 members vs 56.0
    assert ens["verdict"] == "confirmed" and "pooled seed SD" in ens["note"]


def test_claim_not_confirmed_and_inconclusive_when_constructed():
    s = R.study_summary()
    claims = [{"claim": "big LoRA", "axis": "lora", "low": 5, "high": 8}]
    row = stats.evaluate_claims(s, claims, "p1/base", n_boot=FAST).iloc[0]
    assert row["verdict"] == "not confirmed" and row["diff_ci_high"] < 5

    rows = R.rows_for("p1/base", {}, [0.50, 0.50, 0.50])
    rows += R.rows_for("p1/schedule=v2", {"schedule": "v2"}, [0.49, 0.505, 0.53])  # -1, +.5, +3
    claims = [{"claim": "schedule", "axis": "schedule", "low": 1, "high": 3}]
    row = stats.evaluate_claims(pd.DataFrame(rows), claims, "p1/base", n_boot=FAST).iloc[0]
    assert row["diff"] == pytest.approx(2.5 / 3)
    assert row["diff_ci_low"] < 0 < 1 < row["diff_ci_high"]
    assert row["verdict"] == "inconclusive"


def test_confounded_axis_comparison_is_named():
    rows = R.rows_for("p1/base", {}, [0.50, 0.51, 0.52])
    rows += R.rows_for("p1/lora=A+schedule=v2", {"lora": "A", "schedule": "v2"}, [0.53, 0.54, 0.55])
    claims = [{"claim": "LoRA", "axis": "lora", "low": 2, "high": 5}]
    row = stats.evaluate_claims(pd.DataFrame(rows), claims, "p1/base", n_boot=FAST).iloc[0]
    assert row["reference"] == "p1/base" and "confounded: also differs in schedule" in row["note"]


def test_ensemble_without_repeats_uses_the_fallback_sd():
    s = pd.DataFrame(R.rows_for("p1/base", {}, [0.5]))
    claims = [{"claim": "ens", "axis": "ensemble", "low": 2, "high": 4}]
    row = stats.evaluate_claims(s, claims, "p1/base", R.ensemble_table(), n_boot=FAST).iloc[0]
    half = 1.96 * math.sqrt(2) * stats.FALLBACK_RUN_SD
    assert row["diff_ci_low"] == pytest.approx(3.0 - half)
    none = stats.evaluate_claims(s, claims, "p1/base", None, n_boot=FAST).iloc[0]
    assert none["verdict"] == "inconclusive" and "no ensemble" in none["note"]


def test_inert_settings_named():
    rows = R.study_summary()
    same = pd.DataFrame(R.rows_for("p1/augment=copy", {"augment": "copy"}, [0.50, 0.52, 0.51]))
    a = analysis(pd.concat([rows, same]), warnings=["postprocess.default.voting_thresh: inert"])
    msgs = list(a.inert["message"])
    assert a.inert.iloc[0]["source"] == "validation"
    assert any(m.startswith("postprocess voting_thresh") for m in msgs)
    assert not any(m.startswith("postprocess sigma") for m in msgs)
    assert any(m.startswith("p1/augment=copy: identical to p1/base") for m in msgs)


def test_inert_only_under_a_switch():
    grid = [
        {"setting": "default", "sigma": 0.7, "max_seg_num": 2000, "voting_thresh": 0.7},
        {"setting": "v0", "sigma": 0.7, "max_seg_num": 2000, "voting_thresh": 0.0},
        {"setting": "agn", "sigma": 0.7, "max_seg_num": 2000, "voting_thresh": 0.7},
        {"setting": "agn0", "sigma": 0.7, "max_seg_num": 2000, "voting_thresh": 0.0},
    ]
    s = pd.DataFrame(R.rows_for("p1/base", {}, [0.5, 0.6], grid=grid))
    agn = s["setting"].str.startswith("agn")
    s.loc[agn, "multiclass"] = False
    s.loc[s["setting"] == "agn0", "average_mAP"] += 0.01  # voting acts class-agnostic only
    msgs = stats.observed_inert(s)
    assert msgs == [
        "postprocess voting_thresh: values 0.0, 0.7 give identical metrics whenever "
        "multiclass=True (2 comparisons): inert there"
    ]


def test_headline_content_and_json():
    a = analysis(ensemble=R.ensemble_table())
    h = a.headline
    json.dumps(h, allow_nan=False)  # NaN became null
    assert h["best"]["config_id"] == "p1/lora=A+schedule=v2"
    assert h["best"]["gain"]["diff"] == pytest.approx(4.0)
    assert h["baseline"]["mean"] == pytest.approx(51.0)
    assert h["ensemble"]["gain"] == pytest.approx(3.0) and h["ensemble"]["step"] == 3
    assert h["gpu_hours"] == pytest.approx(3 * (1 + 1.2 + 2 + 1 + 2.4))
    assert h["runs"] == {"done": 15, "failed": 1, "pending": 0}
    assert h["failed_runs"] == ["p1/structure=first_half/seed=1"]
    assert h["postprocess"]["setting"] == "s2" and h["postprocess"]["n_runs"] == 15
    # named by its values, not its id (min_score 0.001 is the constructed rows' own value)
    described = "sigma 0.5, max_seg_num 2500, per class, method 2, min_score 0.001"
    assert h["postprocess"]["described"] == described
    assert [c["verdict"] for c in h["claims"]][:3] == ["confirmed", "confirmed", "not confirmed"]


def test_reported_figures_are_checked_against_the_seeds():
    """Baseline 51.0 over seeds 50/52/51; the control (augment=none) 46.0: one reported figure
    inside the baseline's interval, one far above the control's, the control minus the baseline."""
    reported = {
        "baseline": {"average_mAP": 50.5, "per_tiou": {"mAP@0.5": 55.0}, "source": "user v1"},
        "control": {"variants": {"augment": "none"}, "average_mAP": 69.03, "source": "upstream"},
    }
    h = analysis(reported=reported).headline["reported"]
    base, control = h["baseline"], h["control"]
    assert base["config_id"] == "p1/base" and base["n_seeds"] == 3
    assert base["diff"] == pytest.approx(0.5) and base["verdict"].startswith("consistent")
    assert base["per_tiou"]["mAP@0.5"] == {"reported": 55.0, "study": pytest.approx(51.0)}
    assert control["config_id"] == "p1/augment=none"
    assert control["diff"] == pytest.approx(46.0 - 69.03) and control["verdict"].startswith("below")
    assert control["minus_baseline"]["diff"] == pytest.approx(-5.0)
    text = dict(headline.lines(analysis(reported=reported).headline))
    assert "p1/base: 51.00 over 3 seed(s)" in text["Baseline check"]
    assert "vs 69.03 reported (upstream): -23.03, below" in text["Control arm"]
    # not run yet: said so, not hidden
    none = analysis(reported={"control": dict(reported["control"], variants={"lora": "B"})})
    assert "no finished run" in dict(headline.lines(none.headline))["Control arm"]


def test_headline_renders_as_valid_rst_and_html():
    h = analysis(ensemble=R.ensemble_table()).headline
    rst = headline.render_rst(h)
    # halt on warnings: the snippet is included into report/workflow.rst and must stay clean
    body = publish_parts(rst, writer="html", settings_overrides={"halt_level": 2})["body"]
    assert "p1/lora=A+schedule=v2" in body and "+4.00 points" in body
    assert "structure=first_half/seed=1" in body  # the escaped underscore comes out right
    page = headline.render_html(h)
    assert page.startswith("<!DOCTYPE html>") and "+3.00 points over the best single run" in page
    empty = stats.analyze(R.study_summary().iloc[:0], "p1/base", n_boot=FAST).headline
    assert "no finished run yet" in headline.render_rst(empty)


def test_percent_values_are_refused():
    s = R.study_summary()
    s["average_mAP"] *= 100
    with pytest.raises(InputError, match="expected a fraction"):
        stats.analyze(s, "p1/base")


def test_cli_writes_tables_and_headline(tmp_path):
    R.study_summary().to_csv(tmp_path / "summary.tsv", sep="\t", index=False)
    R.ensemble_table().to_csv(tmp_path / "ensemble.tsv", sep="\t", index=False)
    study = {
        "study": {"name": "t"},
        "baseline_config_id": "p1/base",
        "warnings": ["postprocess.default.voting_thresh: inert"],
        "claims": [{"claim": "LoRA capacity", "axis": "lora", "low": 2, "high": 5}],
    }
    (tmp_path / "study.json").write_text(json.dumps(study))
    out = tmp_path / "stats"
    rc = stats.main(
        [
            str(tmp_path / "summary.tsv"),
            "--out-dir",
            str(out),
            "--study-json",
            str(tmp_path / "study.json"),
            "--ensemble",
            str(tmp_path / "ensemble.tsv"),
            "--n-boot",
            "500",
        ]
    )
    assert rc == 0
    claims = pd.read_csv(out / "claims.tsv", sep="\t")
    assert list(claims["claim"]) == ["LoRA capacity"]
    h = json.loads((out / "headline.json").read_text())
    assert h["study"] == "t" and h["bootstrap"]["n_boot"] == 500
    assert len(pd.read_csv(out / "configs.tsv", sep="\t")) == 5
    assert pd.read_csv(out / "inert.tsv", sep="\t")["source"].iloc[0] == "validation"
    args = [str(out / "headline.json"), "--rst", str(out / "h.rst"), "--html", str(out / "h.html")]
    args += ["--tables", *map(str, sorted(out.glob("*.tsv")))]
    assert headline.main(args) == 0
    assert "Best configuration" in (out / "h.rst").read_text()
    page = (out / "h.html").read_text()
    # the tables come along (the report shows HTML, TSV only as a download)
    assert page.count("<table") == 4 and "<td>LoRA capacity</td>" in page


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    (tmp_path / "summary.tsv").write_text("run_id\tseed\nx\t1\n")
    argv = [str(tmp_path / "summary.tsv"), "--out-dir", str(tmp_path / "o")]
    assert status(stats.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert "missing column(s)" in err and "\n" not in err


def noisy_study(seed=0, n_configs=20) -> pd.DataFrame:
    """Every configuration and every post-processing setting is worth 0.5; each (configuration,
    setting) has its own noise on each half of the videos, shared by its seeds (a half's videos
    happen to suit it or not). All videos: the mean of the halves."""
    rng = np.random.default_rng(seed)
    grid = [{"setting": "default", **R.DEFAULT}] + [
        {"setting": f"s{i}", "sigma": 0.7 + 0.1 * i, "max_seg_num": 2000, "voting_thresh": 0.7}
        for i in range(1, 9)
    ]
    rows = []
    for k in range(n_configs):
        cid, variants = ("p1/base", {}) if k == 0 else (f"p1/lora=x{k}", {"lora": f"x{k}"})
        rows += R.rows_for(cid, variants, [0.5, 0.5], grid=grid)
    df = pd.DataFrame(rows)
    keys = list(zip(df["config_id"], df["setting"]))
    noise = {key: rng.normal(0, 0.01, 2) for key in dict.fromkeys(keys)}
    e = np.array([noise[key] for key in keys])
    df["a:average_mAP"], df["b:average_mAP"] = 0.5 + e[:, 0], 0.5 + e[:, 1]
    df["average_mAP"] = 0.5 + e.mean(axis=1)
    return df


def test_crossfit_figures_honest_below_optimistic():
    summary = noisy_study()
    chosen = {"members": ["r1", "r2"], "a": 0.56, "b": 0.51, "all": 0.535}
    ens = {"decisions": "half a", "honest": 0.52, "optimistic": 0.55, "chosen_on_a": chosen}
    h = analysis(summary, ensemble_crossfit=ens).headline
    cf = h["crossfit"]
    assert cf["decisions"] == "half a"
    default = summary[summary["is_default_setting"]]
    means = default.groupby("config_id")[["average_mAP", "a:average_mAP", "b:average_mAP"]].mean()
    means = means * 100.0
    best = cf["best_config"]
    a_choice, b_choice = means["a:average_mAP"].idxmax(), means["b:average_mAP"].idxmax()
    assert best["chosen_on_a"]["config_id"] == a_choice
    assert best["chosen_on_b"]["config_id"] == b_choice
    honest = (means.at[a_choice, "b:average_mAP"] + means.at[b_choice, "a:average_mAP"]) / 2
    assert best["honest"] == pytest.approx(honest, abs=1e-6)
    assert best["optimistic"] == pytest.approx(h["best"]["mean"], abs=1e-6)
    assert best["optimistic"] - best["honest"] > 0.5  # the winner's curse, in points
    pp = cf["postprocess"]
    assert pp["optimistic"] == pytest.approx(h["postprocess"]["diff"], abs=1e-6)
    assert pp["optimistic"] - pp["honest"] > 0.1
    assert pp["chosen_on_a"]["described"].startswith("sigma ")
    assert cf["ensemble"]["honest"] == pytest.approx(52.0)
    assert cf["ensemble"]["chosen_on_a"]["b"] == pytest.approx(51.0)
    text = headline.render_rst(h)
    publish_parts(text, writer="html", settings_overrides={"halt_level": 2})  # valid rst
    assert "Best configuration, honest vs optimistic" in text
    assert f"{best['honest']:.2f} vs {best['optimistic']:.2f}" in text
    assert "decisions on half a" in text and "Ensemble, honest vs optimistic" in text
    off = analysis(summary, crossfit=False).headline["crossfit"]
    assert off["decisions"] == off["best_config"]["decisions"] == "all videos"
    assert off["best_config"] == best | {"decisions": "all videos"}  # the same figures
    assert "selection.crossfit: false" in headline.render_rst({"crossfit": off})


def test_no_crossfit_figures_without_half_columns():
    assert analysis().headline["crossfit"] is None


def test_a_study_without_claims_checks_none(tmp_path):
    """`claims: []` (or none at all) is no claim, not the seed plan's."""
    assert analysis(claims=[]).claims.empty and analysis(claims=None).headline["claims"] == []
    R.study_summary().to_csv(tmp_path / "summary.tsv", sep="\t", index=False)
    for name, study in (("empty", {"claims": []}), ("absent", {})):
        (tmp_path / f"{name}.json").write_text(json.dumps(study))
        out = tmp_path / name
        argv = [str(tmp_path / "summary.tsv"), "--study-json", str(tmp_path / f"{name}.json")]
        assert stats.main([*argv, "--n-boot", "200", "--out-dir", str(out)]) == 0
        assert json.loads((out / "headline.json").read_text())["claims"] == []
        assert pd.read_csv(out / "claims.tsv", sep="\t").empty
        assert "Seed-plan claims" not in dict(
            headline.lines(json.loads((out / "headline.json").read_text()))
        )


def test_a_one_member_ensemble_is_no_ensemble():
    """No greedy step beat the best single run on half a: the first screen says so instead of
    a zero gain with a zero-width interval."""
    one = R.ensemble_table(best_single=0.56, steps=(0.56,)).assign(
        selected_on="a", **{"a:average_mAP": 0.57}
    )
    h = analysis(ensemble=one).headline
    assert h["ensemble"]["n_members"] == 1 and h["ensemble"]["chosen_on"] == "half a"
    text = dict(headline.lines(h))["Ensemble"]
    assert text.startswith("no ensemble beat the best single run on half a")
    assert "+0.00" not in text and "CI" not in text
    assert "p1/lora=A+schedule=v2/seed=2: 56.00 average mAP" in text
    note = analysis(ensemble=one).claims.set_index("claim").loc["Ensembles", "note"]
    assert note.startswith("no ensemble beat the best single run on half a")
    # several members: the gain, as before
    assert analysis(ensemble=R.ensemble_table()).headline["ensemble"]["n_members"] == 3
