"""The report's figures (seaborn on matplotlib's Agg backend, PNG): each writes one PNG and returns
its closed Figure (tests count its artists). Degenerate inputs give a "not enough data" panel, not
an exception. Values are average-mAP points (%); every interval is that of tadsweep.report.stats'
tables (configs.tsv, headline.json): nothing here resamples. What no table holds (each run's
points, the greedy steps, the sweep's gains per run) comes from summary.tsv and ensemble.tsv.
"""

import argparse
import itertools
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from tadsweep import cli, readers  # noqa: E402
from tadsweep.atomic import atomic_path  # noqa: E402
from tadsweep.detections.evaluate import tiou_columns  # noqa: E402
from tadsweep.errors import InputError  # noqa: E402
from tadsweep.report import PLOT_NAMES, stats, tables  # noqa: E402

AXES = tables.AXES
CURVES_DIR = "curves"  # one PNG per run: <phase>__<arm>__seed=<n>.png
DPI = 100
OUTSIDE = {"bbox_to_anchor": (1.02, 1), "loc": "upper left"}  # a legend right of its axes


def _subplots(*args, **kwargs):
    sns.set_theme(style="whitegrid", context="notebook")  # before the figure: it takes the style
    return plt.subplots(*args, **kwargs)


def _save(fig, out) -> plt.Figure:
    with atomic_path(out) as tmp:
        # No "Software" text chunk: the bytes then depend only on the data, not the library version.
        fig.savefig(tmp, dpi=DPI, format="png", metadata={"Software": None})
    plt.close(fig)
    return fig


def no_data(ax, reason: str) -> None:
    """Mark a panel as empty, saying why."""
    ax.set_axis_off()
    ax.text(
        0.5, 0.5, f"not enough data\n{reason}", ha="center", va="center", fontsize=12, wrap=True
    )


def _empty_figure(out, title: str, reason: str) -> plt.Figure:
    fig, ax = _subplots(figsize=(6, 4))
    fig.suptitle(title)
    no_data(ax, reason)
    return _save(fig, out)


def _grid(n: int, title: str, size=(4.8, 4.0)):
    """n panels (n >= 1), three a row."""
    ncols, nrows = min(3, n), math.ceil(n / 3)
    figsize = (size[0] * ncols, size[1] * nrows)
    fig, axes = _subplots(nrows, ncols, figsize=figsize, squeeze=False)
    fig.suptitle(title)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        fig.delaxes(ax)
    return fig, flat[:n]


def _configs(configs: pd.DataFrame | None) -> pd.DataFrame:
    """configs.tsv's rows; an empty table with its columns when there is none."""
    if configs is not None and not configs.empty:
        return configs
    cols = ["config_id", "n_seeds", "mean", "ci_low", "ci_high", "gpu_hours_per_run"]
    return pd.DataFrame(columns=[*cols, *[f"v_{a}" for a in AXES]])


def _interval(ax, x: float, row) -> None:
    """A configuration's mean and 95% interval as configs.tsv states them (none: the mean)."""
    m, lo, hi = row["mean"], row["ci_low"], row["ci_high"]
    yerr = [[m - lo], [hi - m]] if np.isfinite([lo, hi]).all() else None
    ax.errorbar([x], [m], yerr=yerr, fmt="D", color="black", capsize=6, lw=1.5, zorder=5)


