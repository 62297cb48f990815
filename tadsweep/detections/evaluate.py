"""Temporal action detection mAP with exactly OpenTAD's semantics (``opentad/evaluations/mAP.py``):
the same ground-truth filtering, class index (labels in order of first appearance), greedy
matching, interpolated AP, and ties broken by the very same numpy ``argsort`` calls on the same
values in the same order. Predictions whose label is no ground-truth class are ignored; those on
videos without ground truth of their class are false positives.

The greedy loop ("each prediction, best score first, takes the unmatched ground truth of highest
tIoU >= threshold") runs in vectorized rounds: a prediction is settled once no earlier unsettled
prediction can still take its choice, which gives the identical assignment.
"""

import argparse
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from tadsweep import cli, readers
from tadsweep.detections.formats import (
    MAX_SECONDS,
    Detections,
    as_detections,
    entry_problem,
    load_detections,
    write_npz,
)
from tadsweep.errors import InputError

DEFAULT_TIOUS = (0.3, 0.4, 0.5, 0.6, 0.7)


@dataclass
class GroundTruth:
    """Ground-truth instances of one subset, after OpenTAD's filtering."""

    source: str
    classes: list[str]  # OpenTAD's activity index: labels in order of first appearance
    videos: list[str]  # videos of the subset, database order
    video: np.ndarray  # per instance: index into ``videos``
    start: np.ndarray
    end: np.ndarray
    cls: np.ndarray  # per instance: index into ``classes``
    known_videos: frozenset  # every video of the database (any subset)
    known_labels: frozenset  # every label of the database (any subset)
    durations: dict = field(default_factory=dict)  # video -> seconds, where the file gives it

    def __len__(self) -> int:
        return len(self.start)


def _dedup(annotations: list[tuple[float, float, str]], tol: float = 1e-3) -> list:
    """OpenTAD's duplicate filter: drop length <= 0, and repeats (same label, |ds|,|de| <= tol)."""
    kept: list[tuple[float, float, str]] = []
    for s, e, label in annotations:
        if e - s <= 0:
            continue
        if any(abs(s - ps) <= tol and abs(e - pe) <= tol and label == pl for ps, pe, pl in kept):
            continue
        kept.append((s, e, label))
    return kept


def _check_annotation(
    source: str, video: str, k: int, ann, duration: float | None = None
) -> tuple[float, float, str]:
    """One annotation, checked: finite, 0 <= start <= end <= MAX_SECONDS and, with a duration,
    starting by its end and ending by twice it (a duration from the features may be short)."""
    where = f"{source}: database[{json.dumps(video)}].annotations[{k}]"
    if problem := entry_problem(ann, ("segment", "label")):
        raise InputError(where + problem)
    seg = ann["segment"]
    if not all(math.isfinite(x) for x in seg):
        raise InputError(f"{where}.segment: not finite: {seg}")
    if seg[0] < 0 or seg[1] < seg[0]:  # OpenTAD would drop it silently and change the mAP
        raise InputError(f"{where}.segment: {seg} is inverted or negative (need 0 <= start <= end)")
    if seg[1] > MAX_SECONDS:
        raise InputError(
            f"{where}.segment: ends at {seg[1]:g} s, later than any video ({MAX_SECONDS:g} s)"
        )
    if duration is not None and (seg[0] > duration or seg[1] > 2 * duration):
        raise InputError(
            f"{where}.segment: {seg} lies outside the video (duration {duration:g} s: a segment "
            "starts by its end and ends by twice it)"
        )
    return seg[0], seg[1], ann["label"]


