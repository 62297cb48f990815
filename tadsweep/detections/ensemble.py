"""Ensembles of runs from their pre-NMS candidates, with greedy forward selection.

Two ways to combine members (per video), then the usual post-processing and evaluation:

``pool`` (default): the members' candidate lists are concatenated in member order -- exactly how
OpenTAD pools the candidates of overlapping sliding windows before its per-video NMS -- with each
member's scores multiplied by its weight (default 1). Soft-NMS then merges the redundant
detections.

``average``: consensus re-scoring, then pooling. A candidate ``c`` of member ``m`` gets the
weighted mean over members of their support for it: its own score for ``m``, and for every other
member ``k`` the best score among ``k``'s candidates of the same video and label whose tIoU with
``c`` is >= ``match_iou`` (0 when there is none). Detections found by all members keep their
score; detections only one member makes are damped by that member's weight share.

Greedy forward selection starts from the best single run, adds the member that most improves the
average mAP and stops when no addition improves it; each step is one TSV row.

Cross-fitting (``--crossfit``): the top-k cut and every greedy choice look at the average mAP on
half "a" of the evaluation videos only (``evaluate.split_halves``); ``selected_on`` names the
videos that guided the rows. ``--crossfit-out`` also runs the selection on half b and on all
videos (one evaluation gives all three figures; combinations are evaluated once) and writes each
choice scored on a, b and all, with the honest figure (the a-choice on b and the b-choice on a,
averaged) and the optimistic one (chosen and scored on all videos).

``--matches``: the chosen ensemble's per-detection matches (the row the report states: best on the
videos that guided it, fewest members on ties), for the report's intervals over videos
(tadsweep.report.video_bootstrap).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from tadsweep import cli, readers
from tadsweep.atomic import write_json
from tadsweep.detections.evaluate import (
    DEFAULT_TIOUS,
    HALVES,
    check_against_ground_truth,
    evaluate,
    half_column,
    half_metric_names,
    load_ground_truth,
    metric_names,
    write_matches,
)
from tadsweep.detections.formats import Detections, concat, load_detections
from tadsweep.detections.postprocess import NMSSetting, apply_detections, write_tsv
from tadsweep.errors import InputError


def _scaled(det: Detections, weight: float) -> Detections:
    if weight == 1.0:
        return det
    return Detections(
        list(det.videos),
        det.offsets,
        det.start,
        det.end,
        det.score * weight,
        det.label,
        list(det.labels),
        det.source,
    )


def _keys(det: Detections, videos: dict, labels: dict) -> np.ndarray:
    """(video, label) of every row as one integer in a shared name space."""
    vmap = np.array([videos.setdefault(v, len(videos)) for v in det.videos] + [0], np.int64)
    lmap = np.array([labels.setdefault(n, len(labels)) for n in det.labels] + [0], np.int64)
    if len(det) == 0:
        return np.zeros(0, np.int64)
    return vmap[det.video_of_row] * (1 << 20) + lmap[det.label]


def pair_support(a: Detections, b: Detections, match_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """For every row of ``a``, the best score of ``b``'s rows of the same video and label with
    tIoU >= ``match_iou`` (0 if none), and the same for every row of ``b`` from ``a``."""
    videos: dict = {}
    labels: dict = {}
    ka, kb = _keys(a, videos, labels), _keys(b, videos, labels)
    best_a, best_b = np.zeros(len(a)), np.zeros(len(b))
    if len(a) == 0 or len(b) == 0:
        return best_a, best_b
    order = np.lexsort((b.start, kb))
    skey, sstart = kb[order], b.start[order]
    s, e = a.start, a.end
    length = e - s
    # tIoU >= t bounds how far apart the starts are: s_b >= s_a - len_a * (1 - t) / t (b starts
    # earlier) and s_b <= s_a + len_a * (1 - t) (b starts later); a little slack for rounding.
    t = max(match_iou, 1e-12)
    slack = 1e-9 * (1 + np.abs(s)) + 1e-6 * length
    lo = _search_pairs(skey, sstart, ka, s - length * (1 - t) / t - slack, side="left")
    hi = _search_pairs(skey, sstart, ka, s + length * (1 - t) + slack, side="right")
    cnt = np.maximum(hi - lo, 0)
    ends = np.cumsum(cnt)
    chunk = 1 << 22
    i0 = 0
    while i0 < len(a):
        # Rows [i0, i1) with at most ``chunk`` pairs (at least one row).
        i1 = max(int(np.searchsorted(ends, (ends[i0 - 1] if i0 else 0) + chunk, "right")), i0 + 1)
        c = cnt[i0:i1]
        rows = np.repeat(np.arange(i0, i1), c)
        within = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
        cols = order[np.repeat(lo[i0:i1], c) + within]
        inter = (np.minimum(e[rows], b.end[cols]) - np.maximum(s[rows], b.start[cols])).clip(0)
        union = (b.end[cols] - b.start[cols]) + (e[rows] - s[rows]) - inter
        ok = inter / union.clip(1e-8) >= match_iou
        rows, cols = rows[ok], cols[ok]
        np.maximum.at(best_a, rows, b.score[cols])
        np.maximum.at(best_b, cols, a.score[rows])
        i0 = i1
    return best_a, best_b


def _search_pairs(skey, sstart, key, value, side):
    """searchsorted over rows sorted by (key, start) for (key[i], value[i]).

    Starts are >= 0, so ``key * span + start`` with ``span`` above every start orders rows like
    (key, start); results are clipped to the row's key block.
    """
    lo = np.searchsorted(skey, key, side="left")
    hi = np.searchsorted(skey, key, side="right")
    span = float(np.max(sstart)) * 2 + 1 if len(sstart) else 1.0
    # Keys are renumbered densely so key * span stays far below 2**53.
    _, dense = np.unique(np.concatenate([skey, key]), return_inverse=True)
    dk, dq = dense[: len(skey)], dense[len(skey) :]
    flat = dk.astype(np.float64) * span + sstart
    target = dq.astype(np.float64) * span + np.clip(value, -1.0, span - 1)
    return np.clip(np.searchsorted(flat, target, side=side), lo, hi)


class SupportCache:
    """Pairwise supports between members, computed once (tIoU is symmetric: one pass per pair)."""

    def __init__(self, members: list[Detections], match_iou: float):
        self.members, self.match_iou = members, match_iou
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def get(self, i: int, k: int) -> np.ndarray:
        if (i, k) not in self._cache:
            a, b = pair_support(self.members[i], self.members[k], self.match_iou)
            self._cache[(i, k)], self._cache[(k, i)] = a, b
        return self._cache[(i, k)]


def combine(
    members: list[Detections],
    weights: list[float] | None = None,
    mode: str = "pool",
    match_iou: float = 0.5,
    cache: SupportCache | None = None,
    index: list[int] | None = None,
) -> Detections:
    """Pooled pre-NMS candidates of ``members`` (see module docstring).

    ``cache``/``index``: reuse pairwise supports across calls (``index`` gives the members'
    positions in ``cache.members``).
    """
    if not members:
        raise InputError("ensemble: no members")
    weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
    if len(weights) != len(members):
        raise InputError(f"ensemble: {len(weights)} weights for {len(members)} members")
    if any(not np.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise InputError(f"ensemble: weights must be >= 0 and not all 0, got {weights}")
    if mode == "pool":
        return concat([_scaled(d, w) for d, w in zip(members, weights)], source="ensemble")
    if mode != "average":
        raise InputError(f'ensemble: combine must be "pool" or "average", got "{mode}"')
    if cache is None:
        cache, index = SupportCache(members, match_iou), list(range(len(members)))
    total = sum(weights)
    rescored = []
    for a, (d, w) in enumerate(zip(members, weights)):
        score = w * d.score
        for b, wb in enumerate(weights):
            if b != a:
                score = score + wb * cache.get(index[a], index[b])
        rescored.append(
            Detections(
                list(d.videos), d.offsets, d.start, d.end, score / total, d.label, list(d.labels)
            )
        )
    return concat(rescored, source="ensemble")


def _score(gt, det, setting, tious):
    """Every metric on all videos and on each cross-fitting half (``a:average_mAP``, ...)."""
    m = evaluate(gt, apply_detections(det, setting), tious, strict=False, halves=True)
    for half, half_metrics in m.pop("halves").items():
        m.update({half_column(k, half): v for k, v in half_metrics.items()})
    return m


BASES = ("all", *HALVES)  # the videos that may guide a choice


def _guide(basis: str, metric: str = "average_mAP") -> str:
    return metric if basis == "all" else half_column(metric, basis)


def greedy(
    gt,
    members: dict[str, Detections],
    setting: NMSSetting,
    weights: dict[str, float] | None = None,
    mode: str = "pool",
    match_iou: float = 0.5,
    tious=DEFAULT_TIOUS,
    forward: bool = True,
    log=None,
    basis: str = "all",
    memo: dict | None = None,
) -> list[dict]:
    """Rows: step 0 = best single member; then greedy additions (or, with ``forward=False``,
    one row with all members). Every choice is made on ``basis``' average mAP ("all" videos or a
    half); ``memo`` (combination -> metrics) lets several selections share evaluations."""
    names = list(members)
    weights = {n: 1.0 for n in names} if weights is None else weights
    metric_keys = metric_names(tious) + half_metric_names(tious)
    key = _guide(basis)
    memo = {} if memo is None else memo

    cache = SupportCache([members[n] for n in names], match_iou) if mode == "average" else None

    def run(chosen):
        if tuple(chosen) in memo:
            return memo[tuple(chosen)]
        det = combine(
            [members[n] for n in chosen],
            [weights[n] for n in chosen],
            mode,
            match_iou,
            cache,
            [names.index(n) for n in chosen],
        )
        m = memo[tuple(chosen)] = _score(gt, det, setting, tious)
        if log:
            log(f"{','.join(chosen)}: average_mAP={m['average_mAP']:.4f}")
        return m

    singles = {n: run([n]) for n in names}
    best_name = max(names, key=lambda n: singles[n][key])  # first wins ties
    best_single = singles[best_name]["average_mAP"]

    def row(step, chosen, m):
        r = {"step": step, "members": ",".join(chosen), "selected_on": basis}
        r.update({k: m[k] for k in metric_keys})
        r["best_single_average_mAP"] = best_single
        return r

    chosen = [best_name]
    current = singles[best_name]
    rows = [row(0, chosen, current)]
    if not forward:
        if len(names) > 1:
            rows.append(row(1, names, run(names)))
        return rows
    step = 0
    while len(chosen) < len(names):
        trials = [(n, run(chosen + [n])) for n in names if n not in chosen]
        name, m = max(trials, key=lambda t: t[1][key])
        if not m[key] > current[key]:
            break
        step += 1
        chosen = chosen + [name]
        current = m
        rows.append(row(step, chosen, m))
    return rows


def crossfit_summary(paths: dict[str, list[dict]], decisions: str) -> dict:
    """From greedy rows per basis ("a", "b", "all"): each basis' ensemble (its best row on its
    own videos, fewest members on ties) scored on a, b and all, and the two figures (fractions)."""
    out = {"decisions": "all videos" if decisions == "all" else f"half {decisions}"}
    for basis, rows in paths.items():
        best = max(rows, key=lambda r: (r[_guide(basis)], -r["step"]))
        scores = {b: best[_guide(b)] for b in BASES}
        out[f"chosen_on_{basis}"] = {"members": best["members"].split(","), **scores}
    out["honest"] = (out["chosen_on_a"]["b"] + out["chosen_on_b"]["a"]) / 2.0
    out["optimistic"] = out["chosen_on_all"]["all"]
    return out


def top_k(names, candidates, sweeps, metric: str, k: int) -> tuple[list, list]:
    """The k members whose own sweep scores best at the default setting (ties: given order)."""
    if k < 1:
        raise InputError(f"--top-k: must be >= 1, got {k}")
    if not sweeps or len(sweeps) != len(names):
        raise InputError("--top-k needs --sweeps, one per candidates file")
    scores = []
    for sweep in sweeps:
        text = readers.read_text(sweep, readers.MAX_TSV_BYTES)  # capped: /dev/zero is one line
        try:
            rows = {r["setting"]: r for r in csv.DictReader(text.splitlines(), delimiter="\t")}
            scores.append(float(rows["default"][metric]))
        except (KeyError, ValueError, TypeError, csv.Error):
            raise InputError(f"{sweep}: no {metric} for setting 'default'") from None
    order = sorted(range(len(names)), key=lambda i: -scores[i])[:k]
    return [names[i] for i in order], [candidates[i] for i in order]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tadsweep.detections.ensemble",
        description="Combine runs' pre-NMS candidates, post-process, evaluate; greedy selection.",
    )
    parser.add_argument("--gt", required=True)
    parser.add_argument("--candidates", nargs="+", required=True)
    parser.add_argument("--names", nargs="+", help="member names (default: file names)")
    parser.add_argument("--setting", required=True, help="JSON object with NMS parameters")
    parser.add_argument("--out", required=True, help="output TSV (atomic)")
    parser.add_argument("--greedy", action="store_true", help="greedy forward selection")
    parser.add_argument(
        "--top-k",
        type=cli.config_value("ensemble.top_k"),
        help="members: the k best by their sweep's default setting",
    )
    parser.add_argument("--sweeps", nargs="+", help="with --top-k: sweep.tsv per candidates file")
    parser.add_argument("--metric", default="average_mAP", help="with --top-k (%(default)s)")
    parser.add_argument("--weights", type=float, nargs="+")
    parser.add_argument("--combine", choices=["pool", "average"], default="pool")
    parser.add_argument(
        "--crossfit",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="choose the top-k and members on half a of the videos (default: all videos)",
    )
    parser.add_argument(
        "--crossfit-out", help="JSON: the selection on a, b and all videos, honest vs optimistic"
    )
    parser.add_argument(
        "--match-iou", type=cli.fraction, default=0.5, help="tIoU for --combine average"
    )
    parser.add_argument("--matches", help=".npz: the chosen ensemble's matches (atomic)")
    parser.add_argument("--subset", default="validation")
    parser.add_argument("--tiou", type=cli.fraction, nargs="+", default=list(DEFAULT_TIOUS))
    args = parser.parse_args(argv)
    outputs = [args.out, args.crossfit_out, args.matches]
    cli.check_outputs([args.gt, args.candidates, args.setting, args.sweeps], outputs)
    names = args.names or [Path(p).name for p in args.candidates]
    if len(names) != len(args.candidates):
        raise InputError(f"--names: {len(names)} names for {len(args.candidates)} candidate files")
    if len(set(names)) != len(names):
        raise InputError(f"--names: duplicate names in {names}")
    if any("," in n for n in names):
        raise InputError("--names: names must not contain commas")
    decision = "a" if args.crossfit else "all"
    bases = BASES if args.crossfit_out else (decision,)
    if args.crossfit_out and args.weights and args.top_k is not None:
        raise InputError("--weights: not with --top-k and --crossfit-out (top k differs by basis)")
    if args.top_k is not None and args.top_k > len(names):
        print(
            f"warning: --top-k {args.top_k}, but {len(names)} runs have candidates: all "
            f"{len(names)} are the ensemble's candidates",
            file=sys.stderr,
        )
    pool = {}  # basis -> its candidate members, best first with --top-k
    for basis in bases:
        pool[basis] = list(names)
        if args.top_k is not None:
            guide = _guide(basis, args.metric)
            pool[basis] = top_k(names, args.candidates, args.sweeps, guide, args.top_k)[0]
    weights = args.weights or [1.0] * len(pool[decision])
    if len(weights) != len(pool[decision]):
        raise InputError(f"--weights: {len(weights)} weights for {len(pool[decision])} members")
    weight_of = {n: 1.0 for n in names} | dict(zip(pool[decision], weights))
    setting_obj = readers.read_json(args.setting)
    setting = NMSSetting.from_dict(setting_obj, source=args.setting)
    gt = load_ground_truth(args.gt, args.subset)
    members = {}
    for name, path in zip(names, args.candidates):
        if any(name in pool[b] for b in bases):
            det = load_detections(path)
            check_against_ground_truth(gt, det)
            members[name] = det
    memo: dict = {}
    paths = {}
    for basis in (decision, *[b for b in bases if b != decision]):
        paths[basis] = greedy(
            gt,
            {n: members[n] for n in pool[basis]},
            setting,
            weight_of,
            args.combine,
            args.match_iou,
            args.tiou,
            forward=args.greedy,
            log=lambda m: print(m, file=sys.stderr),
            basis=basis,
            memo=memo,
        )
    columns = ["step", "members", "selected_on", *metric_names(args.tiou)]
    columns += [*half_metric_names(args.tiou), "best_single_average_mAP"]
    write_tsv(args.out, paths[decision], columns)
    if args.crossfit_out:
        write_json(crossfit_summary(paths, decision), args.crossfit_out)
    if args.matches:  # the row stats.ensemble_result reports: its combination, evaluated again
        best = max(paths[decision], key=lambda r: (r[_guide(decision)], -r["step"]))
        chosen = best["members"].split(",")
        weights = [weight_of[n] for n in chosen]
        det = combine([members[n] for n in chosen], weights, args.combine, args.match_iou)
        out = evaluate(gt, apply_detections(det, setting), args.tiou, strict=False, matches=True)
        write_matches(out["matches"], args.matches, members=best["members"])
    return 0


if __name__ == "__main__":
    cli.run(main)