def axis_effects(
    summary: pd.DataFrame, configs: pd.DataFrame | None, out, baseline_config_id=None
) -> plt.Figure:
    """One panel per axis with two or more variants: each seed's run as a point, each
    configuration's mean and interval (configs.tsv) in black. Configurations equal to the baseline
    on the other axes are used when they show two variants (a one-factor slice); otherwise all
    runs, pooled (marked), a configuration's interval beside the next one's."""
    title = "Effect of each axis (average mAP, default post-processing)"
    rows = pd.DataFrame()  # finished runs at the default setting, in points
    if summary is not None and not summary.empty:
        rows = tables.done_default(tables.check_summary(summary))
        rows = rows.assign(value=rows[tables.METRIC] * 100.0).dropna(subset=["value"])
    if rows.empty:
        return _empty_figure(out, title, "no finished run")
    base = rows[rows["config_id"] == baseline_config_id]
    base_v = base.iloc[0][[f"v_{a}" for a in AXES]].to_dict() if len(base) else {}
    panels = []
    for axis in AXES:
        col = f"v_{axis}"
        if rows[col].nunique() < 2:
            continue
        sub, pooled = rows, True
        if base_v:
            others = [f"v_{a}" for a in AXES if a != axis]
            mask = (rows[others] == pd.Series(base_v)[others]).all(axis=1)
            if rows[mask][col].nunique() >= 2:
                sub, pooled = rows[mask], False
        panels.append((axis, sub, pooled))
    if not panels:
        return _empty_figure(out, title, "every axis has a single variant")
    table = _configs(configs).set_index("config_id")
    fig, axs = _grid(len(panels), title)
    for ax, (axis, sub, pooled) in zip(axs, panels, strict=True):
        col = f"v_{axis}"
        first, vals = base_v.get(col, ""), sorted({str(v) for v in sub[col]})
        order = ([first] if first in vals else []) + [v for v in vals if v != first]
        data = sub.assign(seed=sub["seed"].astype(str), variant=sub[col].astype(str))
        seeds = sorted(data["seed"].unique(), key=lambda s: (len(s), s))
        # no jitter: it draws from the global RNG, not reproducible
        kw = {"dodge": True, "jitter": False, "size": 6, "alpha": 0.8, "ax": ax}
        sns.stripplot(data, x="variant", y="value", hue="seed", order=order, hue_order=seeds, **kw)
        for i, v in enumerate(order):
            ids = sorted(set(data.loc[data["variant"] == v, "config_id"]) & set(table.index))
            step = min(0.15, 0.6 / max(len(ids) - 1, 1))  # several only when pooled: side by side
            for k, cid in enumerate(ids):
                _interval(ax, i + step * (k - (len(ids) - 1) / 2), table.loc[cid])
        if baseline_config_id in table.index:
            ax.axhline(table.loc[baseline_config_id, "mean"], ls="--", color="grey", lw=1)
        pooled_s = " (all runs pooled: other axes vary)" if pooled else ""
        ax.set(title=f"{axis}{pooled_s}", xlabel=f"{axis} variant", ylabel="average mAP (%)")
        if ax.get_legend() is not None and ax is not axs[-1]:
            ax.get_legend().remove()  # one seed legend, outside the last panel, hides no points
        elif ax.get_legend() is not None:
            sns.move_legend(ax, **OUTSIDE, fontsize=8, title="seed")
    fig.tight_layout()
    return _save(fig, out)


def heatmaps(configs: pd.DataFrame | None, out) -> plt.Figure:
    """Mean average mAP for every pair of axes that both vary: configs.tsv's means, pooled over
    the other axes weighted by seeds (the mean over the runs of the cell)."""
    title = "Two-axis heatmaps (mean average mAP %, pooled over other axes and seeds)"
    cfg = _configs(configs)
    cfg = cfg[np.isfinite(cfg["mean"].astype(float))]
    varying = [a for a in AXES if cfg[f"v_{a}"].nunique() >= 2]
    pairs = list(itertools.combinations(varying, 2))
    if not pairs:
        return _empty_figure(out, title, "fewer than two axes have two or more variants")
    cfg = cfg.assign(points=cfg["mean"] * cfg["n_seeds"])
    fig, axs = _grid(len(pairs), title, size=(5.0, 4.2))
    for ax, (a, b) in zip(axs, pairs, strict=True):
        cells = cfg.groupby([f"v_{a}", f"v_{b}"])[["points", "n_seeds"]].sum()
        table = (cells["points"] / cells["n_seeds"]).unstack()
        sns.heatmap(
            table, annot=True, fmt=".1f", cmap="viridis", ax=ax, cbar_kws={"label": "avg mAP %"}
        )
        ax.set(xlabel=b, ylabel=a, title=f"{a} x {b}")
    fig.tight_layout()
    return _save(fig, out)


