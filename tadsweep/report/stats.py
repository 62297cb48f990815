"""What helped: per-configuration aggregates, paired differences to the baseline, and the seed
plan's claims checked against them.

Inputs are `summary.tsv` (one row per run x post-processing setting, metrics as fractions) and
optionally `ensemble.tsv`. Every number this module writes is in **average-mAP points** (percent,
fraction x 100), the unit of the seed plan's claims.

Rows used: `status == done`, and for everything except the post-processing comparison only the
default post-processing setting (`is_default_setting`), so configurations are compared at the
setting they were trained for.

Intervals: the percentile bootstrap of tadsweep.report.bootstrap over seeds (over runs for
post-processing), `n_boot` resamples (default B = 10,000); with fewer than 2 seeds (pairs) none
(NaN). Given the runs' matches, the first screen's gains between configurations also get an
interval over seeds *and* test videos (``video_ci``, tadsweep.report.video_bootstrap); verdicts
use the seeds' interval. The figures (tadsweep.report.plots) draw these tables' intervals.

Claim verdicts (`verdict`), with d the estimated gain, [lo, hi] its 95% interval, `low` the claimed
lower bound:
- confirmed: lo > 0 (the gain is distinguishable from noise) and d >= low (as large as claimed);
- not confirmed: hi < low (even the optimistic end of the interval misses the claimed range);
- inconclusive: anything else, and always when no interval exists.
Notes flag gains above the claimed range, harmful changes (hi < 0), confounded comparisons and
selection ("best of k" estimates are biased upwards: the winner's curse).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tadsweep import cli, readers
from tadsweep.atomic import atomic_path, write_json
from tadsweep.detections import knobs
from tadsweep.detections.evaluate import HALVES, half_column, tiou_columns
from tadsweep.errors import InputError
from tadsweep.report import ledger
from tadsweep.report import video_bootstrap as vboot
from tadsweep.report.bootstrap import DEFAULT_N_BOOT, LEVEL, mean_interval
from tadsweep.report.collect import PP_PARAMS
from tadsweep.report.tables import (
    AXES,
    METRIC,
    check_summary,
    done_default,
    read_ensemble,
    read_summary,
)

# Switches under which another knob may be inert (checked one by one by observed_inert): the
# knobs the inert rules of tadsweep/detections/knobs.py name.
SWITCHES = knobs.switches()
DEFAULT_SEED = 0
# Run-to-run SD used when the study has no repeated seeds to estimate it: OpenTAD's maintainer
# quotes +-0.5 average mAP between identical runs (OpenTAD issue 78).
FALLBACK_RUN_SD = 0.5


# ----------------------------------------------------------------------------- intervals


def paired_difference(
    a: pd.Series, b: pd.Series, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED
) -> dict:
    """Mean of a - b over the keys (seeds, runs) both have, with its bootstrap interval."""
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    d = (both["a"] - both["b"]).to_numpy(dtype=float)
    lo, hi = mean_interval(d, n_boot, seed)
    return {
        "n_pairs": int(d.size),
        "diff": float(d.mean()) if d.size else math.nan,
        "diff_ci_low": lo,
        "diff_ci_high": hi,
        "pairs": ",".join(str(k) for k in both.index),
    }


# ----------------------------------------------------------------------------- per configuration


def per_seed(rows: pd.DataFrame, config_id: str, metric: str = METRIC) -> pd.Series:
    """Points per seed of one configuration (mean if a seed appears twice)."""
    sel = rows[rows["config_id"] == config_id]
    return sel.groupby("seed")[metric].mean() * 100.0


def config_table(
    summary: pd.DataFrame, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED
) -> pd.DataFrame:
    """Mean, SD (ddof 1) and bootstrap interval over seeds per configuration, and per tIoU."""
    rows = done_default(summary)
    per_tiou = tiou_columns(summary.columns)  # evaluation.tious, as evaluated
    out = []
    for cid, grp in rows.groupby("config_id", sort=True):
        vals = per_seed(rows, cid)
        lo, hi = mean_interval(vals.to_numpy(), n_boot, seed)
        rec = {
            "config_id": cid,
            "phase": grp["phase"].iloc[0] if "phase" in grp else str(cid).split("/")[0],
            **{f"v_{a}": grp[f"v_{a}"].iloc[0] for a in AXES},
            "n_seeds": int(vals.notna().sum()),
            "seeds": ",".join(str(s) for s in vals.index),
            "mean": float(vals.mean()),
            "std": float(vals.std(ddof=1)) if vals.notna().sum() > 1 else math.nan,
            "ci_low": lo,
            "ci_high": hi,
        }
        for col in per_tiou:  # the map_vs_tiou figure draws these
            t = per_seed(rows, cid, col)
            rec[f"mean_{col}"] = float(t.mean())
            rec[f"ci_low_{col}"], rec[f"ci_high_{col}"] = mean_interval(t, n_boot, seed)
        if "augment_policy" in grp:  # what the augment variant really runs, in words
            rec["augment_policy"] = grp["augment_policy"].iloc[0]
        gh = grp["gpu_hours"] if "gpu_hours" in grp else pd.Series(dtype=float)
        rec["gpu_hours_per_run"] = float(gh.mean()) if gh.notna().any() else math.nan
        rec["gpu_hours_total"] = float(gh.sum()) if gh.notna().any() else math.nan
        out.append(rec)
    cols = ["config_id", "phase", *[f"v_{a}" for a in AXES], "n_seeds", "seeds", "mean", "std"]
    cols += ["ci_low", "ci_high"]
    cols += [f"{k}_{c}" for c in per_tiou for k in ("mean", "ci_low", "ci_high")]
    cols += ["gpu_hours_per_run", "gpu_hours_total"]
    cols += ["augment_policy"] if "augment_policy" in summary else []
    return pd.DataFrame(out, columns=cols)


def versus_baseline(
    summary: pd.DataFrame, baseline_id: str, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED
) -> pd.DataFrame:
    """Every configuration minus the baseline, paired by seed."""
    rows = done_default(summary)
    base = per_seed(rows, baseline_id)
    out = [
        {"config_id": cid, "baseline_config_id": baseline_id}
        | paired_difference(per_seed(rows, cid), base, n_boot, seed)
        for cid in sorted(rows["config_id"].unique())
    ]
    cols = ["config_id", "baseline_config_id", "n_pairs", "diff", "diff_ci_low", "diff_ci_high"]
    return pd.DataFrame(out, columns=[*cols, "pairs"])


# ----------------------------------------------------------------------------- claims


def verdict(diff: float, lo: float, hi: float, low: float, high: float) -> tuple[str, str]:
    """(verdict, note) by the rule in the module docstring."""
    if not np.isfinite(diff):
        return "inconclusive", "no data"
    notes = []
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive", "no interval (fewer than 2 pairs)"
    if hi < 0:
        notes.append("harmful: the whole interval is below 0")
    if lo > 0 and diff >= low:
        if diff > high:
            notes.append("gain above the claimed range")
        return "confirmed", "; ".join(notes)
    if hi < low:
        return "not confirmed", "; ".join(notes)
    return "inconclusive", "; ".join(notes)


def _variants(cfgs: pd.DataFrame, cid: str) -> dict:
    row = cfgs.loc[cfgs["config_id"] == cid].iloc[0]
    return {a: row[f"v_{a}"] for a in AXES}


def _axis_comparison(summary, cfgs, claim, baseline_config_id, n_boot, seed) -> dict:
    """Best variant of the axis against the baseline variant, other axes held equal if any pair
    of configurations allows it; else against the baseline, naming what else differs."""
    axis = claim["axis"]
    if baseline_config_id not in set(cfgs["config_id"]):
        return {"note": f"baseline {baseline_config_id} has no finished run"}
    ref_var = _variants(cfgs, baseline_config_id)[axis]
    others = [a for a in AXES if a != axis]
    cands = cfgs[cfgs[f"v_{axis}"] != ref_var]
    if claim.get("variant"):
        cands = cands[cands[f"v_{axis}"] == claim["variant"]]
    if cands.empty:
        return {"note": f"no configuration varies {axis} (baseline variant {ref_var})"}
    pairs = []  # (candidate row, reference config_id, confounding axes)
    held = [f"v_{a}" for a in others]
    for _, c in cands.iterrows():
        refs = (cfgs[held] == c[held]).all(axis=1) & (cfgs[f"v_{axis}"] == ref_var)
        if not (ids := list(cfgs.loc[refs, "config_id"])):
            continue
        same_phase = [r for r in ids if r.split("/")[0] == str(c["config_id"]).split("/")[0]]
        ref = baseline_config_id if baseline_config_id in ids else (same_phase or ids)[0]
        pairs.append((c, ref, []))
    if not pairs:
        base_v = _variants(cfgs, baseline_config_id)
        for _, c in cands.iterrows():
            pairs.append((c, baseline_config_id, [a for a in others if c[f"v_{a}"] != base_v[a]]))
    # The best candidate by mean over seeds; ties go to the first config_id (sorted table).
    best = max(pairs, key=lambda p: np.nan_to_num(p[0]["mean"], nan=-np.inf))
    c, ref, confounded = best
    rows = done_default(summary)
    res = paired_difference(per_seed(rows, c["config_id"]), per_seed(rows, ref), n_boot, seed)
    notes = [f"confounded: also differs in {', '.join(confounded)}"] if confounded else []
    if len(pairs) > 1:
        notes.append(f"best of {len(pairs)} candidates (selected on the same data: biased up)")
    cid = c["config_id"]
    head = {"compared": f"{cid} vs {ref}", "candidate": cid, "reference": ref}
    return head | res | {"n_candidates": len(pairs), "note": "; ".join(notes)}


def _postprocess_comparison(summary, claim, n_boot, seed) -> dict:
    """Best non-default setting against the default on the same finished runs, paired per run."""
    found = vboot.setting_table(summary, claim)
    if isinstance(found, str):
        return {"note": found}
    default, table, best = found
    res = paired_difference(table[best], default, n_boot, seed)
    notes = [f"per run over {res['n_pairs']} runs (all configurations)"]
    if table.shape[1] > 1:
        notes.append(f"best of {table.shape[1]} settings (selected on the same data: biased up)")
    head = {"compared": f"setting {best} vs default", "candidate": best, "reference": "default"}
    rest = {"n_candidates": int(table.shape[1]), "note": "; ".join(notes)}
    return head | res | rest | {"pairs": ""}  # run ids are long; the count says enough


def pooled_run_sd(cfgs: pd.DataFrame) -> float:
    """Within-configuration SD of single runs (points), pooled over configs with >= 2 seeds."""
    dof = (cfgs["n_seeds"] - 1).clip(lower=0)
    return (
        math.sqrt((dof * cfgs["std"].fillna(0) ** 2).sum() / dof.sum()) if dof.sum() else math.nan
    )


def ensemble_result(ensemble: pd.DataFrame | None) -> dict | None:
    """The greedy step with the highest average mAP (fewest members on ties) vs the best run."""
    if ensemble is None or ensemble.empty or ensemble[METRIC].notna().sum() == 0:
        return None
    ens = ensemble.copy()
    ens["_members"] = ens["step"] if "step" in ens else range(len(ens))
    by, basis = METRIC, "all"  # the step is chosen on the videos that chose the members
    if "selected_on" in ens and str(ens["selected_on"].iloc[0]) in HALVES:
        basis = str(ens["selected_on"].iloc[0])
        by = half_column(METRIC, basis)
    best = ens.sort_values([by, "_members"], ascending=[False, True]).iloc[0]
    single = pd.to_numeric(ens["best_single_average_mAP"], errors="coerce").dropna()
    single_v = float(single.iloc[0]) * 100.0 if not single.empty else math.nan
    members = str(best["members"]) if "members" in ens else ""
    return {
        "average_mAP": float(best[METRIC]) * 100.0,
        "step": int(best["step"]) if "step" in ens and pd.notna(best["step"]) else None,
        "members": members,
        # 1: no ensemble beat the best single run on the videos that chose (fewest wins ties)
        "n_members": len([m for m in members.split(",") if m]),
        "best_single_average_mAP": single_v,
        "gain": float(best[METRIC]) * 100.0 - single_v,
        "chosen_on": "all videos" if basis == "all" else f"half {basis}",
    }


def _ensemble_comparison(cfgs, ensemble) -> dict:
    """One ensemble against one best run: no seeds to resample. The interval is normal-approximate,
    d +- 1.96 * sqrt(2) * s, with s the pooled run-to-run SD of the study (or 0.5 without repeats):
    both numbers are single trained-model outcomes, each about that noisy."""
    ens = ensemble_result(ensemble)
    if ens is None:
        return {"note": "no ensemble results"}
    sd, source = pooled_run_sd(cfgs), "pooled seed SD"
    if not np.isfinite(sd):
        sd, source = FALLBACK_RUN_SD, "assumed run SD 0.5 (no repeated seeds)"
    d, half = ens["gain"], 1.96 * math.sqrt(2.0) * sd
    note = f"interval from {source} {sd:.2f}; members and best run chosen on the test set: both"
    if ens["n_members"] == 1:  # the "ensemble" is the best single run itself
        note = f"no ensemble beat the best single run on {ens['chosen_on']}; {note}"
    out = {"compared": "ensemble vs best single run", "candidate": f"ensemble step {ens['step']}"}
    out.update(reference="best single run", n_candidates=1, n_pairs=1, pairs="", diff=d)
    return out | {"note": f"{note} optimistic", "diff_ci_low": d - half, "diff_ci_high": d + half}


CI = ["diff_ci_low", "diff_ci_high"]
CLAIM_COLUMNS = ["claim", "axis", "low", "high", "verdict", "diff", *CI, "n_pairs", "compared"]
CLAIM_COLUMNS += ["candidate", "reference", "n_candidates", "note"]


def evaluate_claims(
    summary: pd.DataFrame,
    claims: list[dict],
    baseline_config_id: str,
    ensemble: pd.DataFrame | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    cfgs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per claim. A claim: {"claim", "axis" (an axis, "postprocess" or "ensemble"), "low",
    "high"}, optionally "variant" (axis claims), "setting"/"config_id" (post-processing).
    ``cfgs``: the summary's config_table, when the caller has it."""
    cfgs = config_table(summary, n_boot, seed) if cfgs is None else cfgs
    out = []
    for claim in claims:
        axis = claim["axis"]
        if axis == "postprocess":
            res = _postprocess_comparison(summary, claim, n_boot, seed)
        elif axis == "ensemble":
            res = _ensemble_comparison(cfgs, ensemble)
        elif axis in AXES:
            res = _axis_comparison(summary, cfgs, claim, baseline_config_id, n_boot, seed)
        else:
            raise InputError(f"claims: {claim.get('claim')!r}: unknown axis {axis!r}")
        diff = res.get("diff", math.nan)
        lo, hi = res.get("diff_ci_low", math.nan), res.get("diff_ci_high", math.nan)
        v, why = verdict(diff, lo, hi, float(claim["low"]), float(claim["high"]))
        note = "; ".join(n for n in (res.get("note", ""), why) if n)
        rec = {k: res.get(k, math.nan) for k in CLAIM_COLUMNS} | {"verdict": v, "note": note}
        out.append(rec | {k: claim[k] for k in ("claim", "axis", "low", "high")})
    tab = pd.DataFrame(out, columns=CLAIM_COLUMNS)
    for col in ("n_pairs", "n_candidates"):
        tab[col] = pd.to_numeric(tab[col], errors="coerce").astype("Int64")
    return tab


