"""The report's figures (seaborn on matplotlib's Agg backend, PNG).

Every function takes data frames and an output path, writes one PNG and returns the (closed)
matplotlib Figure so tests can count its axes and artists. Degenerate inputs (no finished run, one
seed, one variant per axis, NaNs, failed runs) give a figure with a "not enough data" panel instead
of an exception: a report with a blank panel beats no report.

Values are average-mAP points (percent). Intervals are the percentile bootstrap of
`tadsweep.report.stats` (seeded), so figures and tables agree and a rerun writes identical bytes.
"""

from __future__ import annotations

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

from tadsweep import cli, readers  # noqa: E402
from tadsweep.atomic import atomic_path  # noqa: E402
from tadsweep.detections.evaluate import tiou_columns  # noqa: E402
from tadsweep.errors import InputError  # noqa: E402
from tadsweep.report import stats  # noqa: E402

AXES = stats.AXES
# File names under the output folder (the rules declare these outputs).
PLOT_NAMES = (
    "axis_effects",
    "heatmaps",
    "map_vs_tiou",
    "training_curves",
    "pp_heatmap",
    "ensemble_gain",
    "cost_frontier",
)
CURVES_DIR = "curves"  # one PNG per run: <phase>__<arm>__seed=<n>.png
DPI = 100


def _theme() -> None:
    sns.set_theme(style="whitegrid", context="notebook")


def _save(fig, out) -> plt.Figure:
    out = Path(out)
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
    fig, ax = plt.subplots(figsize=(6, 4))
    fig.suptitle(title)
    no_data(ax, reason)
    return _save(fig, out)


def _grid(n: int, ncols: int = 3, size=(4.8, 4.0)):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False
    )
    flat = list(axes.ravel())
    for ax in flat[n:]:
        fig.delaxes(ax)
    return fig, flat[:n]


def _rows(summary: pd.DataFrame | None) -> pd.DataFrame:
    """Finished runs at the default setting, with points; empty frame if nothing usable."""
    if summary is None or summary.empty:
        return pd.DataFrame(columns=["config_id", "seed", "value"])
    rows = stats.done_default(stats.check_summary(summary)).copy()
    rows["value"] = rows[stats.METRIC] * 100.0
    return rows[rows["value"].notna()]


def _variant_order(values, first) -> list[str]:
    vals = sorted({str(v) for v in values})
    return ([first] if first in vals else []) + [v for v in vals if v != first]


# ----------------------------------------------------------------------------- axis effects