def map_vs_tiou(configs: pd.DataFrame | None, out) -> plt.Figure:
    """mAP at each tIoU threshold per configuration: configs.tsv's mean over seeds and its 95%
    interval (band)."""
    title = "mAP against tIoU (default post-processing)"
    cfg = _configs(configs)
    cols = tiou_columns([c.removeprefix("mean_") for c in cfg.columns])
    cfg = cfg[cfg[[f"mean_{c}" for c in cols]].notna().any(axis=1)] if cols else cfg.iloc[:0]
    if cfg.empty:
        return _empty_figure(out, title, "no finished run with per-tIoU mAP")
    x = [float(c.removeprefix("mAP@")) for c in cols]
    fig, ax = _subplots(figsize=(8 + (3 if len(cfg) > 6 else 0), 5))
    for (_, row), color in zip(cfg.iterrows(), sns.color_palette(n_colors=len(cfg))):
        y = [row[f"mean_{c}"] for c in cols]
        ax.plot(x, y, marker="o", color=color, label=row["config_id"])
        lo, hi = ([row[f"{k}_{c}"] for c in cols] for k in ("ci_low", "ci_high"))
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)  # NaN (one seed): no band
    ax.set(title=title, xlabel="tIoU", ylabel="mAP (%)", xticks=x)
    ax.legend(title="configuration", fontsize=8, **OUTSIDE)
    fig.tight_layout()
    return _save(fig, out)


def training_curves(curves: pd.DataFrame, out) -> plt.Figure:
    """All runs: loss, LR and evaluation mAP by epoch, one line per run, coloured by configuration.
    `curves` is the curves.tsv rows of every run with `run_id` and `config_id` columns added."""
    title = "Training curves (all runs; colour = configuration)"
    return _curves(curves, out, title, "no curves.tsv", (18, 4.8), "config_id", "run_id")


def run_curves(curves: pd.DataFrame, out, title: str) -> plt.Figure:
    """One run's loss, LR and evaluation mAP by epoch."""
    return _curves(curves, out, f"Training curves: {title}", "no curves.tsv rows", (16, 4.4))


def _curves(curves, out, title: str, reason: str, figsize, hue=None, units=None) -> plt.Figure:
    if curves is None or curves.empty or "epoch" not in curves:
        return _empty_figure(out, title, reason)
    if hue == "config_id" and hue not in curves:  # a run's configuration: its id less the seed
        curves = curves.assign(config_id=curves["run_id"].str.rsplit("/", n=1).str[0])
    fig, axs = _subplots(1, 3, figsize=figsize)
    fig.suptitle(title)
    loss = "loss_mean" if "loss_mean" in curves and curves["loss_mean"].notna().any() else "loss"
    # the data as logged, never an estimate with a bootstrap band (statistics are stats' job)
    kw = {"hue": hue, "units": units, "estimator": None}
    specs = [
        (axs[0], loss, "training loss" + (" (epoch mean)" if loss == "loss_mean" else "")),
        (axs[2], "average_mAP", "evaluation average mAP (%)"),
    ]
    for ax, col, label in specs:
        d = curves.dropna(subset=[col]) if col in curves else curves.iloc[:0]
        if col == "average_mAP" and not d.empty:
            d = d.assign(average_mAP=d["average_mAP"] * 100.0)
        if d.empty:
            no_data(ax, f"no {label}")
            continue
        marker = "o" if col == "average_mAP" else None
        sns.lineplot(d, x="epoch", y=col, marker=marker, legend=False, ax=ax, **kw)
        ax.set(ylabel=label, title=label)
    _lr_panel(axs[1], curves, kw)
    fig.tight_layout()
    return _save(fig, out)


def _lr_panel(ax, data: pd.DataFrame, kw: dict) -> None:
    lr_cols = [c for c in ("lr_backbone", "lr_det") if c in data and data[c].notna().any()]
    if not lr_cols:
        no_data(ax, "no learning rate")
        return
    ids = [c for c in ("epoch", kw["hue"], kw["units"]) if c]
    long = data.melt(id_vars=ids, value_vars=lr_cols, var_name="group").dropna(subset=["value"])
    long = long[long["value"] > 0]
    if long.empty:
        no_data(ax, "learning rate is zero")
        return
    sns.lineplot(long, x="epoch", y="value", style="group", ax=ax, legend="brief", **kw)
    ax.set(yscale="log", ylabel="learning rate")
    ax.set_title("learning rate (backbone adapters/LoRA, detector)")
    if ax.get_legend() is not None:
        ax.legend(fontsize=7, **OUTSIDE)


