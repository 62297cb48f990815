"""tadsweep.report.plots: every figure renders a real PNG, with the panels the data call for, and
degenerate inputs give a "not enough data" panel instead of an exception."""

import numpy as np
import pandas as pd
import pytest
import reportdata as R
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.image import imread
from matplotlib.text import Text

from tadsweep import cli
from tadsweep.report import plots, stats, tables

PNG = b"\x89PNG\r\n\x1a\n"
N_BOOT = 500


def configs(summary=None):
    """configs.tsv of the summary, as tadsweep.report.stats writes it."""
    return stats.config_table(R.study_summary() if summary is None else summary, N_BOOT)


def interval_bars(ax):
    """(x, low, high) of every error bar drawn on ax, rounded to 6 decimals."""
    bars = [seg for c in ax.containers if c.has_yerr for seg in c.lines[2][0].get_segments()]
    return {tuple(round(float(v), 6) for v in (s[0][0], s[0][1], s[1][1])) for s in bars}


def rounded(*values):
    return tuple(round(float(v), 6) for v in values)


def png_ok(path):
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 5000
    img = imread(path)
    assert img.ndim == 3 and img[..., :3].std() > 0.01  # not a blank canvas
    return img


def texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]


def is_empty_panel(fig):
    return len(fig.axes) == 1 and any(t.startswith("not enough data") for t in texts(fig))


def study_curves():
    frames = [
        R.curves(seed=s).assign(run_id=f"p1/base/seed={s}", config_id="p1/base") for s in (1, 2)
    ]
    frames.append(R.curves(seed=3).assign(run_id="p1/lora=A/seed=1", config_id="p1/lora=A"))
    return pd.concat(frames, ignore_index=True)


def test_axis_effects_panels_points_and_intervals(tmp_path):
    out = tmp_path / "a.png"
    fig = plots.axis_effects(R.study_summary(), configs(), out, "p1/base")
    png_ok(out)
    # lora, schedule, augment vary among finished runs; structure only in a failed run
    assert [ax.get_title() for ax in fig.axes] == ["lora", "schedule", "augment"]
    lora = fig.axes[0]
    # one point per seed and variant (2 variants x 3 seeds), from the one-factor slice
    n_points = sum(len(c.get_offsets()) for c in lora.collections if isinstance(c, PathCollection))
    assert n_points == 6
    assert [t.get_text() for t in lora.get_xticklabels()] == ["v1", "A"]  # baseline first
    assert fig.axes[-1].get_legend().get_title().get_text() == "seed"  # one legend, last panel
    assert lora.get_legend() is None


def test_axis_effects_pools_when_no_one_factor_slice(tmp_path):
    rows = R.rows_for("p1/base", {}, [0.5, 0.51])
    rows += R.rows_for("p1/lora=A+schedule=v2", {"lora": "A", "schedule": "v2"}, [0.55, 0.56])
    s = pd.DataFrame(rows)
    fig = plots.axis_effects(s, configs(s), tmp_path / "a.png", "p1/base")
    assert len(fig.axes) == 2 and all("pooled" in ax.get_title() for ax in fig.axes)


def test_heatmaps_one_panel_per_axis_pair(tmp_path):
    out = tmp_path / "h.png"
    fig = plots.heatmaps(configs(), out)
    png_ok(out)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["lora x schedule", "lora x augment", "schedule x augment"]
    first = next(ax for ax in fig.axes if ax.get_title() == "lora x schedule")
    # 2 x 2 cells annotated with the mean; lora=v1 x schedule=v1 pools base and augment=none
    labels = sorted(t.get_text() for t in first.texts)
    assert labels == sorted(["54.0", "55.0", "48.5", "51.3"])


def test_map_vs_tiou_one_line_per_configuration(tmp_path):
    out = tmp_path / "t.png"
    fig = plots.map_vs_tiou(configs(), out)
    png_ok(out)
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 5]
    assert len(lines) == 5  # five finished configurations
    assert ax.get_xticks() == pytest.approx([0.3, 0.4, 0.5, 0.6, 0.7])


def test_training_curves_overview_and_per_run(tmp_path):
    out = tmp_path / "c.png"
    fig = plots.training_curves(study_curves(), out)
    png_ok(out)
    loss, lr, evals = fig.axes
    assert len(loss.get_lines()) == 3  # one line per run
    assert lr.get_yscale() == "log"
    assert len([ln for ln in lr.get_lines() if len(ln.get_xdata()) == 12]) == 6  # 2 LRs x 3 runs
    # evaluations only where OpenTAD evaluates (epochs 5, 7, 9, 11 here)
    assert sorted(set(evals.get_lines()[0].get_xdata())) == [5, 7, 9, 11]
    one = plots.run_curves(R.curves(), tmp_path / "r.png", "p1/base/seed=1")
    png_ok(tmp_path / "r.png")
    assert len(one.axes) == 3 and "p1/base/seed=1" in one._suptitle.get_text()