# ----------------------------------------------------------------------------- inert settings


def observed_inert(summary: pd.DataFrame, tol: float = 1e-9) -> list[str]:
    """Post-processing knobs the data show to do nothing: a parameter whose values never change
    any metric when everything else is equal (always, or when a switch like multiclass is set)."""
    out = []
    rows = summary[summary["status"] == "done"]
    metrics = [c for c in [METRIC, *tiou_columns(rows.columns)] if c in rows.columns]
    present = [p for p in PP_PARAMS if p in rows.columns]
    for p in present:
        if rows[p].nunique(dropna=False) < 2:
            continue
        keys = ["run_id", *[q for q in present if q != p]]
        grouped = rows.groupby(keys, dropna=False)[metrics]
        spread = grouped.max() - grouped.min()
        varied = rows.groupby(keys, dropna=False)[p].nunique(dropna=False) > 1
        spread = spread[varied]
        if spread.empty:
            continue
        values = ", ".join(str(v) for v in sorted(rows[p].dropna().unique(), key=str))
        if float(spread.to_numpy().max()) <= tol:
            out.append(
                f"postprocess {p}: values {values} give identical metrics on every run "
                f"({int(varied.sum())} comparisons): inert here"
            )
            continue
        # Structural switches (e.g. voting_thresh acts only when multiclass is false).
        for q in [q for q in SWITCHES if q in present and q != p]:
            for v in sorted(rows[q].dropna().unique(), key=str):
                sub = spread[spread.index.get_level_values(q) == v]
                if not sub.empty and float(sub.to_numpy().max()) <= tol:
                    out.append(
                        f"postprocess {p}: values {values} give identical metrics whenever "
                        f"{q}={v} ({len(sub)} comparisons): inert there"
                    )
    return out


