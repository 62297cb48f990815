"""What helped, from summary.tsv's finished runs (at the default setting but for the
post-processing comparison): aggregates over seeds, paired differences to the baseline, the seed
plan's claims checked (rules: report/stats_tables.rst), headline.json; in average-mAP points."""

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tadsweep import cli, readers
from tadsweep.atomic import atomic_path, write_json
from tadsweep.detections import knobs
from tadsweep.detections.evaluate import HALVES, basis_name, half_column, tiou_columns
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

# Switches under which another knob may be inert: the knobs the inert rules of knobs.py name.
SWITCHES = knobs.switches()
DEFAULT_SEED = 0
# Run-to-run SD used when the study has no repeated seeds to estimate it: OpenTAD's maintainer
# quotes +-0.5 average mAP between identical runs (OpenTAD issue 78).
FALLBACK_RUN_SD = 0.5


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
        gh = grp.get("gpu_hours", pd.Series(dtype=float))
        rec = {
            "config_id": cid,
            "phase": grp["phase"].iloc[0] if "phase" in grp else str(cid).split("/")[0],
            **{f"v_{a}": grp[f"v_{a}"].iloc[0] for a in AXES},
            "n_seeds": int(vals.notna().sum()),
            "seeds": ",".join(str(s) for s in vals.index),
            "std": float(vals.std(ddof=1)),  # NaN with one seed
            "gpu_hours_per_run": float(gh.mean()),
            "gpu_hours_total": float(gh.sum(min_count=1)),
        }
        for col in [METRIC, *per_tiou]:  # the map_vs_tiou figure draws the tIoUs'
            sfx = "" if col == METRIC else f"_{col}"
            t = per_seed(rows, cid, col)
            rec[f"mean{sfx}"] = float(t.mean())
            rec[f"ci_low{sfx}"], rec[f"ci_high{sfx}"] = mean_interval(t, n_boot, seed)
        if "augment_policy" in grp:  # what the augment variant really runs, in words
            rec["augment_policy"] = grp["augment_policy"].iloc[0]
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


def verdict(diff: float, lo: float, hi: float, low: float, high: float) -> tuple[str, str]:
    """(verdict, note) by the rule of report/stats_tables.rst; notes flag harm and overshoot."""
    if not np.isfinite(diff):
        return "inconclusive", "no data"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive", "no interval (fewer than 2 pairs)"
    if lo > 0 and diff >= low:
        return "confirmed", "gain above the claimed range" if diff > high else ""
    note = "harmful: the whole interval is below 0" if hi < 0 else ""
    return ("not confirmed" if hi < low else "inconclusive"), note


def _variants(cfgs: pd.DataFrame, cid: str) -> dict:
    row = cfgs.loc[cfgs["config_id"] == cid].iloc[0]
    return {a: row[f"v_{a}"] for a in AXES}


def _axis_comparison(summary, cfgs, claim, baseline_config_id, n_boot, seed) -> dict:
    """Best variant of the axis against the baseline variant, other axes held equal if any pair
    of configurations allows it; else against the baseline, naming what else differs."""
    axis = claim["axis"]
    if baseline_config_id not in set(cfgs["config_id"]):
        return {"note": f"baseline {baseline_config_id} has no finished run"}
    base_v = _variants(cfgs, baseline_config_id)
    cands = cfgs[cfgs[f"v_{axis}"] != base_v[axis]]
    if claim.get("variant"):
        cands = cands[cands[f"v_{axis}"] == claim["variant"]]
    if cands.empty:
        return {"note": f"no configuration varies {axis} (baseline variant {base_v[axis]})"}
    others = [a for a in AXES if a != axis]
    held = [f"v_{a}" for a in others]
    pairs = []  # (candidate row, reference config_id, confounding axes)
    for _, c in cands.iterrows():
        refs = (cfgs[held] == c[held]).all(axis=1) & (cfgs[f"v_{axis}"] == base_v[axis])
        if ids := list(cfgs.loc[refs, "config_id"]):
            same_phase = [r for r in ids if r.split("/")[0] == str(c["config_id"]).split("/")[0]]
            ref = baseline_config_id if baseline_config_id in ids else (same_phase or ids)[0]
            pairs.append((c, ref, []))
    if not pairs:
        for _, c in cands.iterrows():
            pairs.append((c, baseline_config_id, [a for a in others if c[f"v_{a}"] != base_v[a]]))
    # The best candidate by mean over seeds; ties go to the first config_id (sorted table).
    c, ref, confounded = max(pairs, key=lambda p: np.nan_to_num(p[0]["mean"], nan=-np.inf))
    cid = c["config_id"]
    rows = done_default(summary)
    res = paired_difference(per_seed(rows, cid), per_seed(rows, ref), n_boot, seed)
    notes = [f"confounded: also differs in {', '.join(confounded)}"] if confounded else []
    if len(pairs) > 1:
        notes.append(f"best of {len(pairs)} candidates (selected on the same data: biased up)")
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