def test_pp_heatmap_mean_gain_over_default(tmp_path):
    out = tmp_path / "p.png"
    fig = plots.pp_heatmap(R.study_summary(), out)
    png_ok(out)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "sigma" and ax.get_ylabel() == "max_seg_num"
    # voting_thresh held at the default's 0.7; gains per the fixture: sigma 0.5 +1, 2500 +0.2
    assert sorted(t.get_text() for t in ax.texts) == sorted(["+1.00", "+0.00", "+1.20", "+0.20"])
    assert "held: voting_thresh=0.7" in ax.get_title()


def test_ensemble_gain_marks_the_best_single_run(tmp_path):
    out = tmp_path / "e.png"
    fig = plots.ensemble_gain(R.ensemble_table(), stats.ensemble_result(R.ensemble_table()), out)
    png_ok(out)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["+3.00 points"]
    flat = [ln for ln in ax.get_lines() if np.allclose(ln.get_ydata(), 56.0)]
    assert flat  # the best-single-run reference line


def test_cost_frontier_marks_the_pareto_set(tmp_path):
    out = tmp_path / "f.png"
    ens = stats.ensemble_result(R.ensemble_table())
    fig = plots.cost_frontier(configs(), out, R.study_summary(), ens)
    png_ok(out)
    labels = sorted(t.get_text() for t in fig.axes[0].texts)
    # schedule=v2 (2 h, 51.3) and augment=none (1 h, 46) are dominated; ensemble members'
    # hours: 2.4 + 1.2 + 1.0
    assert labels == sorted(["p1/base", "p1/lora=A", "p1/lora=A+schedule=v2", "ensemble"])


def test_pareto_mask_known_answer():
    cost = [1, 2, 2, 3, np.nan, 1]
    value = [5, 6, 4, 6, 9, 5]
    # (2,4) dominated by (1,5); (3,6) by (2,6); the NaN point is never on the frontier;
    # the two equal (1,5) points do not dominate each other
    assert list(plots.pareto_mask(cost, value)) == [True, True, False, False, False, True]


DEGENERATE = {
    "no rows": lambda: R.study_summary().iloc[:0],
    "all failed": lambda: pd.DataFrame(R.rows_for("p1/base", {}, [None, None], status="failed")),
    "one seed": lambda: pd.DataFrame(R.rows_for("p1/base", {}, [0.5])),
    "NaN seed": lambda: pd.DataFrame(R.rows_for("p1/base", {}, [0.5, None])),
    "one setting": lambda: pd.DataFrame(
        R.rows_for("p1/base", {}, [0.5, 0.6], grid=[dict(R.DEFAULT, setting="default")])
    ),
}


@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_degenerate_inputs_render_a_not_enough_data_panel(tmp_path, case):
    s = DEGENERATE[case]()
    figs = {
        "axis_effects": plots.axis_effects(s, configs(s), tmp_path / "a.png", "p1/base"),
        "heatmaps": plots.heatmaps(configs(s), tmp_path / "h.png"),
        "pp_heatmap": plots.pp_heatmap(s, tmp_path / "p.png"),
        "cost_frontier": plots.cost_frontier(configs(s), tmp_path / "f.png", s),
        "map_vs_tiou": plots.map_vs_tiou(configs(s), tmp_path / "t.png"),
    }
    for name in ("axis_effects", "heatmaps"):
        assert is_empty_panel(figs[name]), name  # one variant per axis, or no finished run
    # one run with a full post-processing grid is enough for the sweep heatmap
    assert is_empty_panel(figs["pp_heatmap"]) == (case in ("no rows", "all failed", "one setting"))
    if case in ("no rows", "all failed"):
        assert is_empty_panel(figs["cost_frontier"]) and is_empty_panel(figs["map_vs_tiou"])
    else:  # one configuration still has a mean and a cost
        assert [t.get_text() for t in figs["cost_frontier"].axes[0].texts] == ["p1/base"]
    for f in tmp_path.glob("*.png"):
        assert f.read_bytes()[:8] == PNG


