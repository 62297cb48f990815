"""Plain-loop reference of OpenTAD's evaluation and post-processing, for tests only.

Written from OpenTAD's semantics (``opentad/evaluations/mAP.py`` and
``opentad/models/utils/post_processing/nms/``) as straightforward loops, one element at a time,
so it is obviously right and slow. Float32 arithmetic uses numpy float32 scalars (IEEE, like the
C++ ``float`` code); ``std::exp(float)`` is the C library's ``expf`` called through ctypes;
unstable sorts call the same library function OpenTAD calls (``torch.sort``, ``np.argsort``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json

import numpy as np
import torch

F32 = np.float32
_libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
_libm.expf.restype = ctypes.c_float
_libm.expf.argtypes = [ctypes.c_float]


def c_expf(x) -> np.float32:
    return F32(_libm.expf(float(x)))


# ----------------------------------------------------------------------------- NMS


def softnms_cpp(x1, x2, scores, iou_threshold, sigma, min_score, method, t1, t2):
    """The C++ soft-NMS loop: returns (inds, dets) with dets rows (x1, x2, score)."""
    x1 = [F32(v) for v in x1]
    x2 = [F32(v) for v in x2]
    sc = [F32(v) for v in scores]
    areas = [(b - a) + F32(1e-6) for a, b in zip(x1, x2)]
    iou_threshold, sigma, min_score = F32(iou_threshold), F32(sigma), F32(min_score)
    t1, t2 = F32(t1), F32(t2)
    n = len(x1)
    inds = list(range(n))
    dets = []
    i = 0
    while i < n:
        max_score, max_pos = sc[i], i
        for pos in range(i + 1, n):
            if max_score < sc[pos]:
                max_score, max_pos = sc[pos], pos
        ix1, ix2, iscore, iarea, iind = (
            x1[max_pos],
            x2[max_pos],
            sc[max_pos],
            areas[max_pos],
            inds[max_pos],
        )
        dets.append((ix1, ix2, iscore))
        x1[max_pos], x2[max_pos], sc[max_pos] = x1[i], x2[i], sc[i]
        areas[max_pos], inds[max_pos] = areas[i], inds[i]
        x1[i], x2[i], sc[i], areas[i], inds[i] = ix1, ix2, iscore, iarea, iind
        pos = i + 1
        while pos < n:
            xx1 = max(ix1, x1[pos])
            xx2 = min(ix2, x2[pos])
            inter = max(F32(0.0), xx2 - xx1)
            ovr = inter / (iarea + areas[pos] - inter)
            weight = F32(1.0)
            if method == 0:
                if ovr >= iou_threshold:
                    weight = F32(0.0)
            elif method == 1:
                if ovr >= iou_threshold:
                    weight = F32(1.0) - ovr
            elif method == 2 or method == 3 and ovr >= (t1 + t2 * iarea):
                weight = c_expf(-(ovr * ovr) / sigma)
            sc[pos] = sc[pos] * weight
            if sc[pos] < min_score:
                x1[pos], x2[pos], sc[pos] = x1[n - 1], x2[n - 1], sc[n - 1]
                areas[pos], inds[pos] = areas[n - 1], inds[n - 1]
                n -= 1
                pos -= 1
            pos += 1
        i += 1
    return inds[:n], dets[:n]


def nms_cpp(x1, x2, scores, iou_threshold):
    """The C++ hard NMS: kept indices in torch.sort(descending) order."""
    x1 = [F32(v) for v in x1]
    x2 = [F32(v) for v in x2]
    areas = [(b - a) + F32(1e-6) for a, b in zip(x1, x2)]
    thr = F32(iou_threshold)
    order = torch.sort(torch.tensor(np.asarray(scores, F32)), descending=True).indices.tolist()
    select = [True] * len(order)
    for _i in range(len(order)):
        if not select[_i]:
            continue
        i = order[_i]
        for _j in range(_i + 1, len(order)):
            if not select[_j]:
                continue
            j = order[_j]
            inter = max(F32(0.0), min(x2[i], x2[j]) - max(x1[i], x1[j]))
            ovr = inter / (areas[i] + areas[j] - inter)
            if ovr >= thr:
                select[_j] = False
    return [order[k] for k in range(len(order)) if select[k]]


def seg_voting(kept, all_segs, all_scores, thresh):
    """Score-weighted mean of the pre-NMS segments with IoU >= thresh: OpenTAD's dense float32
    torch computation (its row sums and matrix product are torch's reduction and BLAS order)."""
    k = torch.tensor(np.asarray(kept, F32).reshape(-1, 2))
    a = torch.tensor(np.asarray(all_segs, F32).reshape(-1, 2))
    w = torch.tensor(np.asarray(all_scores, F32))
    ek, ea = k[:, None].expand(len(k), len(a), 2), a[None, :].expand(len(k), len(a), 2)
    left = torch.maximum(ek[:, :, 0], ea[:, :, 0])
    right = torch.minimum(ek[:, :, 1], ea[:, :, 1])
    inter = (right - left).clamp(min=0)
    iou = inter / ((ek[:, :, 1] - ek[:, :, 0]) + (ea[:, :, 1] - ea[:, :, 0]) - inter)
    weights = (iou >= thresh).to(w.dtype) * w[None, :]
    weights /= torch.sum(weights, dim=1, keepdim=True)
    return [tuple(F32(x) for x in row) for row in (weights @ a).numpy()]


def batched_nms(segs, scores, labels, setting):
    """OpenTAD's batched_nms on one video's float32 candidates; labels are per-video ints."""
    s = setting
    segs = [(F32(a), F32(b)) for a, b in segs]
    scores = [F32(v) for v in scores]
    if not segs:
        return [], [], []

    def one(idx):
        x1 = [segs[k][0] for k in idx]
        x2 = [segs[k][1] for k in idx]
        sc = [scores[k] for k in idx]
        if s["use_soft_nms"]:
            inds, dets = softnms_cpp(
                x1,
                x2,
                sc,
                s["iou_threshold"],
                s["sigma"],
                s["min_score"],
                s["method"],
                s["t1"],
                s["t2"],
            )
            m = len(inds) if s["max_seg_num"] <= 0 else min(len(inds), s["max_seg_num"])
            return (
                [(d[0], d[1]) for d in dets[:m]],
                [d[2] for d in dets[:m]],
                [idx[k] for k in inds[:m]],
            )
        keep = list(range(len(idx)))
        if s["min_score"] > 0:
            keep = [k for k in keep if sc[k] > F32(s["min_score"])]
        kept = nms_cpp(
            [x1[k] for k in keep], [x2[k] for k in keep], [sc[k] for k in keep], s["iou_threshold"]
        )
        kept = [keep[k] for k in kept]
        if s["max_seg_num"] > 0:
            kept = kept[: s["max_seg_num"]]
        return [(x1[k], x2[k]) for k in kept], [sc[k] for k in kept], [idx[k] for k in kept]

    new_segs, new_scores, new_src = [], [], []
    if s["multiclass"]:
        for c in sorted(set(labels)):
            idx = [k for k in range(len(labels)) if labels[k] == c]
            a, b, c_ = one(idx)
            new_segs += a
            new_scores += b
            new_src += c_
    else:
        new_segs, new_scores, new_src = one(list(range(len(segs))))
        if s["voting_thresh"] > 0:
            new_segs = seg_voting(new_segs, segs, scores, s["voting_thresh"])
    order = torch.sort(torch.tensor(np.asarray(new_scores, F32)), descending=True).indices.tolist()
    order = order[: min(s["max_seg_num"], len(order))]
    return [new_segs[k] for k in order], [new_scores[k] for k in order], [new_src[k] for k in order]


DEFAULTS = dict(
    iou_threshold=0.0,
    min_score=0.0,
    max_seg_num=100,
    use_soft_nms=True,
    multiclass=True,
    sigma=0.5,
    voting_thresh=0.0,
    method=2,
    t1=0.0,
    t2=0.0,
)


def post_process(results: dict, setting: dict) -> dict:
    """OpenTAD's gather_ddp_results NMS step for every video (no pre-NMS filter)."""
    s = {**DEFAULTS, **setting}
    out = {}
    for video, entries in results.items():
        class_idx = []
        labels = []
        for d in entries:
            if d["label"] not in class_idx:
                class_idx.append(d["label"])
            labels.append(class_idx.index(d["label"]))
        segs = [d["segment"] for d in entries]
        scores = [d["score"] for d in entries]
        new_segs, new_scores, src = batched_nms(segs, scores, labels, s)
        out[video] = [
            {
                "segment": [round(float(a), 2), round(float(b), 2)],
                "label": class_idx[labels[k]],
                "score": round(float(sc), 4),
            }
            for (a, b), sc, k in zip(new_segs, new_scores, src)
        ]
    return out


# ----------------------------------------------------------------------------- evaluation


def remove_duplicate_annotations(ants, tol=1e-3):
    valid = []
    for ev in ants:
        s, e, lab = ev["segment"][0], ev["segment"][1], ev["label"]
        if e - s <= 0:
            continue
        dup = False
        for p in valid:
            if (
                abs(s - p["segment"][0]) <= tol
                and abs(e - p["segment"][1]) <= tol
                and lab == p["label"]
            ):
                dup = True
                break
        if not dup:
            valid.append(ev)
    return valid


def segment_iou(target, candidates):
    tt1 = np.maximum(target[0], candidates[:, 0])
    tt2 = np.minimum(target[1], candidates[:, 1])
    inter = (tt2 - tt1).clip(0)
    union = (candidates[:, 1] - candidates[:, 0]) + (target[1] - target[0]) - inter
    return inter.astype(float) / union.clip(1e-8)


def interpolated_prec_rec(prec, rec):
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    for i in range(len(mprec) - 1)[::-1]:
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    return np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])


