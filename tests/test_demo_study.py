"""The embedded demo study end to end, as `make demo` runs it: every phase, selection, the
post-processing sweep, the ensemble, the summary, statistics, plots and the report -- then the
report in headless Chromium. The study runs once per test session (a few minutes on 2 cores)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from browser import assert_not_blank, rendered_dom, screenshot

from tadsweep.report import ledger, plots, status

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
STUDY = "results/demo"


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the jobs' python
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile",
           str(ROOT / "configs" / "demo.yaml"), "--directory", str(workdir), *args]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500, check=False)


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("demo")
    res = snakemake(work, "--cores", "2")
    assert res.returncode == 0, res.stderr[-4000:]
    res = snakemake(work, "--report", str(work / "report.html"))
    assert res.returncode == 0, res.stderr[-4000:]
    return work


def test_every_phase_selects_a_winner_from_its_runs(demo):
    study = demo / STUDY
    plan = pd.read_csv(study / "plan.tsv", sep="\t")
    assert plan.groupby("phase").size().to_dict() == {"p1": 10, "p2": 4, "p3": 4}
    previous = None
    for phase in ("p1", "p2", "p3"):
        winner = json.loads((study / "phases" / phase / "winner.json").read_text())
        ranking = pd.read_csv(study / "phases" / phase / "ranking.tsv", sep="\t")
        assert winner["config_id"] == ranking["config_id"].iloc[0]
        assert winner["score"] == pytest.approx(ranking["score"].max())
        assert len(winner["seed_scores"]) == 2  # mean over both seeds, final epoch
        if previous:  # the incumbent competes in the next phase
            assert previous["config_id"] in set(ranking["config_id"])
            assert winner["score"] >= previous["score"]
        previous = winner


def test_summary_has_every_run_and_setting(demo):
    summary = pd.read_csv(demo / STUDY / "summary.tsv", sep="\t")
    settings = json.loads((demo / STUDY / "postprocess_settings.json").read_text())
    assert len(settings) == 18
    assert len(summary) == 18 * len(settings)
    assert set(summary["status"]) == {"done"}
    assert summary.groupby("run_id").size().eq(len(settings)).all()
    for col in ("average_mAP", "mAP@0.3", "mAP@0.7", "best_average_mAP", "gpu_hours"):
        assert summary[col].notna().all(), col
    assert summary["average_mAP"].between(0, 1).all()
    # mAP falls with a stricter tIoU; the best logged epoch is at least the final one
    assert (summary["mAP@0.3"] >= summary["mAP@0.7"]).all()
    default = summary[summary["is_default_setting"]]
    assert (default["best_average_mAP"] >= default["final_log_average_mAP"] - 1e-12).all()


def test_variants_give_different_maps(demo):
    summary = pd.read_csv(demo / STUDY / "summary.tsv", sep="\t")
    default = summary[summary["is_default_setting"]]
    per_config = default.groupby("config_id")["average_mAP"].mean()
    assert len(per_config) == 9
    assert per_config.round(6).nunique() == 9, per_config


def test_the_sweep_matches_the_logged_evaluation(demo):
    """The final epoch's evaluation in the training log (OpenTAD's Average-mAP line) and the sweep's
    default setting on the saved candidates are the same number: one evaluator, one NMS."""
    summary = pd.read_csv(demo / STUDY / "summary.tsv", sep="\t")
    default = summary[summary["is_default_setting"]]
    diff = (default["average_mAP"] - default["final_log_average_mAP"]).abs()
    assert (diff < 1e-4).all(), default[["run_id", "average_mAP", "final_log_average_mAP"]]


def test_first_screen_gains_have_intervals_over_seeds_and_videos(demo):
    stats_dir = demo / STUDY / "stats"
    head = json.loads((stats_dir / "headline.json").read_text())
    n = head["video_bootstrap"]["n_resamples"]
    gain = head["best"]["gain"]
    video = gain["video_ci"]
    assert video["over"] == "seeds and videos" and video["n_resamples"] == n
    assert video["n_pairs"] == 2 and video["n_videos"] > 10
    assert video["diff"] == pytest.approx(gain["diff"], abs=1e-6)  # same runs, all videos once
    assert video["ci"][0] <= video["diff"] <= video["ci"][1]
    axis_claims = [c for c in head["claims"] if c["claim"] not in ("Post-processing", "Ensembles")]
    assert axis_claims and all(c["video_ci"]["n_resamples"] == n for c in axis_claims)
    assert head["reported"]["control"]["minus_baseline"]["video_ci"]["over"] == "seeds and videos"
    rst = (stats_dir / "headline.rst").read_text()
    assert f"over seeds and videos ({n} resamples): 95% CI" in rst


def test_ensemble_starts_from_the_best_single_run(demo):
    """Chosen on half a (selection.crossfit, on by default): the best single run there first,
    then only what helps there."""
    ens = pd.read_csv(demo / STUDY / "ensemble" / "ensemble.tsv", sep="\t")
    summary = pd.read_csv(demo / STUDY / "summary.tsv", sep="\t")
    default = summary[summary["is_default_setting"]]
    assert set(ens["selected_on"]) == {"a"}
    assert ens["step"].iloc[0] == 0 and "," not in ens["members"].iloc[0]
    assert ens["a:average_mAP"].iloc[0] == pytest.approx(default["a:average_mAP"].max(), abs=1e-12)
    first = default.set_index("run_id").loc[ens["members"].iloc[0]]
    assert ens["average_mAP"].iloc[0] == pytest.approx(first["average_mAP"], abs=1e-12)
    assert (ens["best_single_average_mAP"] == ens["average_mAP"].iloc[0]).all()
    assert ens["a:average_mAP"].is_monotonic_increasing  # greedy adds only what helps


def test_crossfit_figures_on_the_first_screen(demo):
    study = demo / STUDY
    head = json.loads((study / "stats" / "headline.json").read_text())
    cf = head["crossfit"]
    assert cf["decisions"] == "half a"
    for key in ("best_config", "postprocess", "ensemble"):
        assert isinstance(cf[key]["honest"], float), key
        assert isinstance(cf[key]["optimistic"], float), key
    assert cf["best_config"]["optimistic"] == pytest.approx(head["best"]["mean"], abs=1e-6)
    assert cf["postprocess"]["optimistic"] == pytest.approx(head["postprocess"]["diff"], abs=1e-6)
    ens = pd.read_csv(study / "ensemble" / "ensemble.tsv", sep="\t")
    chosen = cf["ensemble"]["chosen_on_a"]
    assert chosen["members"] == ens["members"].iloc[-1].split(",")
    assert chosen["b"] == pytest.approx(ens["b:average_mAP"].iloc[-1] * 100, abs=1e-6)
    swap = cf["ensemble"]["chosen_on_b"]
    assert cf["ensemble"]["honest"] == pytest.approx((chosen["b"] + swap["a"]) / 2, abs=1e-5)
    for phase in ("p1", "p2", "p3"):  # phase winners: chosen on half a, the swap recorded
        winner = json.loads((study / "phases" / phase / "winner.json").read_text())
        assert winner["scored_on"] == "half a"
        assert winner["crossfit"]["chosen_on_a"]["config_id"] == winner["config_id"]
        assert {"a", "b", "all"} <= set(winner["crossfit"]["chosen_on_b"])
    rst = (study / "stats" / "headline.rst").read_text()
    for label in ("Best configuration, honest vs optimistic", "Ensemble, honest vs optimistic"):
        assert label in rst
    assert "decisions on half a" in rst


def test_staged_seeds_replayed_on_the_demo(demo):
    """Staged seeds on the demo's own scores (every seed trained): fewer trainings, the pruned
    arms with their single-seed score, and the same phase winners as the full grid."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_plan import replay

    cfg = json.loads((demo / STUDY / "study.json").read_text())
    phases = replay(cfg, sorted((demo / STUDY).glob("runs/*/*/seed=*/params.json")))
    assert [r["phase"] for r in phases] == ["p1", "p2", "p3"]  # no winner changed
    for r in phases:
        assert r["winner_staged"] == r["winner_full"], r
        assert r["staged"] == r["trainings"] - len(r["pruned"])  # 2 seeds: one pruned each
        assert all(isinstance(score, float) for score in r["pruned"].values())
    assert sum(r["staged"] for r in phases) < sum(r["trainings"] for r in phases) == 18