def test_degenerate_curves_and_ensemble(tmp_path):
    assert is_empty_panel(plots.training_curves(pd.DataFrame(), tmp_path / "c.png"))
    assert is_empty_panel(plots.ensemble_gain(None, None, tmp_path / "e.png"))
    nan_ens = R.ensemble_table().assign(average_mAP=np.nan)
    assert is_empty_panel(plots.ensemble_gain(nan_ens, None, tmp_path / "e2.png"))
    # no evaluation yet and a zero LR: those panels say so, the loss panel still draws
    c = R.curves().assign(run_id="p1/base/seed=1", average_mAP=np.nan, lr_det=0.0, lr_backbone=0.0)
    fig = plots.training_curves(c, tmp_path / "c2.png")
    assert len(fig.axes[0].get_lines()) == 1
    assert any("not enough data" in t.get_text() for t in fig.axes[1].texts)
    assert any("not enough data" in t.get_text() for t in fig.axes[2].texts)


def test_rendering_is_deterministic(tmp_path):
    s, e = R.study_summary(), R.ensemble_table()
    head = stats.analyze(s, "p1/base", ensemble=e, n_boot=N_BOOT).headline
    for d in ("one", "two"):
        plots.render_all(tmp_path / d, s, configs(s), head, study_curves(), e)
    names = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.png"))
    assert len(names) == len(plots.PLOT_NAMES) + 3  # plus one curves figure per run
    for n in names:
        assert (tmp_path / "one" / n).read_bytes() == (tmp_path / "two" / n).read_bytes(), n


def test_cli_renders_the_files_it_is_given(tmp_path):
    summary, study_json = tmp_path / "summary.tsv", tmp_path / "study.json"
    R.study_summary().to_csv(summary, sep="\t", index=False)
    study_json.write_text('{"baseline_config_id": "p1/base"}')
    ensemble = tmp_path / "ensemble.tsv"
    R.ensemble_table().to_csv(ensemble, sep="\t", index=False)
    argv = [str(summary), "--study-json", str(study_json), "--ensemble", str(ensemble)]
    assert stats.main([*argv, "--n-boot", str(N_BOOT), "--out-dir", str(tmp_path / "stats")]) == 0
    runs = ["p1/base/seed=1", "p1/lora=A+schedule=v2/seed=2"]
    curves = [tmp_path / f"curves{i}.tsv" for i in range(len(runs))]
    for path in curves:
        R.curves().to_csv(path, sep="\t", index=False)
    (tmp_path / "runs" / "stray" / "x" / "seed=9").mkdir(parents=True)  # never read
    out = tmp_path / "plots"
    argv = ["--summary", str(summary), "--out-dir", str(out)]
    argv += ["--configs", str(tmp_path / "stats" / "configs.tsv")]
    argv += ["--headline", str(tmp_path / "stats" / "headline.json")]
    argv += ["--ensemble", str(ensemble), "--curves", *map(str, curves), "--runs", *runs]
    assert plots.main(argv) == 0
    for name in plots.PLOT_NAMES:
        png_ok(out / f"{name}.png")
    assert sorted(p.name for p in (out / "curves").iterdir()) == [
        "p1__base__seed=1.png",
        "p1__lora=A+schedule=v2__seed=2.png",
    ]
    # the figures show the data, not the "not enough data" panel of an empty input
    empty = tmp_path / "empty"
    plots.render_all(empty, None, per_run=False)
    for name in plots.PLOT_NAMES:
        assert (out / f"{name}.png").read_bytes() != (empty / f"{name}.png").read_bytes(), name