def ensemble_result(ensemble: pd.DataFrame | None) -> dict | None:
    """The greedy step with the highest average mAP (fewest members on ties) vs the best run."""
    if ensemble is None or ensemble.empty or ensemble[METRIC].notna().sum() == 0:
        return None
    by, basis = METRIC, "all"  # the step is chosen on the videos that chose the members
    if "selected_on" in ensemble and str(ensemble["selected_on"].iloc[0]) in HALVES:
        basis = str(ensemble["selected_on"].iloc[0])
        by = half_column(METRIC, basis)
    best = ensemble.sort_values([by, "step"], ascending=[False, True]).iloc[0]
    single = pd.to_numeric(ensemble["best_single_average_mAP"], errors="coerce").dropna()
    single_v = float(single.iloc[0]) * 100.0 if not single.empty else math.nan
    members = str(best["members"])
    return {
        "average_mAP": float(best[METRIC]) * 100.0,
        "step": int(best["step"]),
        "members": members,
        # 1: no ensemble beat the best single run on the videos that chose (fewest wins ties)
        "n_members": len([m for m in members.split(",") if m]),
        "best_single_average_mAP": single_v,
        "gain": float(best[METRIC]) * 100.0 - single_v,
        "chosen_on": basis_name(basis),
    }


def _ensemble_comparison(cfgs, ensemble) -> dict:
    """One ensemble against one best run: no seeds to resample. The interval is d +- 1.96 *
    sqrt(2) * s, s the run-to-run SD pooled over configurations with repeated seeds (else
    FALLBACK_RUN_SD): both numbers are single trained-model outcomes, each about that noisy."""
    ens = ensemble_result(ensemble)
    if ens is None:
        return {"note": "no ensemble results"}
    dof = (cfgs["n_seeds"] - 1).clip(lower=0)
    if dof.sum():
        sd = math.sqrt((dof * cfgs["std"].fillna(0) ** 2).sum() / dof.sum())
        source = "pooled seed SD"
    else:
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
        rec = {k: res.get(k, math.nan) for k in CLAIM_COLUMNS}
        low, high = float(claim["low"]), float(claim["high"])
        v, why = verdict(rec["diff"], rec["diff_ci_low"], rec["diff_ci_high"], low, high)
        note = "; ".join(n for n in (res.get("note", ""), why) if n)
        out.append(rec | {"verdict": v, "note": note} | {k: claim[k] for k in CLAIM_COLUMNS[:4]})
    tab = pd.DataFrame(out, columns=CLAIM_COLUMNS)
    for col in ("n_pairs", "n_candidates"):
        tab[col] = pd.to_numeric(tab[col], errors="coerce").astype("Int64")
    return tab