def pp_heatmap(summary: pd.DataFrame, out) -> plt.Figure:
    """Mean gain over the default setting (paired per run, points) on a grid of two soft-NMS knobs,
    the other knobs held at their default values. Falls back to the two knobs with most values."""
    title = "Post-processing sweep: mean gain over the default setting (points)"
    if summary is None or summary.empty:
        return _empty_figure(out, title, "no finished run")
    s = tables.check_summary(summary)
    s = s[(s["status"] == "done") & s[tables.METRIC].notna()]
    params = [p for p in stats.PP_PARAMS if p in s.columns]
    default = s[s["is_default_setting"]]
    if default.empty or not params:
        return _empty_figure(out, title, "no default-setting rows")
    dvals = default.iloc[0][params].to_dict()
    varying = [p for p in params if s[p].nunique() >= 2]
    if not varying:
        return _empty_figure(out, title, "only one post-processing setting")
    x, y = "sigma", "max_seg_num"
    if not (x in varying and y in varying):
        ranked = sorted(varying, key=lambda p: (-s[p].nunique(), params.index(p)))
        x, y = (ranked + [None])[:2]
    sub = s
    for p in params:
        if p not in (x, y):  # held at the default (None/NaN included: "keep all")
            held = sub[p].isna() if pd.isna(dvals[p]) else sub[p] == dvals[p]
            sub = sub[held]
    base = default.groupby("run_id")[tables.METRIC].mean()
    sub = sub[sub["run_id"].isin(base.index)]
    if sub.empty:
        return _empty_figure(out, title, "no setting shares the default's other knobs")
    gain = (sub[tables.METRIC] - sub["run_id"].map(base)) * 100.0
    sub = sub.assign(gain=gain, _one="")
    table = sub.pivot_table(index=y or "_one", columns=x, values="gain", aggfunc="mean")
    n_runs = sub["run_id"].nunique()
    fig, ax = _subplots(figsize=(1.3 * table.shape[1] + 3, 0.8 * table.shape[0] + 2.5))
    lim = float(np.nanmax(np.abs(table.to_numpy()))) if np.isfinite(table.to_numpy()).any() else 1
    lim = max(lim, 1e-6)  # a symmetric scale around no gain
    kw = {"annot": True, "fmt": "+.2f", "cmap": "vlag", "center": 0.0, "vmin": -lim, "vmax": lim}
    sns.heatmap(table, ax=ax, cbar_kws={"label": "gain (points)"}, **kw)
    held = ", ".join(f"{p}={dvals[p]}" for p in params if p not in (x, y) and p in varying)
    ax.set_title(f"{title}\n{n_runs} run(s)" + (f"; held: {held}" if held else ""), fontsize=10)
    ax.set(xlabel=x, ylabel=y or "")
    fig.tight_layout()
    return _save(fig, out)


def ensemble_gain(ensemble: pd.DataFrame | None, result: dict | None, out) -> plt.Figure:
    """Greedy forward selection: average mAP by number of members (ensemble.tsv), against the
    best single run; the gain annotated is headline.json's (``result``)."""
    title = "Ensemble against the best single run"
    if ensemble is None or ensemble.empty or tables.METRIC not in ensemble:
        return _empty_figure(out, title, "no ensemble results")
    e = ensemble.assign(value=pd.to_numeric(ensemble[tables.METRIC], errors="coerce") * 100.0)
    e = e.dropna(subset=["value"])
    if e.empty:
        return _empty_figure(out, title, "ensemble average mAP missing")
    fig, ax = _subplots(figsize=(7, 4.5))
    ax.plot(e["step"], e["value"], marker="o", label="ensemble")
    single = pd.to_numeric(e.get("best_single_average_mAP"), errors="coerce").dropna()
    if not single.empty:
        ax.axhline(single.iloc[0] * 100.0, ls="--", color="grey", label="best single run")
    if result and result.get("step") is not None and result.get("gain") is not None:
        text = f"{result['gain']:+.2f} points"
        if result["n_members"] == 1:
            text = f"no ensemble beat the best single run on {result['chosen_on']}"
        xy = (result["step"], result["average_mAP"])
        ax.annotate(text, xy, textcoords="offset points", xytext=(0, 8), ha="center")
    ax.margins(y=0.2)  # room for the annotation under the title
    ax.set(xlabel="members (greedy forward selection step)", ylabel="average mAP (%)", title=title)
    ax.set_xticks(sorted(e["step"].unique()))
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _save(fig, out)


def pareto_mask(cost, value) -> np.ndarray:
    """True where no other point is at most as costly and at least as good, and better in one."""
    cost, value = np.asarray(cost, float), np.asarray(value, float)
    ok = np.isfinite(cost) & np.isfinite(value)
    c, v = cost[:, None], value[:, None]  # row i, column j: does point j dominate point i?
    dominated = ok & (cost <= c) & (value >= v) & ((cost < c) | (value > v))
    return ok & ~dominated.any(axis=1)