def axis_effects(
    summary: pd.DataFrame,
    out,
    baseline_config_id: str | None = None,
    n_boot: int = stats.DEFAULT_N_BOOT,
    seed: int = stats.DEFAULT_SEED,
) -> plt.Figure:
    """One panel per axis with two or more variants: each seed's run as a point, the mean and its
    bootstrap interval in black. Configurations equal to the baseline on the other axes are used
    when they show two variants (a one-factor slice); otherwise all runs, pooled (marked)."""
    _theme()
    title = "Effect of each axis (average mAP, default post-processing)"
    rows = _rows(summary)
    if rows.empty:
        return _empty_figure(out, title, "no finished run")
    base_ids = set(rows["config_id"])
    if baseline_config_id not in base_ids:
        baseline_config_id = None
    base_v = (
        rows[rows["config_id"] == baseline_config_id].iloc[0][[f"v_{a}" for a in AXES]].to_dict()
        if baseline_config_id
        else {}
    )
    panels = []
    for axis in AXES:
        col = f"v_{axis}"
        if rows[col].nunique() < 2:
            continue
        sub, pooled = rows, True
        if base_v:
            mask = np.ones(len(rows), dtype=bool)
            for other in AXES:
                if other != axis:
                    mask &= (rows[f"v_{other}"] == base_v[f"v_{other}"]).to_numpy()
            if rows[mask][col].nunique() >= 2:
                sub, pooled = rows[mask], False
        panels.append((axis, sub, pooled))
    if not panels:
        return _empty_figure(out, title, "every axis has a single variant")
    fig, axs = _grid(len(panels))
    fig.suptitle(title)
    for ax, (axis, sub, pooled) in zip(axs, panels, strict=True):
        col = f"v_{axis}"
        order = _variant_order(sub[col], base_v.get(col, ""))
        data = sub.assign(seed=sub["seed"].astype(str), variant=sub[col].astype(str))
        sns.stripplot(
            data=data,
            x="variant",
            y="value",
            hue="seed",
            order=order,
            hue_order=sorted(data["seed"].unique(), key=lambda s: (len(s), s)),
            dodge=True,
            jitter=False,  # jitter draws from the global RNG: not reproducible
            size=6,
            alpha=0.8,
            ax=ax,
        )
        for i, v in enumerate(order):
            vals = data.loc[data["variant"] == v, "value"].to_numpy()
            lo, hi = stats.bootstrap_mean_ci(vals, n_boot, seed)
            m = float(np.mean(vals))
            ax.plot([i], [m], marker="D", color="black", zorder=5)
            if np.isfinite(lo):
                ax.errorbar([i], [m], yerr=[[m - lo], [hi - m]], color="black", capsize=6, lw=1.5)
        if base_v.get(col) in order:
            ref = data.loc[data["variant"] == base_v[col], "value"].mean()
            ax.axhline(ref, ls="--", color="grey", lw=1)
        ax.set_title(f"{axis}" + (" (all runs pooled: other axes vary)" if pooled else ""))
        ax.set_xlabel(f"{axis} variant")
        ax.set_ylabel("average mAP (%)")
        legend = ax.get_legend()
        if legend is not None and ax is not axs[-1]:
            legend.remove()  # one seed legend, outside the last panel, hides no points
        elif legend is not None:
            ax.legend(
                title="seed",
                fontsize=8,
                title_fontsize=8,
                bbox_to_anchor=(1.02, 1),
                loc="upper left",
            )
    fig.tight_layout()
    return _save(fig, out)


# ----------------------------------------------------------------------------- heatmaps


def heatmaps(summary: pd.DataFrame, out) -> plt.Figure:
    """Mean average mAP for every pair of axes that both vary (pooled over the other axes)."""
    _theme()
    title = "Two-axis heatmaps (mean average mAP %, pooled over other axes and seeds)"
    rows = _rows(summary)
    varying = [a for a in AXES if not rows.empty and rows[f"v_{a}"].nunique() >= 2]
    pairs = list(itertools.combinations(varying, 2))
    if not pairs:
        return _empty_figure(out, title, "fewer than two axes have two or more variants")
    fig, axs = _grid(len(pairs), size=(5.0, 4.2))
    fig.suptitle(title)
    for ax, (a, b) in zip(axs, pairs, strict=True):
        table = rows.pivot_table(index=f"v_{a}", columns=f"v_{b}", values="value", aggfunc="mean")
        sns.heatmap(
            table, annot=True, fmt=".1f", cmap="viridis", ax=ax, cbar_kws={"label": "avg mAP %"}
        )
        ax.set_xlabel(b)
        ax.set_ylabel(a)
        ax.set_title(f"{a} x {b}")
    fig.tight_layout()
    return _save(fig, out)


# ----------------------------------------------------------------------------- mAP vs tIoU


