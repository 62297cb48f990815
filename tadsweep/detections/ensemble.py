"""Ensembles of runs from their pre-NMS candidates, with greedy forward selection.

Members are combined per video, then post-processed and evaluated as usual. ``pool`` (default):
the members' candidates concatenated in member order (as OpenTAD pools overlapping windows'
candidates before NMS), each member's scores times its weight. ``average``: first each candidate
of member m gets the weighted mean over members of their support: its own score for m; for
another member k, k's best score among candidates of the same video and label with tIoU >=
``match_iou`` (0 if none).

Greedy selection starts from the best single run and adds the member that most improves the
average mAP until none does; each step is one TSV row. ``--crossfit``: the top-k cut and every
choice use half "a" of the videos only (docs/outputs.md); ``--crossfit-out`` also selects on
half b and on all videos. ``--matches``: the chosen ensemble's matches (the row the report
states: best on its guiding videos, fewest members on ties).
"""

import argparse
import csv
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from tadsweep import cli, readers
from tadsweep.atomic import write_json
from tadsweep.detections.evaluate import (
    DEFAULT_TIOUS,
    HALVES,
    all_metric_names,
    basis_name,
    check_against_ground_truth,
    half_column,
    load_ground_truth,
    searchsorted_within,
    segment_iou,
    write_matches,
)
from tadsweep.detections.formats import Detections, concat, load_detections
from tadsweep.detections.postprocess import (
    NMSSetting,
    apply_detections,
    score,
    write_tsv,
)
from tadsweep.errors import InputError


def _keys(det: Detections, videos: dict, labels: dict) -> np.ndarray:
    """(video, label) of every row as one integer in a shared name space."""
    vmap = np.array([videos.setdefault(v, len(videos)) for v in det.videos], np.int64)
    lmap = np.array([labels.setdefault(n, len(labels)) for n in det.labels], np.int64)
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
    klo, khi = (np.searchsorted(skey, ka, side=side) for side in ("left", "right"))
    lo = searchsorted_within(sstart, klo, khi, s - length * (1 - t) / t - slack, "left")
    hi = searchsorted_within(sstart, klo, khi, s + length * (1 - t) + slack, "right")
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
        ok = segment_iou(s[rows], e[rows], b.start[cols], b.end[cols]) >= match_iou
        rows, cols = rows[ok], cols[ok]
        np.maximum.at(best_a, rows, b.score[cols])
        np.maximum.at(best_b, cols, a.score[rows])
        i0 = i1
    return best_a, best_b


def combine(
    members: list[Detections],
    weights: list[float] | None = None,
    mode: str = "pool",
    match_iou: float = 0.5,
    cache: dict | None = None,
) -> Detections:
    """Pooled pre-NMS candidates of ``members`` (module docstring). ``cache``: pairwise supports
    by members' ids, for calls with the same members and ``match_iou``."""
    weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
    if any(not np.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise InputError(f"ensemble: weights must be >= 0 and not all 0, got {weights}")
    if mode == "pool":
        scaled = [replace(d, score=d.score * w) for d, w in zip(members, weights)]
        return concat(scaled, source="ensemble")
    if mode != "average":
        raise InputError(f'ensemble: combine must be "pool" or "average", got "{mode}"')
    cache = {} if cache is None else cache

    def support(a: Detections, b: Detections) -> np.ndarray:  # tIoU is symmetric: one pass
        if (id(a), id(b)) not in cache:
            cache[id(a), id(b)], cache[id(b), id(a)] = pair_support(a, b, match_iou)
        return cache[id(a), id(b)]

    rescored = []
    for i, (a, w) in enumerate(zip(members, weights)):
        total = w * a.score
        for k, (b, wb) in enumerate(zip(members, weights)):
            if k != i:
                total = total + wb * support(a, b)
        rescored.append(replace(a, score=total / sum(weights)))
    return concat(rescored, source="ensemble")


BASES = ("all", *HALVES)  # the videos that may guide a choice


def _best(rows: list[dict], basis: str) -> dict:
    """The row chosen on ``basis``: best on its videos, fewest members on ties."""
    return max(rows, key=lambda r: (r[half_column("average_mAP", basis)], -r["step"]))


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
    metric_keys = all_metric_names(tious)
    key = half_column("average_mAP", basis)
    memo = {} if memo is None else memo
    cache: dict = {}  # pairwise supports (mode average)

    def run(chosen):
        if tuple(chosen) in memo:
            return memo[tuple(chosen)]
        parts = [members[n] for n in chosen]
        det = combine(parts, [weights[n] for n in chosen], mode, match_iou, cache)
        m = memo[tuple(chosen)] = score(gt, apply_detections(det, setting), tious)
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

    chosen, current = [best_name], singles[best_name]
    rows = [row(0, chosen, current)]
    if not forward:
        if len(names) > 1:
            rows.append(row(1, names, run(names)))
        return rows
    while len(chosen) < len(names):
        trials = [(n, run(chosen + [n])) for n in names if n not in chosen]
        name, m = max(trials, key=lambda t: t[1][key])
        if not m[key] > current[key]:
            break
        chosen, current = chosen + [name], m
        rows.append(row(len(rows), chosen, m))
    return rows


def crossfit_summary(paths: dict[str, list[dict]], decisions: str) -> dict:
    """From greedy rows per basis ("a", "b", "all"): each basis' ensemble (its best row on its
    own videos, fewest members on ties) scored on a, b and all, and the two figures (fractions)."""
    out = {"decisions": basis_name(decisions)}
    for basis, rows in paths.items():
        best = _best(rows, basis)
        scores = {b: best[half_column("average_mAP", b)] for b in BASES}
        out[f"chosen_on_{basis}"] = {"members": best["members"].split(","), **scores}
    out["honest"] = (out["chosen_on_a"]["b"] + out["chosen_on_b"]["a"]) / 2.0
    out["optimistic"] = out["chosen_on_all"]["all"]
    return out


def top_k(names, sweeps, metric: str, k: int) -> list[str]:
    """The k members whose own sweep scores best at the default setting (ties: given order)."""
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
    return [names[i] for i in sorted(range(len(names)), key=lambda i: -scores[i])[:k]]


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
        guide = half_column(args.metric, basis)
        pool[basis] = names if args.top_k is None else top_k(names, args.sweeps, guide, args.top_k)
    weights = args.weights or [1.0] * len(pool[decision])
    if len(weights) != len(pool[decision]):
        raise InputError(f"--weights: {len(weights)} weights for {len(pool[decision])} members")
    weight_of = {n: 1.0 for n in names} | dict(zip(pool[decision], weights))
    setting = NMSSetting.from_dict(readers.read_json(args.setting), source=args.setting)
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
    columns = ["step", "members", "selected_on", *all_metric_names(args.tiou)]
    columns += ["best_single_average_mAP"]
    write_tsv(args.out, paths[decision], columns)
    if args.crossfit_out:
        write_json(crossfit_summary(paths, decision), args.crossfit_out)
    if args.matches:  # the row stats.ensemble_result reports: its combination, evaluated again
        best = _best(paths[decision], decision)
        chosen = best["members"].split(",")
        parts, weights = [members[n] for n in chosen], [weight_of[n] for n in chosen]
        det = combine(parts, weights, args.combine, args.match_iou)
        out = score(gt, apply_detections(det, setting), args.tiou, matches=True)
        write_matches(out["matches"], args.matches, members=best["members"])
    return 0


if __name__ == "__main__":
    cli.run(main)