def load_ground_truth(path: str | os.PathLike, subset: str = "validation") -> GroundTruth:
    """Read an OpenTAD/ActivityNet-style annotation file and keep ``subset`` like OpenTAD."""
    source = str(path)
    data = readers.read_detections_json(path)
    if not isinstance(data, dict) or "database" not in data:
        raise InputError(f'{source}: missing key "database"')
    database = data["database"]
    if not isinstance(database, dict):
        raise InputError(f'{source}: "database" must be an object mapping video -> info')
    classes: dict[str, int] = {}
    videos: list[str] = []
    rows: list[tuple[int, float, float, int]] = []  # video, start, end, class
    known_labels: set[str] = set()
    durations: dict[str, float] = {}
    for video, info in database.items():
        where = f"{source}: database[{json.dumps(video)}]"
        if not isinstance(info, dict):
            raise InputError(f"{where}: expected an object, got {type(info).__name__}")
        if "subset" not in info:
            raise InputError(f'{where}: missing key "subset"')
        if "duration" in info:
            d = info["duration"]
            if not (type(d) in (int, float) and math.isfinite(d) and 0 < d <= MAX_SECONDS):
                raise InputError(
                    f"{where}.duration: {d!r:.40} is not a number of seconds in "
                    f"(0, {MAX_SECONDS:g}]"
                )
            durations[video] = float(d)
        anns = info.get("annotations", [])
        if not isinstance(anns, list):
            raise InputError(f"{where}.annotations: expected a list, got {type(anns).__name__}")
        limit = durations.get(video)
        parsed = [_check_annotation(source, video, k, a, limit) for k, a in enumerate(anns)]
        known_labels.update(label for _, _, label in parsed)
        if info["subset"] != subset:
            continue
        v = len(videos)
        videos.append(video)
        for s, e, label in _dedup(parsed):
            c = classes.setdefault(label, len(classes))
            rows.append((v, s, e, c))
    if not rows:
        raise InputError(f'{source}: no ground-truth instances in subset "{subset}"')
    table = np.array(rows, dtype=np.float64)
    return GroundTruth(
        source=source,
        classes=list(classes),
        videos=videos,
        video=table[:, 0].astype(np.int64),
        start=table[:, 1].copy(),
        end=table[:, 2].copy(),
        cls=table[:, 3].astype(np.int64),
        known_videos=frozenset(str(v) for v in database),
        known_labels=frozenset(known_labels),
        durations=durations,
    )


def check_against_ground_truth(gt: GroundTruth, det: Detections) -> None:
    """Refuse unknown videos or labels (OpenTAD would score them as FPs) and a segment ending past
    twice its video's duration (OpenTAD clips to the duration)."""
    for video in det.videos:
        if video not in gt.known_videos:
            raise InputError(
                f"{det.source}: results[{json.dumps(video)}]: unknown video (not in {gt.source})"
            )
    limit = np.array([gt.durations.get(v, np.inf) for v in det.videos] + [np.inf])
    past = np.flatnonzero(det.end > 2 * limit[det.video_of_row])
    if past.size:
        row, v = int(past[0]), det.video_of_row[past[0]]
        raise InputError(
            f"{det.where(row)}.segment: ends at {det.end[row]:g} s, past twice the video's "
            f"duration ({limit[v]:g} s in {gt.source})"
        )
    unknown = [i for i, name in enumerate(det.labels) if name not in gt.known_labels]
    if unknown:
        row = int(np.flatnonzero(np.isin(det.label, unknown))[0])
        name = json.dumps(det.labels[int(det.label[row])])
        raise InputError(f"{det.where(row)}.label: unknown label {name} (not in {gt.source})")


def segment_iou(ps, pe, gs, ge):
    """OpenTAD's segment_iou, elementwise, with the same float64 operation order."""
    inter = (np.minimum(pe, ge) - np.maximum(ps, gs)).clip(0)
    union = (ge - gs) + (pe - ps) - inter
    return inter.astype(float) / union.clip(1e-8)


def searchsorted_within(values, lo, hi, x, side):
    """Per query, ``lo + searchsorted(values[lo:hi], x, side)`` (each ``values[lo:hi]`` sorted)."""
    from tadsweep.detections import _evaluate  # compiled: imported where used, as in nms.py

    values, x = np.ascontiguousarray(values, np.float64), np.ascontiguousarray(x, np.float64)
    lo, hi = np.ascontiguousarray(lo, np.int64), np.ascontiguousarray(hi, np.int64)
    out = np.empty(len(x), np.int64)
    _evaluate.searchsorted_within(values, lo, hi, x, side == "right", out)
    return out


def _interpolated_ap(tp: np.ndarray, npos: float) -> float:
    """VOC-2011 interpolated AP of one class at one threshold (OpenTAD's float operations)."""
    this_tp = np.cumsum(tp).astype(float)
    this_fp = np.cumsum(1.0 - tp).astype(float)
    rec = this_tp / npos
    prec = this_tp / (this_tp + this_fp)
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def _greedy_match(n_pred: int, n_gt: int, pred, gt, pref) -> np.ndarray:
    """Sequential greedy matching in parallel rounds: a bool TP mask over predictions. Per
    candidate pair, ``pred`` is the prediction's processing rank (smaller = earlier) and ``pref``
    its preference rank for the ground truth ``gt`` (smaller = tried first)."""
    tp = np.zeros(n_pred, dtype=bool)  # also: the prediction is settled
    order = np.lexsort((pref, pred))
    pred, gt = pred[order], gt[order]
    locked = np.zeros(n_gt, dtype=bool)
    earliest = np.full(n_gt, n_pred, dtype=np.int64)
    while True:
        live = ~tp[pred] & ~locked[gt]
        if not live.any():
            return tp
        lp, lg = pred[live], gt[live]
        first = np.ones(len(lp), dtype=bool)
        first[1:] = lp[1:] != lp[:-1]  # each prediction's best remaining choice
        earliest[lg] = n_pred
        np.minimum.at(earliest, lg, lp)
        safe = first & (earliest[lg] == lp)
        tp[lp[safe]] = True
        locked[lg[safe]] = True
        # a prediction whose every candidate is locked is settled as a false positive