def average_precision(gt_rows, pred_rows, tious):
    """gt_rows: [(video, s, e)]; pred_rows: [(video, s, e, score)] in file order."""
    npos = float(len(gt_rows))
    lock = np.ones((len(tious), len(gt_rows))) * -1
    scores = np.array([p[3] for p in pred_rows], dtype=np.float64)
    order = scores.argsort()[::-1]
    preds = [pred_rows[k] for k in order]
    tp = np.zeros((len(tious), len(preds)))
    fp = np.zeros((len(tious), len(preds)))
    by_video = {}
    for k, g in enumerate(gt_rows):
        by_video.setdefault(g[0], []).append(k)
    for idx, p in enumerate(preds):
        if p[0] not in by_video:
            fp[:, idx] = 1
            continue
        gidx = by_video[p[0]]
        cand = np.array([[gt_rows[k][1], gt_rows[k][2]] for k in gidx], dtype=np.float64)
        tiou = segment_iou(np.array([p[1], p[2]], dtype=np.float64), cand)
        sorted_idx = tiou.argsort()[::-1]
        for t, thr in enumerate(tious):
            for j in sorted_idx:
                if tiou[j] < thr:
                    fp[t, idx] = 1
                    break
                if lock[t, gidx[j]] >= 0:
                    continue
                tp[t, idx] = 1
                lock[t, gidx[j]] = idx
                break
            if fp[t, idx] == 0 and tp[t, idx] == 0:
                fp[t, idx] = 1
    ap = np.zeros(len(tious))
    for t in range(len(tious)):
        this_tp = np.cumsum(tp[t, :]).astype(float)
        this_fp = np.cumsum(fp[t, :]).astype(float)
        rec = this_tp / npos
        prec = this_tp / (this_tp + this_fp)
        ap[t] = interpolated_prec_rec(prec, rec)
    return ap