def _ensemble_point(result: dict | None, summary) -> dict | None:
    """The ensemble at its members' training GPU-hours (summary.tsv), when it has several."""
    if not result or result["n_members"] < 2 or summary is None or "gpu_hours" not in summary:
        return None
    hours = summary.drop_duplicates("run_id").set_index("run_id")["gpu_hours"]
    members = result["members"].split(",")  # as tadsweep.detections.ensemble joins them
    if not all(m in hours.index for m in members):
        return None
    cost = float(pd.to_numeric(hours[members]).sum())
    return {"config_id": "ensemble", "gpu_hours_per_run": cost, "mean": result["average_mAP"]}


def place_labels(ax, points, labels, fontsize=8) -> None:
    """Label each point (data coordinates) where its text overlaps no earlier label and no
    legend, inside the axes: the first free slot right, then left, of the point, 0, +1, -1, +2,
    ... lines up (a leader line joins a moved label to its point). Call it after the layout step:
    it measures the texts in pixels."""
    renderer = ax.figure.canvas.get_renderer()
    legend = ax.get_legend()
    taken = [legend.get_window_extent(renderer)] if legend is not None else []
    inside = ax.get_window_extent(renderer)
    line = fontsize * 1.5  # points: a line of text and a gap
    n = int(inside.height / (line * ax.figure.dpi / 72)) + 1  # the axes' height, in lines
    slots = [(dx, k * line) for k in sorted(range(-n, n + 1), key=abs) for dx in (5, -5)]

    def label(text, xy, dx, dy):
        arrow = {"arrowstyle": "-", "color": "grey", "lw": 0.6} if dy else None
        kw = {"textcoords": "offset points", "ha": "left" if dx > 0 else "right"}
        ann = ax.annotate(text, xy, (dx, dy + 2), fontsize=fontsize, arrowprops=arrow, **kw)
        ann.update_positions(renderer)
        return ann, Text.get_window_extent(ann, renderer)  # the text's box, not its leader

    for xy, text in zip(points, labels):
        for dx, dy in slots:
            ann, box = label(text, xy, dx, dy)
            corners = inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1)
            if corners and not any(box.overlaps(t) for t in taken):
                break
            ann.remove()
        else:  # too crowded: the first slot after all
            ann, box = label(text, xy, *slots[0])
        taken.append(box.padded(2))  # pixels: a gap between labels