def identical_to(summary: pd.DataFrame, reference: str, tol: float = 1e-9) -> list[str]:
    """Configurations whose every shared seed scores exactly like the reference: a change that
    cannot act (an inert knob) shows up this way, since the seed fixes everything else."""
    rows = done_default(summary)
    ref, out = per_seed(rows, reference), []
    for cid in sorted(set(rows["config_id"]) - {reference}):
        both = pd.concat([per_seed(rows, cid), ref], axis=1, join="inner").dropna()
        if len(both) and (both.iloc[:, 0] - both.iloc[:, 1]).abs().max() <= tol:
            out.append(
                f"{cid}: identical to {reference} on every shared seed ({len(both)}): "
                "the change had no effect (inert variant?)"
            )
    return out


# ----------------------------------------------------------------------------- headline


def _clean(obj):
    """JSON without NaN: NaN and inf become null; numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    obj = obj.item() if isinstance(obj, np.generic) else None if obj is pd.NA else obj
    if isinstance(obj, float):
        # 6 decimals: far below any meaningful mAP difference, and no 4.000000000000004 noise.
        return round(obj, 6) if math.isfinite(obj) else None
    return obj


def _config(row: pd.Series) -> dict:
    """A configs.tsv row as the headline states it."""
    keys = ("config_id", "mean", "std")
    return {k: row[k] for k in keys} | {
        "n_seeds": int(row["n_seeds"]),
        "ci": [row["ci_low"], row["ci_high"]],
    }


def _gain(vs: pd.DataFrame, cid: str) -> dict | None:
    """A vs_baseline.tsv row as the headline states a gain; None without a shared seed."""
    g = vs[vs["config_id"] == cid]
    if g.empty or not g.iloc[0]["n_pairs"]:
        return None
    g = g.iloc[0]
    return {
        "diff": g["diff"],
        "ci": [g["diff_ci_low"], g["diff_ci_high"]],
        "n_pairs": int(g["n_pairs"]),
    }


@dataclass
class Analysis:
    configs: pd.DataFrame
    vs_baseline: pd.DataFrame
    claims: pd.DataFrame
    inert: pd.DataFrame
    headline: dict = field(default_factory=dict)


def analyze(
    summary: pd.DataFrame,
    baseline_config_id: str,
    claims: list[dict] | None = None,
    warnings: list[str] | None = None,
    ensemble: pd.DataFrame | None = None,
    study: str = "",
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    reported: dict | None = None,
    crossfit: bool = True,
    ensemble_crossfit: dict | None = None,
    matches: dict | None = None,
    video_resamples: int = vboot.DEFAULT_N_RESAMPLES,
    best_matches: dict | None = None,
    ensemble_matches: str | None = None,
) -> Analysis:
    """``matches``: run id -> runs/<run>/matches.npz; with it, the first screen's gains also get
    intervals over seeds and videos (tadsweep.report.video_bootstrap): between configurations;
    with ``best_matches`` (run id -> matches_best.npz), the best post-processing setting's; with
    ``ensemble_matches`` (ensemble/matches.npz), the ensemble's."""
    summary = check_summary(summary)
    claims = claims or []  # a study without claims checks none
    cfgs = config_table(summary, n_boot, seed)
    vs = versus_baseline(summary, baseline_config_id, n_boot, seed)
    claim_tab = evaluate_claims(summary, claims, baseline_config_id, ensemble, n_boot, seed, cfgs)
    inert = [("validation", str(w)) for w in (warnings or [])]
    inert += [("observed", m) for m in observed_inert(summary)]
    inert += [("observed", m) for m in identical_to(summary, baseline_config_id)]
    inert_tab = pd.DataFrame(inert, columns=["source", "message"])

    runs = summary.drop_duplicates("run_id")
    by_status = runs["status"].value_counts()
    gpu = pd.to_numeric(runs.get("gpu_hours", pd.Series(dtype=float)), errors="coerce")
    head = {
        "study": study,
        "metric": "average-mAP points, final epoch, default soft-NMS",
        "bootstrap": {"n_boot": n_boot, "seed": seed, "level": LEVEL, "kind": "percentile"},
        **dict.fromkeys(("baseline", "best", "ensemble", "postprocess")),
        "gpu_hours": float(gpu.sum()) if gpu.notna().any() else 0.0,
        "runs": {s: int(by_status.get(s, 0)) for s in ("done", "failed", "pending")},
        "failed_runs": sorted(runs.loc[runs["status"] == "failed", "run_id"].astype(str)),
        "claims": claim_tab[["claim", "verdict", "diff", *CI, "note"]].to_dict("records"),
        "inert": [m for _, m in inert],
    }
    base = cfgs[cfgs["config_id"] == baseline_config_id]
    if not base.empty:
        head["baseline"] = _config(base.iloc[0])
    if cfgs["mean"].notna().any():
        b = cfgs.loc[cfgs["mean"].idxmax()]  # first on ties (table sorted by config_id)
        head["best"] = _config(b) | {"variants": {a: b[f"v_{a}"] for a in AXES}}
        head["best"]["gain"] = _gain(vs, b["config_id"])
    head["ensemble"] = ensemble_result(ensemble)
    pp = claim_tab[claim_tab["axis"] == "postprocess"]  # the first claim's, else all runs'
    pp_row = pp.iloc[0].to_dict() if len(pp) else _postprocess_comparison(summary, {}, n_boot, seed)
    if np.isfinite(pp_row.get("diff", math.nan)):
        chosen = summary[summary["setting"].astype(str) == str(pp_row["candidate"])]
        params = chosen.iloc[0][[c for c in PP_PARAMS if c in chosen]].to_dict()
        head["postprocess"] = {
            "setting": pp_row["candidate"],
            "described": describe_setting(params) if len(chosen) else str(pp_row["candidate"]),
            "diff": pp_row["diff"],
            "ci": [pp_row["diff_ci_low"], pp_row["diff_ci_high"]],
            "n_runs": int(pp_row["n_pairs"]),
        }
    head["reported"] = reported_checks(cfgs, vs, reported or {}, baseline_config_id)
    if matches:
        rows, pp_claim = done_default(summary), vboot.postprocess_claim(claims)
        vboot.annotate(head, claim_tab, rows, matches, baseline_config_id, video_resamples, seed,
                       summary, pp_claim, best_matches, ensemble, ensemble_matches)  # fmt: skip
    head["crossfit"] = crossfit_figures(summary, crossfit, ensemble_crossfit)
    return Analysis(cfgs, vs, claim_tab, inert_tab, _clean(head))