def test_cli_refuses_a_missing_summary_in_one_line(tmp_path):
    argv = ["--summary", str(tmp_path / "nope.tsv"), "--configs", str(tmp_path / "c.tsv")]
    argv += ["--headline", str(tmp_path / "h.json")]
    assert cli.status(plots.main, argv + ["--out-dir", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_figures_draw_the_tables_intervals(tmp_path):
    """Each interval drawn is configs.tsv's, not one computed again: moving the table's interval
    moves the figure's."""
    s = R.study_summary()
    for shift in (0.0, 1.5):  # wider than the data give: the figure follows the table
        cfg = configs(s)
        cfg["ci_high"] += shift
        lows = ["ci_low", *[f"ci_low_mAP@{t}" for t in R.TIOUS]]
        cfg[lows] -= shift
        table = cfg.set_index("config_id")
        lora = plots.axis_effects(s, cfg, tmp_path / "a.png", "p1/base").axes[0]
        # x 0: lora v1 (p1/base), x 1: lora A (p1/lora=A)
        want = {rounded(x, *table.loc[cid, ["ci_low", "ci_high"]]) for x, cid in enumerate(
            ("p1/base", "p1/lora=A"))}  # fmt: skip
        assert interval_bars(lora) == want
        ax = plots.cost_frontier(cfg, tmp_path / "f.png", s).axes[0]
        cols = ["gpu_hours_per_run", "ci_low", "ci_high"]
        assert interval_bars(ax) == {rounded(*row) for row in cfg[cols].to_numpy()}
        ax = plots.map_vs_tiou(cfg, tmp_path / "t.png").axes[0]
        bands = [c for c in ax.collections if len(c.get_paths())]
        assert len(bands) == len(cfg)
        for band, (cid, row) in zip(bands, table.iterrows(), strict=True):
            ys = band.get_paths()[0].vertices[:, 1]
            for t in R.TIOUS:  # the band's edges are the table's bounds at every threshold
                assert min(abs(ys - row[f"ci_low_mAP@{t}"])) < 1e-9, (cid, t)
                assert min(abs(ys - row[f"ci_high_mAP@{t}"])) < 1e-9, (cid, t)


def test_cost_frontier_labels_do_not_overlap(tmp_path):
    """Twelve configurations on the frontier, ten of them almost equal in cost and mAP (labels
    at a fixed offset would overlap 17 times here): every label stays readable."""
    ids = [f"p{k // 4 + 1}/lora=A+schedule=v{k}+augment=strong" for k in range(12)]
    cfg = pd.DataFrame(
        {
            "config_id": ids,
            "gpu_hours_per_run": np.r_[0.5, 1.0 + 0.01 * np.arange(10), 3.0],
            "mean": np.r_[45.0, 50.0 + 0.2 * np.arange(10), 56.0],
            "ci_low": np.nan,
            "ci_high": np.nan,
            "n_seeds": 1,
        }
    )
    fig = plots.cost_frontier(cfg, tmp_path / "f.png")
    png_ok(tmp_path / "f.png")
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == sorted(ids)  # all on the frontier
    renderer = FigureCanvasAgg(fig).get_renderer()  # as saved: no layout step after the labels
    boxes = []
    for t in ax.texts:  # each label's text (a moved one has a leader line to its point)
        t.update_positions(renderer)
        boxes.append(Text.get_window_extent(t, renderer))
    boxes.append(ax.get_legend().get_window_extent(renderer))
    for i, a in enumerate(boxes):
        assert not any(a.overlaps(b) for b in boxes[i + 1 :]), ax.texts[i].get_text()
    inside = ax.get_window_extent(renderer)
    assert all(inside.contains(b.x0, b.y0) and inside.contains(b.x1, b.y1) for b in boxes[:-1])


def test_a_one_member_ensemble_says_no_ensemble_won(tmp_path):
    one = R.ensemble_table(best_single=0.56, steps=(0.56,)).assign(
        selected_on="a", **{"a:average_mAP": 0.57}
    )
    res = stats.ensemble_result(one)
    fig = plots.ensemble_gain(one, res, tmp_path / "e.png")
    assert [t.get_text() for t in fig.axes[0].texts] == [
        "no ensemble beat the best single run on half a"
    ]
    # no "ensemble" point beside the run it is on the cost frontier either
    fig = plots.cost_frontier(configs(), tmp_path / "f.png", R.study_summary(), res)
    assert "ensemble" not in [t.get_text() for t in fig.axes[0].texts]


@pytest.mark.parametrize("column", ["step", "members", "best_single_average_mAP"])
def test_an_ensemble_table_without_a_column_the_report_reads_is_no_ensemble(tmp_path, column):
    path = tmp_path / "ensemble.tsv"
    R.ensemble_table().to_csv(path, sep="\t", index=False)
    assert tables.read_ensemble(path) is not None
    R.ensemble_table().drop(columns=column).to_csv(path, sep="\t", index=False)
    assert tables.read_ensemble(path) is None


def test_figures_never_resample(tmp_path, monkeypatch):
    """No figure bootstraps: neither seaborn's estimators nor the report's one bootstrap run."""
    s, e = R.study_summary(), R.ensemble_table()
    cfg, head = configs(s), stats.analyze(s, "p1/base", ensemble=e, n_boot=N_BOOT).headline

    def refuse(*args, **kwargs):
        raise AssertionError("a figure resampled")

    monkeypatch.setattr("seaborn._statistics.bootstrap", refuse)
    monkeypatch.setattr("seaborn.algorithms.bootstrap", refuse)
    monkeypatch.setattr("tadsweep.report.bootstrap.interval", refuse)
    written = plots.render_all(tmp_path, s, cfg, head, study_curves(), e)
    assert len(written) == len(plots.PLOT_NAMES) + 3