def observed_inert(summary: pd.DataFrame, tol: float = 1e-9) -> list[str]:
    """Post-processing knobs the data show to do nothing: a parameter whose values never change
    any metric when everything else is equal (always, or when a switch like multiclass is set)."""
    out = []
    rows = summary[summary["status"] == "done"]
    metrics = [c for c in [METRIC, *tiou_columns(rows.columns)] if c in rows.columns]
    present = [p for p in PP_PARAMS if p in rows.columns]
    for p in present:
        keys = ["run_id", *[q for q in present if q != p]]
        grouped = rows.groupby(keys, dropna=False)
        varied = grouped[p].nunique(dropna=False) > 1
        spread = (grouped[metrics].max() - grouped[metrics].min())[varied]
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
    out = {k: row[k] for k in ("config_id", "mean", "std")}
    return out | {"n_seeds": int(row["n_seeds"]), "ci": [row["ci_low"], row["ci_high"]]}


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
    headline: dict


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
    """``matches``, ``best_matches`` (run id -> its matches.npz, matches_best.npz) and
    ``ensemble_matches`` add intervals over videos to the first screen's gains (vboot.annotate)."""
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
    head = {
        "study": study,
        "metric": "average-mAP points, final epoch, default soft-NMS",
        "bootstrap": {"n_boot": n_boot, "seed": seed, "level": LEVEL, "kind": "percentile"},
        **dict.fromkeys(("baseline", "best")),
        "ensemble": ensemble_result(ensemble),
        "postprocess": None,
        "gpu_hours": float(runs.get("gpu_hours", pd.Series(dtype=float)).sum()),
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
    pp = claim_tab[claim_tab["axis"] == "postprocess"]  # the first claim's, else all runs'
    pp_row = pp.iloc[0].to_dict() if len(pp) else _postprocess_comparison(summary, {}, n_boot, seed)
    if np.isfinite(pp_row.get("diff", math.nan)):
        chosen = summary[summary["setting"].astype(str) == str(pp_row["candidate"])]
        head["postprocess"] = {
            "setting": pp_row["candidate"],
            "described": describe_setting(chosen.iloc[0]),
            "diff": pp_row["diff"],
            "ci": [pp_row["diff_ci_low"], pp_row["diff_ci_high"]],
            "n_runs": int(pp_row["n_pairs"]),
        }
    head["reported"] = reported_checks(cfgs, vs, reported or {}, baseline_config_id)
    if matches:
        vboot.annotate(head, claim_tab, summary, claims, matches, baseline_config_id,
                       video_resamples, seed, best_matches, ensemble, ensemble_matches)  # fmt: skip
    head["crossfit"] = crossfit_figures(summary, crossfit, ensemble_crossfit)
    return Analysis(cfgs, vs, claim_tab, inert_tab, _clean(head))


def _bases(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame's metric on all videos and each half, in points, as select.crossfit reads them."""
    out = {"score": frame[METRIC] * 100.0}
    out.update({f"score_{h}": frame[half_column(METRIC, h)] * 100.0 for h in HALVES})
    return pd.DataFrame(out, index=frame.index)


def crossfit_figures(summary: pd.DataFrame, on_a: bool, ensemble: dict | None) -> dict | None:
    """Honest beside optimistic figures (docs/outputs.md, cross-fitted selection), in points, for
    the best configuration (mean over seeds, default setting), the best post-processing setting
    (mean gain over the default per run) and the ensemble (from its --crossfit-out). None for a
    summary without per-half columns."""
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
        for basis in ("a", "b", "all") if res else ():
            chosen = res[f"chosen_on_{basis}"]
            row = other[other["setting"].astype(str) == chosen["setting"]].iloc[0]
            chosen["described"] = describe_setting(row)
        out["postprocess"] = res
    out["ensemble"] = _points(ensemble) if ensemble else None
    return out


def _points(obj):
    """Fractions -> points, in nested dicts; names (the members, the decisions' basis) stay."""
    if isinstance(obj, dict):
        return {k: _points(v) for k, v in obj.items()}
    return obj * 100.0 if isinstance(obj, (int, float)) and not isinstance(obj, bool) else obj


def describe_setting(row: pd.Series) -> str:
    """A post-processing setting (a summary row) by its values, as a reader names it."""
    p = {k: row[k] for k in PP_PARAMS if k in row and not pd.isna(row[k])}
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
    for role, fig in reported.items():
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
            rec["diff"] = r["mean"] - fig["average_mAP"]
            rec["verdict"] = (
                "no interval (one seed)" if not all(np.isfinite(ci))
                else "consistent (inside the seeds' interval)"
                if ci[0] <= fig["average_mAP"] <= ci[1]
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


def write(analysis: Analysis, out_dir: str | Path) -> None:
    """configs.tsv, vs_baseline.tsv, claims.tsv, inert.tsv, headline.json (each atomic)."""
    for name in ("configs", "vs_baseline", "claims", "inert"):
        with atomic_path(Path(out_dir) / f"{name}.tsv") as tmp:
            table = getattr(analysis, name)
            table.to_csv(tmp, sep="\t", index=False, float_format="%.4f", na_rep="NaN")
    write_json(analysis.headline, Path(out_dir) / "headline.json")


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

    # readers word unreadable files as InputError; cli.status words any other OSError
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
    res.headline["spend"] = ledger.headline_spend(summary, study)
    write(res, args.out_dir)
    return 0


if __name__ == "__main__":
    cli.run(main)