def evaluate(
    gt: GroundTruth,
    results,
    tious=DEFAULT_TIOUS,
    strict: bool = True,
    halves: bool = False,
    matches: bool = False,
) -> dict:
    """Average mAP, mAP per threshold and AP per class, as OpenTAD's ``mAP`` evaluator, of a
    ``{video: [entries]}`` mapping or :class:`Detections`. ``strict``: videos or labels absent
    from the annotation file raise InputError. ``halves``: ``out["halves"]``, every metric on each
    cross-fitting half. ``matches``: ``out["matches"]`` (:func:`match_arrays`)."""
    det = as_detections(results)
    if strict:
        check_against_ground_truth(gt, det)
    tious = [float(t) for t in tious]
    n_cls, n_t = len(gt.classes), len(tious)

    # Map predictions onto ground-truth classes and subset videos (-1: none).
    name_to_cls = {name: i for i, name in enumerate(gt.classes)}
    cls_of_label = np.array([name_to_cls.get(n, -1) for n in det.labels] + [-1], dtype=np.int64)
    pcls = cls_of_label[det.label]
    vid_index = {v: i for i, v in enumerate(gt.videos)}
    vid_of_det = np.array([vid_index.get(v, -1) for v in det.videos] + [-1], dtype=np.int64)
    pvid = vid_of_det[det.video_of_row]

    # Per class, OpenTAD's exact sort call on the class's scores in file order: the processing
    # order is classes one after another, best score first.
    rows_by_class = [np.flatnonzero(pcls == c) for c in range(n_cls)]
    sorted_rows = [r[det.score[r].argsort()[::-1]] for r in rows_by_class]
    class_start = np.cumsum([0] + [len(r) for r in sorted_rows])
    all_rows = np.concatenate(sorted_rows) if n_cls else np.zeros(0, np.int64)
    n_pred = len(all_rows)

    # Ground truth grouped by (class, video), each group in ground-truth file order.
    n_vid = max(len(gt.videos), 1)
    gkey = gt.cls * n_vid + gt.video
    gorder = np.argsort(gkey, kind="stable")
    gkey_sorted = gkey[gorder]
    has_gt = pvid[all_rows] >= 0
    pkey = np.where(has_gt, pcls[all_rows] * n_vid + pvid[all_rows], 0)
    # searchsorted(gkey_sorted, pkey, side) of integer keys, through a table of every key
    bounds = np.searchsorted(gkey_sorted, np.arange(n_cls * n_vid + 1), side="left")
    lo, hi = bounds[pkey], bounds[pkey + 1]

    # The pairs of the same class and video that can match: with every threshold > 0, only
    # overlapping ones, which start (within a group sorted by start) before the prediction's end
    # and after its start minus the group's longest instance (with margin).
    count = np.where(has_gt, hi - lo, 0)
    glo = lo.copy()  # each prediction's window in gorder2 (start order within the group)
    gorder2 = np.lexsort((gt.start, gkey))
    ps, pe = det.start[all_rows], det.end[all_rows]
    nan_pred = np.isnan(ps) | np.isnan(pe)
    if n_t and min(tious) > 0 and len(gorder2):
        gs2 = gt.start[gorder2]
        length = gt.end[gorder2] - gs2
        new_group = np.r_[True, gkey_sorted[1:] != gkey_sorted[:-1]]
        longest = np.maximum.reduceat(length, np.flatnonzero(new_group))
        group_of = np.cumsum(new_group) - 1
        reach = longest[group_of[np.minimum(lo, len(gs2) - 1)]]
        reach = reach * (1 + 1e-9) + 1e-9 * (1 + np.abs(ps))
        w_lo = searchsorted_within(gs2, lo, hi, ps - reach, "right")
        w_hi = searchsorted_within(gs2, lo, hi, pe, "left")
        full = nan_pred | ~has_gt
        glo = np.where(full, lo, w_lo)
        count = np.where(full, count, np.maximum(w_hi - w_lo, 0))

    pair_pred = np.repeat(np.arange(n_pred), count)
    within = np.arange(len(pair_pred)) - np.repeat(np.cumsum(count) - count, count)
    pair_gt = gorder2[np.repeat(glo, count) + within]
    tiou = segment_iou(ps[pair_pred], pe[pair_pred], gt.start[pair_gt], gt.end[pair_gt])

    # Preference rank of each candidate within its prediction: by tIoU, descending; exact ties
    # among usable ones by OpenTAD's own argsort of the prediction's full tIoU array (all ground
    # truths of its class and video, file order). NaN tIoUs (score voting on a zero-length
    # segment) pass OpenTAD's "tiou < threshold" test at every threshold: so here too.
    pref = np.zeros(len(tiou), dtype=np.int64)
    nan = np.isnan(tiou)
    usable = (tiou >= min(tious)) | nan if n_t else np.zeros(len(tiou), bool)
    if len(tiou):
        from tadsweep.detections import _evaluate

        o = np.empty(len(tiou), np.int64)  # np.lexsort((-tiou, pair_pred)); pairs grouped
        _evaluate.rank_within(np.ascontiguousarray(count, np.int64), tiou, o, pref)
        starts = np.cumsum(count) - count
        uo = o[usable[o]]
        dup = (pair_pred[uo][1:] == pair_pred[uo][:-1]) & (tiou[uo][1:] == tiou[uo][:-1])
        redo = np.union1d(pair_pred[uo][1:][dup], pair_pred[nan])
        position = np.empty(len(gorder), np.int64)  # ground truth -> place in gorder
        position[gorder] = np.arange(len(gorder))
        for p in redo:
            group = gorder[lo[p] : hi[p]]
            r = all_rows[p]
            full_tiou = segment_iou(det.start[r], det.end[r], gt.start[group], gt.end[group])
            ranks = np.empty(len(group), dtype=np.int64)
            ranks[full_tiou.argsort()[::-1]] = np.arange(len(group))
            sl = slice(int(starts[p]), int(starts[p] + count[p]))
            pref[sl] = ranks[position[pair_gt[sl]] - lo[p]]

    # Greedy matching for every threshold at once (threshold t owns its own id ranges).
    n_g = len(gt)
    thr, pair = np.nonzero((tiou >= np.array(tious, dtype=float)[:, None]) | nan)
    keys = (pair_pred[pair] + thr * n_pred, pair_gt[pair] + thr * n_g, pref[pair])
    tp_all = _greedy_match(n_pred * n_t, n_g * n_t, *keys).reshape(n_t, n_pred)

    ap = _class_aps(tp_all, class_start, gt.cls, np.ones(n_pred, bool))  # every class has some
    out = _maps(ap.mean(axis=1), tious)
    out["per_class"] = {
        name: {t: float(ap[i, c]) for i, t in enumerate(tious)} for c, name in enumerate(gt.classes)
    }
    if halves:
        out["halves"] = _half_maps(gt, pvid[all_rows], class_start, tp_all, tious)
    if matches:  # for the paired bootstrap over videos (tadsweep.report.video_bootstrap)
        pred = (pvid[all_rows], det.score[all_rows])
        out["matches"] = match_arrays(gt, tious, *pred, class_start, tp_all)
    return out