def cost_frontier(
    configs: pd.DataFrame | None, out, summary=None, ensemble: dict | None = None
) -> plt.Figure:
    """Mean average mAP (configs.tsv, with its interval) against GPU-hours per run, per
    configuration; the cost frontier (Pareto: nothing cheaper is better) joined and labelled.
    The ensemble (headline.json's, ``ensemble``), if any, at its members' cost (summary.tsv)."""
    title = "Average mAP against training cost (Pareto frontier marked)"
    cfg = _configs(configs)
    if cfg.empty:
        return _empty_figure(out, title, "no finished run")
    cfg = cfg[np.isfinite(cfg["mean"].astype(float)) & np.isfinite(cfg["gpu_hours_per_run"])]
    if cfg.empty:
        return _empty_figure(out, title, "no GPU-hours recorded")
    pts = cfg[["config_id", "gpu_hours_per_run", "mean", "ci_low", "ci_high"]]
    ens = [_ensemble_point(ensemble, summary) or []]
    pts = pd.concat([pts.assign(kind="configuration"), pd.DataFrame(ens)], ignore_index=True)
    front = pareto_mask(pts["gpu_hours_per_run"], pts["mean"])
    pts = pts.assign(frontier=np.where(front, "on frontier", "dominated"))
    fig, ax = _subplots(figsize=(9, 5.5))
    p = pts[np.isfinite(pts["ci_low"].to_numpy(float))]
    x, m, lo, hi = p[["gpu_hours_per_run", "mean", "ci_low", "ci_high"]].to_numpy(float).T
    ax.errorbar(x, m, [m - lo, hi - m], fmt="none", ecolor="lightgrey", capsize=3)  # the table's
    kw = {"hue_order": ["on frontier", "dominated"], "style_order": ["configuration", "ensemble"]}
    kw |= {"s": 80, "ax": ax, "zorder": 3}  # the points above the intervals
    sns.scatterplot(pts, x="gpu_hours_per_run", y="mean", hue="frontier", style="kind", **kw)
    fr = pts[front].sort_values("gpu_hours_per_run")
    ax.plot(fr["gpu_hours_per_run"], fr["mean"], drawstyle="steps-post", color="C0", lw=1.2)
    ax.set(xlabel="GPU-hours per trained model (ensemble: all members)", ylabel="average mAP (%)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    ax.margins(x=0.25, y=0.25)  # room for the labels inside the axes
    fig.tight_layout()
    place_labels(ax, zip(fr["gpu_hours_per_run"], fr["mean"]), fr["config_id"])
    return _save(fig, out)


def read_curves(files, run_ids) -> pd.DataFrame:
    """The runs' curves.tsv (files and run ids in the same order), run_id and config_id added."""
    if len(files) != len(run_ids):
        raise InputError(f"{len(files)} curves files for {len(run_ids)} run ids")
    frames = []
    for path, run_id in zip(files, run_ids):
        df = tables.read_table(path, "training curves")
        frames.append(df.assign(run_id=run_id, config_id=run_id.rsplit("/", 1)[0]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def render_all(
    out_dir,
    summary: pd.DataFrame | None,
    configs: pd.DataFrame | None = None,
    head: dict | None = None,
    curves: pd.DataFrame | None = None,
    ensemble: pd.DataFrame | None = None,
    per_run: bool = True,
) -> list[Path]:
    """Every figure into out_dir as <name>.png (PLOT_NAMES), per-run curves into out_dir/curves/.
    ``configs``: configs.tsv; ``head``: headline.json (the baseline, the ensemble)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    p = {name: out_dir / f"{name}.png" for name in PLOT_NAMES}
    head = head or {}
    baseline = (head.get("baseline") or {}).get("config_id")  # set when it has a finished run
    axis_effects(summary, configs, p["axis_effects"], baseline)
    heatmaps(configs, p["heatmaps"])
    map_vs_tiou(configs, p["map_vs_tiou"])
    training_curves(curves, p["training_curves"])
    pp_heatmap(summary, p["pp_heatmap"])
    ensemble_gain(ensemble, head.get("ensemble"), p["ensemble_gain"])
    cost_frontier(configs, p["cost_frontier"], summary, head.get("ensemble"))
    written = list(p.values())
    if per_run:
        (out_dir / CURVES_DIR).mkdir(exist_ok=True)
        if curves is not None and not curves.empty:
            for run_id, grp in curves.groupby("run_id", sort=True):
                # p1/lora=A/seed=1 -> p1__lora=A__seed=1.png: for people, never mapped back
                path = out_dir / CURVES_DIR / (str(run_id).replace("/", "__") + ".png")
                run_curves(grp, path, str(run_id))
                written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tadsweep.report.plots",
        description="Render the report's figures from summary.tsv and the statistics' tables.",
    )
    ap.add_argument("--summary", required=True, help="summary.tsv (each run's points)")
    ap.add_argument("--configs", required=True, help="stats/configs.tsv (means, intervals)")
    ap.add_argument("--headline", required=True, help="stats/headline.json (baseline, ensemble)")
    ap.add_argument("--curves", nargs="*", default=[], help="the runs' curves.tsv")
    ap.add_argument("--runs", nargs="*", default=[], help="their run ids, same order")
    ap.add_argument("--ensemble", help="ensemble.tsv (when the study ensembles)")
    ap.add_argument("--out-dir", required=True, help="figures, and curves/<run>.png per run")
    ap.add_argument("--no-per-run", action="store_true", help="skip the per-run curve figures")
    args = ap.parse_args(argv)
    inputs = [args.summary, args.configs, args.headline, args.curves, args.ensemble]
    cli.check_outputs(inputs, [], [args.out_dir])
    summary = tables.read_summary(args.summary)
    head = readers.read_json(args.headline)
    if not isinstance(head, dict):
        raise InputError(f"{args.headline}: not a headline.json (expected a JSON object)")
    configs = tables.read_configs(args.configs)
    curves = read_curves(args.curves, args.runs)
    ensemble = tables.read_ensemble(args.ensemble)
    render_all(args.out_dir, summary, configs, head, curves, ensemble, not args.no_per_run)
    return 0


if __name__ == "__main__":
    cli.run(main)
