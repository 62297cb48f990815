"""Intervals over seeds *and* test videos for the gains on the report's first screen: each run's
matches are computed once and only re-weighted per resample (method, cost and exactness:
docs/outputs.md, "Intervals over seeds and videos"). Its CLI chooses the headline's
post-processing setting and writes a run's matches under it."""

import argparse
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tadsweep import cli, readers
from tadsweep.atomic import write_json
from tadsweep.detections.evaluate import DEFAULT_TIOUS, MATCH_KEYS, write_matches
from tadsweep.errors import InputError
from tadsweep.report import bootstrap, tables

DEFAULT_N_RESAMPLES = 2000
LEVEL = bootstrap.LEVEL
BATCH = 250  # resamples per matrix product: bounds memory to ~ TPs x BATCH doubles per run


@dataclass
class RunMatches:
    """One run's matches, arranged for re-weighting: cumFP at every TP is one matrix product."""

    source: str
    videos: tuple
    n_tiou: int
    gt_count: np.ndarray  # (videos, classes)
    segments: list  # (threshold, class, lo, hi): that class's TPs, in ranking order
    tp_video: np.ndarray  # per TP: its video
    fp_before: np.ndarray  # TPs x (videos + 1: outside the subset): FPs ranked before each TP
    # (float32: a THUMOS-sized run is ~16k TPs x 213 videos, 14 MB)