# ----------------------------------------------------------------------------- cross-fitting


def _bases(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame's metric on all videos and each half, in points, as select.crossfit reads them."""
    out = {"score": frame[METRIC] * 100.0}
    out.update({f"score_{h}": frame[half_column(METRIC, h)] * 100.0 for h in HALVES})
    return pd.DataFrame(out, index=frame.index)


def crossfit_figures(summary: pd.DataFrame, on_a: bool, ensemble: dict | None) -> dict | None:
    """Honest (chosen on one half, scored on the other, swapped, averaged) beside optimistic
    (chosen and scored on all videos) for the best configuration (mean over seeds, default
    setting), the best post-processing setting (its mean gain over the default across finished
    runs, other than the default) and the ensemble (from tadsweep.detections.ensemble's
    --crossfit-out); in points. None for a summary without per-half columns."""
    from tadsweep.plan.select import crossfit

    if not all(half_column(METRIC, h) in summary for h in HALVES):
        return None
    decisions = "a" if on_a else "all"
    rows = done_default(summary).sort_values("config_id", kind="stable")  # ties: first id
    out = {
        "decisions": "half a" if on_a else "all videos",
        "split": "evaluation videos by name, sorted: even positions half a, odd half b",
        **dict.fromkeys(("best_config", "postprocess")),
    }
    if not rows.empty:
        frame = _bases(rows).assign(config_id=rows["config_id"])
        out["best_config"] = crossfit(frame, "config_id", "mean", decisions)
    done = summary[summary["status"] == "done"]
    default = _bases(done[done["is_default_setting"]].set_index("run_id"))
    other = done[~done["is_default_setting"]]
    other = other[other["run_id"].isin(default.index)]
    if not other.empty:  # each setting's gain over the default, per run
        diff = _bases(other).to_numpy() - default.loc[other["run_id"]].to_numpy()
        gains = pd.DataFrame(diff, columns=default.columns)
        gains["setting"] = other["setting"].astype(str).to_numpy()
        res = crossfit(gains, "setting", "mean", decisions)
        if res:
            for basis in ("a", "b", "all"):
                chosen = res[f"chosen_on_{basis}"]
                params = other[other["setting"].astype(str) == chosen["setting"]].iloc[0]
                chosen["described"] = describe_setting(
                    params[[c for c in PP_PARAMS if c in params]].to_dict()
                )
        out["postprocess"] = res
    out["ensemble"] = _points(ensemble) if ensemble else None
    return out


def _points(obj):
    """Fractions -> points, in nested dicts; names (the members, the decisions' basis) stay."""
    if isinstance(obj, dict):
        return {k: _points(v) for k, v in obj.items()}
    return obj * 100.0 if isinstance(obj, (int, float)) and not isinstance(obj, bool) else obj


def describe_setting(params: dict) -> str:
    """A post-processing setting by its values, as a reader names it (not by its id)."""
    p = {k: v for k, v in params.items() if not pd.isna(v)}
    parts = [f"sigma {p['sigma']:g}"] if "sigma" in p else []
    if "max_seg_num" in p:
        parts.append(f"max_seg_num {int(p['max_seg_num'])}")
    if "multiclass" in p:
        agnostic = str(p["multiclass"]).lower() in ("false", "0")
        parts.append("class-agnostic" if agnostic else "per class")
        if agnostic and float(p.get("voting_thresh", 0) or 0) > 0:
            parts.append(f"score voting at IoU {float(p['voting_thresh']):g}")
    for key in ("method", "min_score", "video_topk", "video_thresh"):
        if key in p:
            parts.append(f"{key} {p[key]:g}" if isinstance(p[key], float) else f"{key} {p[key]}")
    return ", ".join(parts)


def reported_checks(cfgs: pd.DataFrame, vs: pd.DataFrame, reported: dict, baseline_id: str):
    """The study's baseline and control arm against figures reported elsewhere (points): the
    seeds' mean and interval, the difference, and whether the interval holds the figure."""
    out = {}
    base = cfgs[cfgs["config_id"] == baseline_id]
    for role, fig in (reported or {}).items():
        if role == "baseline":
            rows = base
        else:  # the control: the baseline's variants with the control's changed
            want = dict(_variants(cfgs, baseline_id) if not base.empty else {}, **fig["variants"])
            want = pd.Series({f"v_{axis}": var for axis, var in want.items()}, dtype=object)
            rows = cfgs[(cfgs[list(want.index)] == want).all(axis=1)]
        rec = {"reported": fig["average_mAP"], "source": fig["source"], "config_id": None}
        if not rows.empty:
            r = rows.iloc[0]
            rec.update(_config(r))
            ci = rec["ci"]
            inside = all(np.isfinite(ci)) and ci[0] <= fig["average_mAP"] <= ci[1]
            rec["diff"] = r["mean"] - fig["average_mAP"]
            rec["verdict"] = (
                "no interval (one seed)" if not all(np.isfinite(ci))
                else "consistent (inside the seeds' interval)" if inside
                else ("above" if rec["diff"] > 0 else "below") + " the seeds' interval"
            )  # fmt: skip
            rec["per_tiou"] = {
                k: {"reported": v, "study": r.get(f"mean_{k}", math.nan)}
                for k, v in fig.get("per_tiou", {}).items()
            }
            if role != "baseline" and (gap := _gain(vs, r["config_id"])):
                rec["minus_baseline"] = gap
        out[role] = rec
    return out


def write(analysis: Analysis, out_dir: str | Path) -> list[Path]:
    """configs.tsv, vs_baseline.tsv, claims.tsv, inert.tsv, headline.json (each atomic)."""
    out_dir = Path(out_dir)
    written = []
    for name in ("configs", "vs_baseline", "claims", "inert"):
        path = out_dir / f"{name}.tsv"
        with atomic_path(path) as tmp:
            getattr(analysis, name).to_csv(
                tmp, sep="\t", index=False, float_format="%.4f", na_rep="NaN"
            )
        written.append(path)
    write_json(analysis.headline, out_dir / "headline.json")
    written.append(out_dir / "headline.json")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tadsweep.report.stats",
        description="Aggregates, paired differences to the baseline and claim verdicts "
        "(average-mAP points) from summary.tsv.",
    )
    add = ap.add_argument
    add("summary", help="results/<study>/summary.tsv")
    add("--out-dir", required=True, help="folder for the TSV tables and headline.json")
    add("--study-json", help="study.json: baseline_config_id, warnings, claims, study")
    add("--baseline", help="baseline config_id (default: study.json, else p1/base)")
    add("--claims", help="JSON list of claims (default: study.json's; none without it)")
    add("--ensemble", help="ensemble.tsv (optional)")
    add("--ensemble-crossfit", help="the ensemble's --crossfit-out JSON (optional)")
    add("--n-boot", type=int, default=DEFAULT_N_BOOT)
    add("--seed", type=int, default=DEFAULT_SEED)
    add("--matches", nargs="*", default=[], help="runs' matches.npz (video intervals)")
    add("--best-matches", nargs="*", default=[], help="runs' matches_best.npz (video intervals)")
    add("--ensemble-matches", help="the ensemble's matches.npz (video interval)")
    add("--video-resamples", type=int, default=vboot.DEFAULT_N_RESAMPLES)
    args = ap.parse_args(argv)
    inputs = [args.summary, args.study_json, args.claims, args.ensemble, args.ensemble_crossfit]
    inputs += [args.matches, args.best_matches, args.ensemble_matches]
    cli.check_outputs(inputs, [], [args.out_dir])

    def read(path):
        return readers.read_json(path) if path else None

    try:
        study = read(args.study_json) or {}
        claims = read(args.claims) if args.claims else study.get("claims", [])  # [] is no claim
        name = study.get("study", "")
        summary = read_summary(args.summary)
        run_ids = summary["run_id"].unique()
        res = analyze(
            summary,
            args.baseline or study.get("baseline_config_id") or "p1/base",
            claims=claims,
            warnings=study.get("warnings", []),
            ensemble=read_ensemble(args.ensemble),
            study=name.get("name", "") if isinstance(name, dict) else str(name),
            n_boot=args.n_boot,
            seed=args.seed,
            reported=study.get("reported"),
            matches=vboot.match_files(args.matches, run_ids),
            best_matches=vboot.match_files(args.best_matches, run_ids),
            ensemble_matches=args.ensemble_matches,
            video_resamples=args.video_resamples,
            crossfit=bool(study.get("selection", {}).get("crossfit", True)),
            ensemble_crossfit=read(args.ensemble_crossfit),
        )
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the study files: {exc}") from None
    res.headline["spend"] = ledger.headline_spend(summary, study)
    write(res, args.out_dir)
    return 0


if __name__ == "__main__":
    cli.run(main)