def test_rerun_has_nothing_to_do(demo):
    res = snakemake(demo, "-n", "--cores", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Nothing to be done" in res.stdout + res.stderr
    # the status checks minutes_per_epoch against the epochs the study measured; the plan, which
    # reads no results, does not
    check = ledger.epoch_check(json.loads((demo / STUDY / "study.json").read_text()), demo / STUDY)
    assert check is not None and check["measured"] > 0
    assert "resources.minutes_per_epoch" not in res.stdout + res.stderr
    cmd = [sys.executable, "-m", "tadsweep.report.status", str(demo / STUDY), "--no-queue"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    assert ("warning: resources.minutes_per_epoch" in res.stdout) == check["off"]


def test_the_ledger_in_summary_status_and_headline(demo):
    """Every train and detect job's attempt, timed by its own benchmark, beside the estimate."""
    study = demo / STUDY
    summary = pd.read_csv(study / "summary.tsv", sep="\t")
    runs = summary.drop_duplicates("run_id").set_index("run_id")
    assert (runs["attempts"] == 2).all() and (runs["failed_attempts"] == 0).all()
    for rid in runs.index:  # rundir's record of each attempt, beside the job's benchmark
        recs = [json.loads(x) for x in (study / "runs" / rid / "attempts.jsonl").open()]
        assert [(r["step"], r["outcome"]) for r in recs] == [("train", "ok"), ("detect", "ok")]
    # the job's wall time (process start included) and detection: more than train.json's
    assert (runs["gpu_hours_actual"] > runs["gpu_hours"]).all()
    plan = pd.read_csv(study / "plan.tsv", sep="\t").set_index("run_id")
    p1 = runs.index[runs["phase"] == "p1"]
    assert runs.loc[p1, "gpu_hours_estimate"].tolist() == pytest.approx(
        plan.loc[p1, "est_gpu_hours"].tolist(), abs=1e-3
    )
    table, info = status.study_status(study, demo / ".snakemake", jobs=None)
    assert info["gpu_hours_spent"] == pytest.approx(runs["gpu_hours_actual"].sum())
    assert info["gpu_hours_planned"] == pytest.approx(plan["est_gpu_hours"].sum())
    spend = json.loads((study / "stats" / "headline.json").read_text())["spend"]
    assert spend["spent"] == pytest.approx(info["gpu_hours_spent"])
    assert spend["line"].startswith(f"spent {ledger.hours(spend['spent'])} / planned ")
    assert ("no budget" in spend["line"]) == (spend["budget"] is None)
    assert spend["line"] in (study / "stats" / "headline.rst").read_text()


@pytest.mark.browser
def test_report_holds_every_plot_caption_and_the_headline(demo, tmp_path):
    html = demo / "report.html"
    text = html.read_text()
    for name in plots.PLOT_NAMES:
        assert re.search(rf"filename={name}\.png;base64,iVBORw0KGgo", text), name
    headline = json.loads((demo / STUDY / "stats" / "headline.json").read_text())
    dom = rendered_dom(html, tmp_path)
    landing = re.search(
        r'class="prose prose-sm max-w-lg"><div class="document">(.*?)</div>', dom, re.S
    )
    assert landing, "no workflow description on the first screen"
    first = landing.group(1)
    assert "Best configuration" in first and headline["best"]["config_id"] in first
    # configs/demo.yaml's reported figures, checked on the first screen
    reported = headline["reported"]
    assert reported["baseline"]["config_id"] == "p1/base" and reported["baseline"]["verdict"]
    assert reported["control"]["config_id"] == "p1/lora=off"
    assert "minus_baseline" in reported["control"]
    assert "Baseline check" in first and "Control arm" in first
    assert headline["spend"]["line"] in first  # the ledger: spent / planned / budget
    assert "honest vs optimistic" in first and "decisions on half a" in first
    # the doctor's data audit of the demo's own format (annotation, class map, features)
    findings = json.loads((demo / STUDY / "doctor" / "findings.json").read_text())
    assert [f["id"] for f in findings] == ["annotation"]  # sound synthetic data: nothing else
    assert "Baseline diagnosis" in first and "0 error(s), 0 warning(s)" in first
    assert headline["postprocess"]["described"].startswith("sigma ")
    for category in ("0. Headline", "1. Summary", "2. Figures"):
        assert category in dom
    img = screenshot(html, tmp_path / "demo-report.png", tmp_path)
    assert_not_blank(img)


def test_postprocess_and_ensemble_gains_have_intervals_over_videos(demo):
    """The two gains whose matches the sweep does not keep: the headline's best setting (re-applied
    to every run's candidates) and the chosen ensemble (written by the ensemble step)."""
    study = demo / STUDY
    head = json.loads((study / "stats" / "headline.json").read_text())
    n = head["video_bootstrap"]["n_resamples"]
    best = json.loads((study / "postprocess_best.json").read_text())
    pp, ens = head["postprocess"], head["ensemble"]
    assert best["setting"] == pp["setting"]
    rst = (study / "stats" / "headline.rst").read_text()
    gains = [(pp, pp["n_runs"])]
    if ens["n_members"] > 1:
        gains.append((ens, 1))
        assert ens["video_ci"]["diff"] == pytest.approx(ens["gain"], abs=1e-6)
    else:  # no ensemble beat the best run on half a: said so, not a gain of 0 in a 0-wide interval
        assert "video_ci" not in ens and ens["gain"] == 0.0
        assert "**Ensemble**: no ensemble beat the best single run on half a" in rst
    for gain, pairs in gains:
        video = gain["video_ci"]
        assert video["n_resamples"] == n and video["n_pairs"] == pairs
        assert video["ci"][0] <= video["diff"] <= video["ci"][1]
    assert pp["video_ci"]["over"] == "runs and videos"
    # all videos once: the evaluator's gains, from other files (summary.tsv, ensemble.tsv)
    assert pp["video_ci"]["diff"] == pytest.approx(pp["diff"], abs=1e-6)
    assert f"over runs and videos ({n} resamples): 95% CI" in rst
    assert rst.count(f"({n} resamples)") >= 4  # best, post-processing, claims (, ensemble)


def test_deleting_the_new_matches_files_retrains_nothing(demo, tmp_path):
    """They derive from candidates, settings and summary.tsv: a dry run after deleting them and
    the headline (else the up-to-date report needs none of them) plans post-processing,
    evaluation and the report only. The files are put back after."""
    study = demo / STUDY
    run = pd.read_csv(study / "summary.tsv", sep="\t")["run_id"].iloc[0]
    gone = [study / "runs" / run / "matches_best.npz", study / "ensemble" / "matches.npz"]
    gone += [study / "postprocess_best.json", *(study / "stats").glob("headline.*")]
    kept = [tmp_path / f"{k}" for k in range(len(gone))]
    for src, dst in zip(gone, kept):
        src.rename(dst)  # a rename keeps the file's mtime: nothing looks changed once back
    try:
        res = snakemake(demo, "-n", "--cores", "2")
    finally:
        for src, dst in zip(gone, kept):
            dst.rename(src)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = set(re.findall(r"^([a-z_]+)\s+\d+$", res.stdout + res.stderr, re.M)) - {"total"}
    assert {"postprocess_best", "best_matches", "ensemble", "stats"} <= jobs
    assert jobs <= {"postprocess_best", "best_matches", "ensemble", "stats", "headline", "plots",
                    "all"}, jobs  # fmt: skip