def _load(path, keys) -> dict:
    """The arrays among ``keys`` of a matches file (``evaluate.write_matches``)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys if k in z}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a matches file ({exc})".replace("\n", " ")) from None


def read_matches(path) -> RunMatches:
    """A matches.npz, arranged for re-weighting."""
    arrays = _load(path, MATCH_KEYS)
    if missing := [k for k in MATCH_KEYS if k not in arrays]:
        raise InputError(f"{path}: not a matches file (no {', '.join(missing)})")
    return arrange(arrays, str(path))


def arrange(arrays: dict, source: str = "matches") -> RunMatches:
    """:func:`evaluate.match_arrays` output -> :class:`RunMatches`."""
    gt_count = np.asarray(arrays["gt_count"], dtype=float)
    n_vid, n_cls = gt_count.shape
    cls, tp = np.asarray(arrays["cls"]), np.asarray(arrays["tp"], dtype=bool)
    col = np.where(arrays["video"] >= 0, arrays["video"], n_vid)  # outside the subset: weight 1
    bounds = np.searchsorted(cls, np.arange(n_cls + 1))  # rows are grouped by class
    segments, tp_video, fp_before, n = [], [], [], 0
    for t in range(tp.shape[0]):
        for c in range(n_cls):
            lo, hi = bounds[c], bounds[c + 1]
            flags, vid = tp[t, lo:hi], col[lo:hi]
            k = int(flags.sum())
            if k == 0:
                continue
            gap = np.cumsum(flags) - flags  # TPs ranked before each detection
            fp = ~flags & (gap < k)
            counts = np.bincount(gap[fp] * (n_vid + 1) + vid[fp], minlength=k * (n_vid + 1))
            fp_before.append(np.cumsum(counts.reshape(k, n_vid + 1), axis=0, dtype=np.float32))
            tp_video.append(vid[flags])
            segments.append((t, c, n, n + k))
            n += k
    return RunMatches(
        source=source,
        videos=tuple(str(v) for v in arrays["videos"]),
        n_tiou=int(tp.shape[0]),
        gt_count=gt_count,
        segments=segments,
        tp_video=np.concatenate(tp_video) if tp_video else np.zeros(0, np.int64),
        fp_before=np.vstack(fp_before) if fp_before else np.zeros((0, n_vid + 1), np.float32),
    )


def average_map(run: RunMatches, weights: np.ndarray) -> np.ndarray:
    """Average mAP (fraction) of the run for every row of ``weights`` (resamples x videos)."""
    # A class's AP: the sum over its TPs, in ranking order, of w / npos(w) x the largest precision
    # at or after that TP (a run of FPs never raises the interpolated precision).
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    wx = np.hstack([w, np.ones((len(w), 1))])
    # float32: integer counts x integer weights, sums far below 2**24, are exact; half the memory
    fp = (run.fp_before @ wx.T.astype(np.float32)).astype(float)  # (TPs, resamples)
    tw = wx[:, run.tp_video].T
    npos = w @ run.gt_count  # (resamples, classes)
    ap = np.zeros((run.n_tiou, npos.shape[1], len(w)))
    for t, c, lo, hi in run.segments:
        ctp = np.cumsum(tw[lo:hi], axis=0)
        den = ctp + fp[lo:hi]
        prec = np.divide(ctp, den, out=np.zeros_like(ctp), where=den > 0)
        best_after = np.maximum.accumulate(prec[::-1], axis=0)[::-1]
        total = (tw[lo:hi] * best_after).sum(axis=0)
        ap[t, c] = np.divide(total, npos[:, c], out=np.zeros(len(w)), where=npos[:, c] > 0)
    present = (npos > 0).T  # (classes, resamples)
    with np.errstate(invalid="ignore", divide="ignore"):
        maps = ap.sum(axis=1) / present.sum(axis=0)  # (thresholds, resamples)
    return maps.mean(axis=0)


def gain_interval(
    pairs: list[tuple[RunMatches, RunMatches]],
    n_resamples: int = DEFAULT_N_RESAMPLES,
    seed: int = 0,
    unit: str = "seed",
) -> dict:
    """Mean over pairs (``unit``: seeds, runs) of candidate minus reference, in points, with its
    percentile interval over videos and pairs, each resampled by itself."""
    runs = {id(r): r for pair in pairs for r in pair}
    videos = pairs[0][0].videos
    for r in runs.values():
        if r.videos != videos:
            raise InputError(f"{r.source}: evaluated on other videos than {pairs[0][0].source}")
    n_vid = len(videos)

    def gains(draws: np.ndarray) -> np.ndarray:  # (resamples, pairs), points
        # each video's multiplicity in each resample: (resamples, videos)
        offsets = np.arange(len(draws))[:, None] * n_vid
        w = np.bincount((draws + offsets).ravel(), minlength=draws.size).reshape(draws.shape)
        score = {k: average_map(r, w) for k, r in runs.items()}
        return np.stack([score[id(a)] - score[id(b)] for a, b in pairs], axis=1) * 100.0

    def statistic(draws, picked=None):  # picked: the drawn pairs, when there are several
        d = gains(draws)
        return d.mean(axis=1) if picked is None else np.take_along_axis(d, picked, 1).mean(1)

    sizes = [n_vid] + ([len(pairs)] if len(pairs) > 1 else [])
    lo, hi = bootstrap.interval(statistic, sizes, n_resamples, seed, LEVEL, BATCH)
    return {
        "diff": float(gains(np.arange(n_vid)[None]).mean()),
        "ci": [lo, hi],
        "over": f"{unit}s and videos" if len(pairs) > 1 else f"videos (one {unit} pair)",
        "n_resamples": int(n_resamples),
        "n_videos": n_vid,
        "n_pairs": len(pairs),
    }


def match_files(paths, run_ids) -> dict[str, str]:
    """run id -> its runs/<run>/<file> among ``paths`` (matches.npz or matches_best.npz)."""
    out = {}
    for p in map(str, paths):
        parent = Path(p).parent.as_posix()
        hits = [r for r in run_ids if parent.endswith(f"runs/{r}") or parent == r]
        if len(hits) != 1:
            raise InputError(f"{p}: not the {Path(p).name} of one run of the summary")
        out[hits[0]] = p
    return out


def _postprocess(head, summary, pp_claim, best_matches, run, interval) -> dict | None:
    """The headline's best setting minus the default, paired per run over the runs the headline
    averages (finished, both settings, the claim's configuration if it names one)."""
    pp = head["postprocess"]
    if not pp or not best_matches:
        return None
    done = summary[(summary["status"] == "done") & summary["average_mAP"].notna()]
    if pp_claim.get("config_id"):
        done = done[done["config_id"] == pp_claim["config_id"]]
    default = set(done.loc[done["is_default_setting"], "run_id"])
    chosen = done[done["setting"].astype(str) == str(pp["setting"])]
    pairs = []
    for rid in sorted(default & set(chosen["run_id"])):
        path = best_matches.get(rid)
        if path is None or run(rid) is None:
            return None
        if (wrote := matches_label(path, "setting")) != str(pp["setting"]):
            raise InputError(
                f"{path}: matches of setting {wrote!r}, the headline's is {pp['setting']!r}"
            )
        pairs.append((read_matches(path), run(rid)))
    return interval(pairs, unit="run") if pairs else None


def _ensemble(head, ensemble, ensemble_matches, run, interval) -> dict | None:
    """The chosen ensemble minus the best single run (step 0's member, default setting); none
    when no ensemble beat that run (the chosen "ensemble" is that run: its gain is 0)."""
    ens = head["ensemble"]
    if not ens or ens["n_members"] == 1 or not ensemble_matches:
        return None
    if (members := matches_label(ensemble_matches, "members")) != ens["members"]:
        raise InputError(
            f"{ensemble_matches}: matches of members {members!r}, the headline's are "
            f"{ens['members']!r}"
        )
    single = run(str(ensemble.sort_values("step")["members"].iloc[0]))
    if single is None:
        return None
    res = interval([(read_matches(ensemble_matches), single)])
    return dict(res, over="videos, one ensemble vs one run")


def annotate(
    head: dict,
    claim_tab: pd.DataFrame,
    summary: pd.DataFrame,
    claims: list[dict],
    matches: dict,
    baseline_id: str,
    n_resamples: int,
    seed: int,
    best_matches: dict | None,
    ensemble: pd.DataFrame | None,
    ensemble_matches: str | None,
) -> None:
    """Add ``video_ci`` (:func:`gain_interval`) to every gain on the first screen (``head``,
    stats.analyze's; what each resamples: docs/outputs.md). ``matches``, ``best_matches``: run id
    -> its matches.npz, matches_best.npz; ``ensemble_matches``: the ensemble's matches.npz."""
    rows = tables.done_default(summary)
    interval = functools.partial(gain_interval, n_resamples=n_resamples, seed=seed)

    @functools.cache
    def run(run_id: str) -> RunMatches | None:
        return read_matches(matches[run_id]) if run_id in matches else None

    @functools.cache  # the same comparison may appear twice
    def between(candidate: str, reference: str) -> dict | None:
        """Candidate config minus reference config, paired by seed; None without matches."""
        by_seed = [
            rows[rows["config_id"] == cid].groupby("seed")["run_id"].first()
            for cid in (candidate, reference)
        ]
        both = pd.concat(by_seed, axis=1, join="inner").dropna()
        pairs = [(run(a), run(b)) for a, b in both.itertuples(index=False)]
        if not pairs or any(a is None or b is None for a, b in pairs):
            return None
        return interval(pairs)

    best = head["best"] or {}
    if best.get("gain"):
        best["gain"]["video_ci"] = between(best["config_id"], baseline_id)
    pp_claim = postprocess_claim(claims)
    pp_ci = _postprocess(head, summary, pp_claim, best_matches, run, interval)
    ens_ci = _ensemble(head, ensemble, ensemble_matches, run, interval)
    if pp_ci:
        head["postprocess"]["video_ci"] = pp_ci
    if ens_ci:
        head["ensemble"]["video_ci"] = ens_ci
    first_pp = True
    for entry, rec in zip(head["claims"], claim_tab.to_dict("records")):
        cand, ref = rec["candidate"], rec["reference"]
        if rec["axis"] == "postprocess":  # the headline's line is the first such claim's
            entry["video_ci"], first_pp = (pp_ci if first_pp else None), False
        elif rec["axis"] == "ensemble":
            entry["video_ci"] = ens_ci
        else:  # an axis claim; no candidate when nothing was compared
            comparable = isinstance(cand, str) and isinstance(ref, str)
            entry["video_ci"] = between(cand, ref) if comparable else None
    control = head["reported"].get("control") or {}
    if control.get("minus_baseline"):
        control["minus_baseline"]["video_ci"] = between(control["config_id"], baseline_id)
    head["video_bootstrap"] = {
        "n_resamples": n_resamples,
        "seed": seed,
        "level": LEVEL,
        "method": "percentile (tadsweep.report.bootstrap), videos and seed (run) pairs resampled",
        "figures": "the all-videos gains the headline states (not the cross-fitted ones)",
    }


def matches_label(path, key: str) -> str | None:
    """What a matches file was written for: "setting" (matches_best.npz), "members" (the
    ensemble's); None when it does not say."""
    label = _load(path, [key]).get(key)
    return None if label is None else str(label)


def postprocess_claim(claims: list) -> dict:
    """The first post-processing claim: the one the headline's post-processing line reports."""
    return next((c for c in claims if c.get("axis") == "postprocess"), {})


def setting_table(summary: pd.DataFrame, claim: dict):
    """Points per finished run under the default and under each other setting (of the claim's
    configuration and setting, when it names them), and the setting of the best mean gain:
    (default, table, best), or a note when there is nothing to compare."""
    rows, metric = summary[summary["status"] == "done"], tables.METRIC
    if claim.get("config_id"):
        rows = rows[rows["config_id"] == claim["config_id"]]
    default = rows[rows["is_default_setting"]].groupby("run_id")[metric].mean() * 100.0
    other = rows[~rows["is_default_setting"]]
    if default.empty or other.empty:
        return "no finished run with both the default and another setting"
    table = other.pivot_table(index="run_id", columns="setting", values=metric, aggfunc="mean")
    table = table.loc[table.index.intersection(default.index)] * 100.0
    if claim.get("setting"):
        table = table[[claim["setting"]]] if claim["setting"] in table else table.iloc[:, :0]
    if table.empty:
        return "no setting to compare with the default"
    gains = table.sub(default, axis=0).mean()
    return default, table, str(gains.idxmax()) if gains.notna().any() else str(table.columns[0])


def headline_setting(summary: pd.DataFrame, claims: list) -> str | None:
    """The setting the headline's post-processing line names, chosen as ``stats.analyze`` does:
    by the first post-processing claim, or over all finished runs without one; None when no
    run has it and the default both."""
    found = setting_table(tables.check_summary(summary), postprocess_claim(claims))
    if isinstance(found, str):
        return None
    default, table, best = found
    return best if len(pd.concat([table[best], default], axis=1, join="inner").dropna()) else None


def _choose(args) -> int:
    cli.check_outputs([args.summary, args.study_json, args.grid], [args.out])
    from tadsweep.detections.postprocess import load_grid

    grid = {d.get("setting"): d for d in load_grid(args.grid)}
    if "default" not in grid:
        raise InputError(f'{args.grid}: no setting "default"')
    study = readers.read_json(args.study_json)
    name = headline_setting(tables.read_summary(args.summary), study.get("claims", []))
    if name is not None and name not in grid:
        raise InputError(f"{args.summary}: setting {name!r} is not in {args.grid}")
    write_json(grid[name or "default"], args.out)  # no other setting: the default's matches
    return 0


def _matches(args) -> int:
    cli.check_outputs([args.gt, args.candidates, args.setting], [args.out])
    from tadsweep.detections.evaluate import check_against_ground_truth, evaluate, load_ground_truth
    from tadsweep.detections.formats import load_detections
    from tadsweep.detections.postprocess import NMSSetting, apply_detections

    obj = readers.read_json(args.setting)
    setting = NMSSetting.from_dict(obj, source=args.setting)
    gt = load_ground_truth(args.gt, args.subset)
    det = load_detections(args.candidates)
    check_against_ground_truth(gt, det)
    out = evaluate(gt, apply_detections(det, setting), args.tiou, strict=False, matches=True)
    write_matches(out["matches"], args.out, setting=str(obj.get("setting", "")))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tadsweep.report.video_bootstrap",
        description="The headline's post-processing setting, and a run's matches under it.",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("choose", help="write the headline's best setting (a grid entry) as JSON")
    c.add_argument("summary", help="summary.tsv")
    c.add_argument("--study-json", required=True, help="study.json (its claims)")
    c.add_argument("--grid", required=True, help="postprocess_settings.json")
    c.add_argument("--out", required=True, help="JSON (atomic)")
    m = sub.add_parser("matches", help="a run's matches under one setting (.npz)")
    m.add_argument("--gt", required=True, help="annotation JSON")
    m.add_argument("--candidates", required=True, help="pre-NMS candidates (.npz or JSON)")
    m.add_argument("--setting", required=True, help="JSON setting object (from choose)")
    m.add_argument("--out", required=True, help=".npz (atomic)")
    m.add_argument("--subset", default="validation")
    m.add_argument("--tiou", type=cli.fraction, nargs="+", default=list(DEFAULT_TIOUS))
    args = ap.parse_args(argv)
    return _choose(args) if args.cmd == "choose" else _matches(args)


if __name__ == "__main__":
    cli.run(main)
