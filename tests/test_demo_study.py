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

from tadsweep.report import plots

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


def test_ensemble_starts_from_the_best_single_run(demo):
    ens = pd.read_csv(demo / STUDY / "ensemble" / "ensemble.tsv", sep="\t")
    summary = pd.read_csv(demo / STUDY / "summary.tsv", sep="\t")
    best = summary[summary["is_default_setting"]]["average_mAP"].max()
    assert ens["step"].iloc[0] == 0 and "," not in ens["members"].iloc[0]
    assert ens["average_mAP"].iloc[0] == pytest.approx(best, abs=1e-12)
    assert (ens["best_single_average_mAP"] == ens["average_mAP"].iloc[0]).all()
    assert ens["average_mAP"].is_monotonic_increasing  # greedy adds only what helps


def test_rerun_has_nothing_to_do(demo):
    res = snakemake(demo, "-n", "--cores", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Nothing to be done" in res.stdout + res.stderr


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
    assert headline["postprocess"]["described"].startswith("sigma ")
    for category in ("0. Headline", "1. Summary", "2. Figures"):
        assert category in dom
    img = screenshot(html, tmp_path / "demo-report.png", tmp_path)
    assert_not_blank(img)