def evaluate(database: dict, results: dict, subset="validation", tious=(0.3, 0.4, 0.5, 0.6, 0.7)):
    classes = {}
    gt = []
    for video, v in database.items():
        if v["subset"] != subset:
            continue
        for ann in remove_duplicate_annotations(v["annotations"]):
            if ann["label"] not in classes:
                classes[ann["label"]] = len(classes)
            gt.append(
                (video, float(ann["segment"][0]), float(ann["segment"][1]), classes[ann["label"]])
            )
    preds = []
    for video, entries in results.items():
        for d in entries:
            c = classes.get(d["label"], len(classes))
            preds.append((video, float(d["segment"][0]), float(d["segment"][1]), c, d["score"]))
    ap = np.zeros((len(tious), len(classes)))
    for c in range(len(classes)):
        g = [(x[0], x[1], x[2]) for x in gt if x[3] == c]
        p = [(x[0], x[1], x[2], x[4]) for x in preds if x[3] == c]
        ap[:, c] = average_precision(g, p, tious)
    maps = ap.mean(axis=1)
    out = {"average_mAP": float(maps.mean())}
    for t, m in zip(tious, maps):
        out[f"mAP@{t}"] = float(m)
    names = list(classes)
    out["per_class"] = {
        names[c]: {t: float(ap[i, c]) for i, t in enumerate(tious)} for c in range(len(names))
    }
    return out


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True)