def map_vs_tiou(summary: pd.DataFrame, out, seed: int = stats.DEFAULT_SEED) -> plt.Figure:
    """mAP at each tIoU threshold per configuration (mean over seeds, bootstrap band)."""
    _theme()
    title = "mAP against tIoU (default post-processing)"
    rows = _rows(summary)
    cols = tiou_columns(rows.columns)
    if rows.empty or not cols:
        return _empty_figure(out, title, "no finished run with per-tIoU mAP")
    long = rows.melt(id_vars=["config_id", "seed"], value_vars=cols, var_name="t", value_name="mAP")
    long = long.dropna(subset=["mAP"])
    if long.empty:
        return _empty_figure(out, title, "all per-tIoU values are missing")
    long["tIoU"] = long["t"].str.replace("mAP@", "", regex=False).astype(float)
    long["mAP"] = long["mAP"] * 100.0
    n_cfg = long["config_id"].nunique()
    fig, ax = plt.subplots(figsize=(8 + (3 if n_cfg > 6 else 0), 5))
    sns.lineplot(
        data=long,
        x="tIoU",
        y="mAP",
        hue="config_id",
        hue_order=sorted(long["config_id"].unique()),
        marker="o",
        errorbar=("ci", 95),
        n_boot=2000,
        seed=seed,  # seaborn's bootstrap, seeded: identical bytes on rerun
        ax=ax,
    )
    ax.set_title(title)
    ax.set_ylabel("mAP (%)")
    ax.set_xticks(sorted(long["tIoU"].unique()))
    ax.legend(title="configuration", fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return _save(fig, out)


# ----------------------------------------------------------------------------- training curves


def _curve_panels(axs, data: pd.DataFrame, hue: str | None, units: str | None) -> None:
    loss_col = "loss_mean" if "loss_mean" in data and data["loss_mean"].notna().any() else "loss"
    kw = {"hue": hue, "units": units, "estimator": None} if units else {"hue": hue}
    specs = [
        (axs[0], loss_col, "training loss" + (" (epoch mean)" if loss_col == "loss_mean" else "")),
        (axs[2], "average_mAP", "evaluation average mAP (%)"),
    ]
    for ax, col, label in specs:
        d = data.dropna(subset=[col]) if col in data else data.iloc[:0]
        if col == "average_mAP" and not d.empty:
            d = d.assign(average_mAP=d["average_mAP"] * 100.0)
        if d.empty:
            no_data(ax, f"no {label}")
            continue
        sns.lineplot(
            data=d,
            x="epoch",
            y=col,
            marker="o" if col == "average_mAP" else None,
            legend=False,
            ax=ax,
            **kw,
        )
        ax.set_ylabel(label)
        ax.set_title(label)
    lr_cols = [c for c in ("lr_backbone", "lr_det") if c in data and data[c].notna().any()]
    ax = axs[1]
    if not lr_cols:
        no_data(ax, "no learning rate")
        return
    long = data.melt(
        id_vars=[c for c in ("epoch", hue, units) if c], value_vars=lr_cols, var_name="group"
    ).dropna(subset=["value"])
    long = long[long["value"] > 0]
    if long.empty:
        no_data(ax, "learning rate is zero")
        return
    sns.lineplot(
        data=long,
        x="epoch",
        y="value",
        hue=hue,
        style="group",
        ax=ax,
        legend="brief",
        **({"units": units, "estimator": None} if units else {}),
    )
    ax.set_yscale("log")
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate (backbone adapters/LoRA, detector)")
    if ax.get_legend() is not None:
        ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")


def training_curves(curves: pd.DataFrame, out) -> plt.Figure:
    """All runs: loss, LR and evaluation mAP by epoch, one line per run, coloured by configuration.
    `curves` is the curves.tsv rows of every run with `run_id` and `config_id` columns added."""
    _theme()
    title = "Training curves (all runs; colour = configuration)"
    if curves is None or curves.empty or "epoch" not in curves:
        return _empty_figure(out, title, "no curves.tsv")
    data = curves.copy()
    if "config_id" not in data:
        data["config_id"] = data["run_id"].str.rsplit("/", n=1).str[0]
    fig, axs = plt.subplots(1, 3, figsize=(18, 4.8))
    fig.suptitle(title)
    _curve_panels(axs, data, hue="config_id", units="run_id")
    fig.tight_layout()
    return _save(fig, out)


def run_curves(curves: pd.DataFrame, out, title: str = "") -> plt.Figure:
    """One run's loss, LR and evaluation mAP by epoch."""
    _theme()
    title = f"Training curves: {title}" if title else "Training curves"
    if curves is None or curves.empty or "epoch" not in curves:
        return _empty_figure(out, title, "no curves.tsv rows")
    fig, axs = plt.subplots(1, 3, figsize=(16, 4.4))
    fig.suptitle(title)
    _curve_panels(axs, curves, hue=None, units=None)
    fig.tight_layout()
    return _save(fig, out)


def run_file_name(run_id: str) -> str:
    """p1/lora=A+schedule=v2/seed=1 -> p1__lora=A+schedule=v2__seed=1.png (ids never hold '__'?
    they may; the name is for humans, the mapping back is not needed)."""
    return run_id.replace("/", "__") + ".png"


# ----------------------------------------------------------------------------- post-processing


def pp_heatmap(summary: pd.DataFrame, out, x: str = "sigma", y: str = "max_seg_num") -> plt.Figure:
    """Mean gain over the default setting (paired per run, points) on a grid of two soft-NMS knobs,
    the other knobs held at their default values. Falls back to the two knobs with most values."""
    _theme()
    title = "Post-processing sweep: mean gain over the default setting (points)"
    if summary is None or summary.empty:
        return _empty_figure(out, title, "no finished run")
    s = stats.check_summary(summary)
    s = s[(s["status"] == "done") & s[stats.METRIC].notna()]
    params = [p for p in stats.PP_PARAMS if p in s.columns]
    default = s[s["is_default_setting"]]
    if default.empty or not params:
        return _empty_figure(out, title, "no default-setting rows")
    dvals = default.iloc[0][params].to_dict()
    varying = [p for p in params if s[p].nunique() >= 2]
    if not varying:
        return _empty_figure(out, title, "only one post-processing setting")
    if not (x in varying and y in varying):
        ranked = sorted(varying, key=lambda p: (-s[p].nunique(), params.index(p)))
        x, y = (ranked + [None])[:2]
    sub = s
    for p in params:
        if p not in (x, y):  # held at the default (None/NaN included: "keep all")
            held = sub[p].isna() if pd.isna(dvals[p]) else sub[p] == dvals[p]
            sub = sub[held]
    base = default.groupby("run_id")[stats.METRIC].mean()
    sub = sub[sub["run_id"].isin(base.index)]
    if sub.empty:
        return _empty_figure(out, title, "no setting shares the default's other knobs")
    gain = (sub[stats.METRIC] - sub["run_id"].map(base)) * 100.0
    sub = sub.assign(gain=gain, _one="")
    table = sub.pivot_table(index=y or "_one", columns=x, values="gain", aggfunc="mean")
    n_runs = sub["run_id"].nunique()
    fig, ax = plt.subplots(figsize=(1.3 * table.shape[1] + 3, 0.8 * table.shape[0] + 2.5))
    lim = float(np.nanmax(np.abs(table.to_numpy()))) if np.isfinite(table.to_numpy()).any() else 1
    sns.heatmap(
        table,
        annot=True,
        fmt="+.2f",
        cmap="vlag",
        center=0.0,
        vmin=-max(lim, 1e-6),
        vmax=max(lim, 1e-6),
        ax=ax,
        cbar_kws={"label": "gain (points)"},
    )
    held = ", ".join(f"{p}={dvals[p]}" for p in params if p not in (x, y) and p in varying)
    ax.set_title(f"{title}\n{n_runs} run(s)" + (f"; held: {held}" if held else ""), fontsize=10)
    ax.set_xlabel(x)
    ax.set_ylabel(y or "")
    fig.tight_layout()
    return _save(fig, out)


# ----------------------------------------------------------------------------- ensemble


def ensemble_gain(ensemble: pd.DataFrame | None, out) -> plt.Figure:
    """Greedy forward selection: average mAP by number of members, against the best single run."""
    _theme()
    title = "Ensemble against the best single run"
    if ensemble is None or ensemble.empty or stats.METRIC not in ensemble:
        return _empty_figure(out, title, "no ensemble results")
    e = ensemble.copy()
    e["value"] = pd.to_numeric(e[stats.METRIC], errors="coerce") * 100.0
    e = e.dropna(subset=["value"])
    if e.empty:
        return _empty_figure(out, title, "ensemble average mAP missing")
    if "step" not in e:
        e["step"] = range(1, len(e) + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(data=e, x="step", y="value", marker="o", ax=ax, label="ensemble")
    single = pd.to_numeric(e.get("best_single_average_mAP"), errors="coerce").dropna()
    res = stats.ensemble_result(ensemble)
    if not single.empty:
        ax.axhline(single.iloc[0] * 100.0, ls="--", color="grey", label="best single run")
    if res and res["step"] is not None and np.isfinite(res["gain"]):
        ax.annotate(
            f"{res['gain']:+.2f} points",
            (res["step"], res["average_mAP"]),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
        )
    ax.margins(y=0.2)  # room for the annotation under the title
    ax.set_xlabel("members (greedy forward selection step)")
    ax.set_ylabel("average mAP (%)")
    ax.set_xticks(sorted(e["step"].unique()))
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _save(fig, out)


# ----------------------------------------------------------------------------- cost


def pareto_mask(cost, value) -> np.ndarray:
    """True where no other point is at most as costly and at least as good, and better in one."""
    cost, value = np.asarray(cost, float), np.asarray(value, float)
    ok = np.isfinite(cost) & np.isfinite(value)
    mask = np.zeros(len(cost), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = (
            ok & (cost <= cost[i]) & (value >= value[i]) & ((cost < cost[i]) | (value > value[i]))
        )
        mask[i] = not dominated.any()
    return mask


def _ensemble_cost(ensemble, summary) -> tuple[float, float] | None:
    """(GPU-hours of the members' training, ensemble points), if the members can be found."""
    res = stats.ensemble_result(ensemble)
    if not res or not res["members"] or summary is None or "gpu_hours" not in summary:
        return None
    hours = summary.drop_duplicates("run_id").set_index("run_id")["gpu_hours"]
    # members joined by tadsweep.detections.ensemble
    parts = [p.strip() for p in res["members"].split(",") if p.strip()]
    if parts and all(p in hours.index for p in parts):
        return float(pd.to_numeric(hours[parts]).sum()), res["average_mAP"]
    return None


def cost_frontier(
    summary: pd.DataFrame,
    out,
    ensemble: pd.DataFrame | None = None,
    n_boot: int = stats.DEFAULT_N_BOOT,
    seed: int = stats.DEFAULT_SEED,
) -> plt.Figure:
    """Mean average mAP against GPU-hours per run, per configuration; the cost frontier (Pareto:
    nothing cheaper is better) joined and labelled. The ensemble, if any, at its members' cost."""
    _theme()
    title = "Average mAP against training cost (Pareto frontier marked)"
    rows = _rows(summary)
    if rows.empty or "gpu_hours" not in rows:
        return _empty_figure(out, title, "no finished run")
    cfg = stats.config_table(summary, n_boot, seed)
    cfg = cfg[np.isfinite(cfg["mean"]) & np.isfinite(cfg["gpu_hours_per_run"])]
    if cfg.empty:
        return _empty_figure(out, title, "no GPU-hours recorded")
    cfg = cfg.assign(kind="configuration")
    ens = _ensemble_cost(ensemble, summary)
    pts = cfg[["config_id", "gpu_hours_per_run", "mean", "ci_low", "ci_high", "kind"]]
    if ens:
        pts = pd.concat(
            [
                pts,
                pd.DataFrame(
                    [
                        {
                            "config_id": "ensemble",
                            "gpu_hours_per_run": ens[0],
                            "mean": ens[1],
                            "ci_low": np.nan,
                            "ci_high": np.nan,
                            "kind": "ensemble",
                        }
                    ]
                ),
            ],
            ignore_index=True,
        )
    pts = pts.reset_index(drop=True)
    front = pareto_mask(pts["gpu_hours_per_run"], pts["mean"])
    pts = pts.assign(frontier=np.where(front, "on frontier", "dominated"))
    fig, ax = plt.subplots(figsize=(9, 5.5))
    has_ci = np.isfinite(pts["ci_low"].to_numpy(float))
    if has_ci.any():
        p = pts[has_ci]
        m = p["mean"].to_numpy(float)
        ax.errorbar(
            p["gpu_hours_per_run"].to_numpy(float),
            m,
            yerr=[m - p["ci_low"].to_numpy(float), p["ci_high"].to_numpy(float) - m],
            fmt="none",
            ecolor="lightgrey",
            capsize=3,
            zorder=1,
        )
    sns.scatterplot(
        data=pts,
        x="gpu_hours_per_run",
        y="mean",
        hue="frontier",
        hue_order=["on frontier", "dominated"],
        style="kind",
        style_order=["configuration", "ensemble"],
        s=80,
        ax=ax,
        zorder=3,
    )
    fr = pts[front].sort_values("gpu_hours_per_run")
    ax.plot(fr["gpu_hours_per_run"], fr["mean"], drawstyle="steps-post", color="C0", lw=1.2)
    for _, r in fr.iterrows():
        ax.annotate(
            r["config_id"],
            (r["gpu_hours_per_run"], r["mean"]),
            fontsize=8,
            textcoords="offset points",
            xytext=(4, 4),
        )
    ax.set_xlabel("GPU-hours per trained model (ensemble: all members)")
    ax.set_ylabel("average mAP (%)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, out)


# ----------------------------------------------------------------------------- all


def read_curves(files, run_ids) -> pd.DataFrame:
    """The runs' curves.tsv (as the rule hands them, with their run ids), run_id and config_id
    added."""
    if len(files) != len(run_ids):
        raise InputError(f"{len(files)} curves files for {len(run_ids)} run ids")
    frames = []
    for path, run_id in zip(files, run_ids):
        try:
            df = pd.read_csv(path, sep="\t")
        except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
            raise InputError(f"{path}: cannot read training curves ({exc})") from None
        frames.append(df.assign(run_id=run_id, config_id=run_id.rsplit("/", 1)[0]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def render_all(
    out_dir,
    summary: pd.DataFrame | None,
    curves: pd.DataFrame | None = None,
    ensemble: pd.DataFrame | None = None,
    baseline_config_id: str | None = None,
    per_run: bool = True,
    n_boot: int = stats.DEFAULT_N_BOOT,
) -> list[Path]:
    """Every figure into out_dir as <name>.png (PLOT_NAMES), per-run curves into out_dir/curves/."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    p = {name: out_dir / f"{name}.png" for name in PLOT_NAMES}
    axis_effects(summary, p["axis_effects"], baseline_config_id, n_boot)
    heatmaps(summary, p["heatmaps"])
    map_vs_tiou(summary, p["map_vs_tiou"])
    training_curves(curves, p["training_curves"])
    pp_heatmap(summary, p["pp_heatmap"])
    ensemble_gain(ensemble, p["ensemble_gain"])
    cost_frontier(summary, p["cost_frontier"], ensemble, n_boot)
    written = list(p.values())
    if per_run:
        (out_dir / CURVES_DIR).mkdir(exist_ok=True)
        if curves is not None and not curves.empty:
            for run_id, grp in curves.groupby("run_id", sort=True):
                path = out_dir / CURVES_DIR / run_file_name(str(run_id))
                run_curves(grp, path, str(run_id))
                written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tadsweep.report.plots",
        description="Render the report's figures from the files of a study.",
    )
    ap.add_argument("--summary", required=True, help="summary.tsv")
    ap.add_argument("--study-json", required=True, help="study.json (baseline_config_id)")
    ap.add_argument("--curves", nargs="*", default=[], help="the runs' curves.tsv")
    ap.add_argument("--runs", nargs="*", default=[], help="their run ids, same order")
    ap.add_argument("--ensemble", help="ensemble.tsv (when the study ensembles)")
    ap.add_argument("--out-dir", required=True, help="figures, and curves/<run>.png per run")
    ap.add_argument("--no-per-run", action="store_true", help="skip the per-run curve figures")
    args = ap.parse_args(argv)
    inputs = [args.summary, args.study_json, args.curves, args.ensemble]
    cli.check_outputs(inputs, [], [args.out_dir])
    summary = stats.read_summary(args.summary)
    study = readers.read_json(args.study_json)
    if not isinstance(study, dict):
        raise InputError(f"{args.study_json}: not a study.json (expected a JSON object)")
    baseline = study.get("baseline_config_id")
    render_all(
        args.out_dir,
        summary,
        read_curves(args.curves, args.runs),
        stats.read_ensemble(args.ensemble),
        baseline,
        per_run=not args.no_per_run,
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