# ----------------------------------------------------------------------------- matches

MATCH_KEYS = ("tious", "videos", "classes", "gt_count", "cls", "video", "score", "tp")


def match_arrays(gt: GroundTruth, tious, pred_video, pred_score, class_start, tp_all) -> dict:
    """The evaluation's matches: detections in processing order (class by class, best score
    first) with class, subset video (-1: none), score and TP flag per threshold, and the
    ground-truth count per video and class. Matching never crosses videos, so the flags hold on
    any resample of the videos. A class's detections after its last TP are dropped: no AP uses
    precision past the last recall step."""
    n_cls = len(gt.classes)
    cls = np.repeat(np.arange(n_cls), np.diff(class_start))
    hits = np.flatnonzero(tp_all.any(axis=0))
    last = np.full(n_cls, -1)  # each class's last detection with a TP
    np.maximum.at(last, cls[hits], hits)
    keep = np.arange(len(cls)) <= last[cls]
    gt_count = np.zeros((len(gt.videos), n_cls), dtype=np.int32)
    np.add.at(gt_count, (gt.video, gt.cls), 1)
    return {
        "tious": np.asarray(tious, dtype=float),
        "videos": np.array(gt.videos, dtype=str),
        "classes": np.array(gt.classes, dtype=str),
        "gt_count": gt_count,
        "cls": cls[keep].astype(np.int32),
        "video": np.asarray(pred_video)[keep].astype(np.int32),
        "score": np.asarray(pred_score, dtype=np.float64)[keep],
        "tp": tp_all[:, keep].astype(bool),
    }


def write_matches(arrays: dict, path, **labels: str) -> None:
    """:func:`match_arrays` as an .npz, atomically, with string ``labels`` saying what it was
    written for (a setting, ensemble members)."""
    extra = {k: np.array(str(v)) for k, v in labels.items()}
    write_npz(path, {**{k: arrays[k] for k in MATCH_KEYS}, **extra})


# ----------------------------------------------------------------------------- cross-fitting

HALVES = ("a", "b")


def split_halves(videos) -> dict[str, str]:
    """The fixed cross-fitting split: video names sorted (Python's string order), even positions
    in half "a", odd ones in "b"; by the names only, so a study's runs share the halves."""
    return {v: HALVES[k % 2] for k, v in enumerate(sorted(videos))}


def basis_name(basis: str) -> str:
    """How reports name the videos a choice was made on: all, or half a / b."""
    return "all videos" if basis == "all" else f"half {basis}"


def half_column(metric: str, half: str) -> str:
    """A metric on one half, as the tables name it: ``a:average_mAP`` (a prefix, so ``mAP@t``
    columns keep their form for :func:`tiou_columns`); "all" (all videos): the metric itself."""
    return metric if half == "all" else f"{half}:{metric}"


def all_metric_names(tious=DEFAULT_TIOUS) -> list[str]:
    """The metrics on all videos, then on each half (the sweep's and ensemble's columns)."""
    names = metric_names(tious)
    return names + [half_column(m, h) for h in HALVES for m in names]


def half_columns(columns) -> list[str]:
    """The per-half metric columns among ``columns`` (``a:...``, ``b:...``), in their order."""
    return [c for c in columns if isinstance(c, str) and c[:2] in {f"{h}:" for h in HALVES}]


def _half_maps(gt: GroundTruth, pred_video, class_start, tp_all, tious) -> dict:
    """Every metric on each half: the full evaluation's matches (they never cross videos), pooled
    per class over the half's videos against its ground truth there (classes with some)."""
    split = split_halves(gt.videos)
    side = np.array([HALVES.index(split[v]) for v in gt.videos], dtype=np.int64)
    pred_side = np.where(pred_video >= 0, side[np.maximum(pred_video, 0)], -1)
    out = {}
    for h, name in enumerate(HALVES):
        ap = _class_aps(tp_all, class_start, gt.cls[side[gt.video] == h], pred_side == h)
        maps = ap.mean(axis=1) if ap.shape[1] else np.full(len(tious), np.nan)
        out[name] = _maps(maps, tious)
    return out


def _class_aps(tp_all, class_start, gt_cls, on) -> np.ndarray:
    """AP per threshold (rows) of each class with ground truth in ``gt_cls`` (columns), from the
    TP flags of the predictions where ``on``."""
    npos = np.bincount(gt_cls, minlength=len(class_start) - 1).astype(float)
    present = np.flatnonzero(npos > 0)
    ap = np.zeros((len(tp_all), len(present)))
    for j, c in enumerate(present):
        sl = slice(int(class_start[c]), int(class_start[c + 1]))
        ap[:, j] = [_interpolated_ap(tp, npos[c]) for tp in tp_all[:, sl][:, on[sl]].astype(float)]
    return ap


def _maps(maps: np.ndarray, tious) -> dict:
    """The average mAP, then the mAP per threshold."""
    return dict(zip(metric_names(tious), map(float, [maps.mean(), *maps])))


def metric_names(tious=DEFAULT_TIOUS) -> list[str]:
    return ["average_mAP"] + [f"mAP@{float(t)}" for t in tious]


def tiou_columns(columns) -> list[str]:
    """The per-threshold metric columns (``mAP@t``) among ``columns``, by threshold."""
    found = [c for c in columns if isinstance(c, str) and c.startswith("mAP@")]
    return sorted(found, key=lambda c: float(c[4:]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tadsweep.detections.evaluate",
        description="OpenTAD-identical temporal action detection mAP (prints JSON).",
    )
    parser.add_argument("ground_truth", help="annotation JSON (OpenTAD format, gzip ok)")
    parser.add_argument("predictions", help="detections (.npz, or OpenTAD's JSON, gzip ok)")
    parser.add_argument("--subset", default="validation")
    parser.add_argument("--tiou", type=cli.fraction, nargs="+", default=list(DEFAULT_TIOUS))
    args = parser.parse_args(argv)
    gt = load_ground_truth(args.ground_truth, args.subset)
    det = load_detections(args.predictions)
    print(json.dumps(evaluate(gt, det, args.tiou), indent=1))
    return 0


if __name__ == "__main__":
    cli.run(main)
