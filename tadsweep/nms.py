"""OpenTAD's 1-D NMS kernels, re-implemented bit-exactly and vectorized across groups.

OpenTAD (``opentad/models/utils/post_processing/nms/``) runs its C++ ``softnms``/``nms`` once per
group (a class of a video, or a whole video when class-agnostic). We run *all* groups of all
videos in lock-step: pass ``i`` of every group is one set of numpy operations, so Python overhead
is paid per pass, not per group and pass.

Bit-exactness, and why each detail is here:

* All arithmetic is float32 in the same operation order as the C++ code (areas ``x2-x1+1e-6``,
  ``inter/(iarea+area-inter)``, ``-(ovr*ovr)/sigma``, ``score *= weight``).
* ``std::exp(float)`` is glibc's ``expf``, which is not correctly rounded (about 1e-4 of results
  differ from the correctly rounded value by one ulp). :func:`expf` computes exp in float64 and
  rounds to float32, which is right except where the exact value lies within 0.0025 ulp of a
  rounding midpoint; those few inputs (about 0.5%) are recomputed with the C library's own
  ``expf`` through ctypes, so results equal OpenTAD's on the same machine.
* The C++ soft-NMS keeps its arrays in "slots": the maximum is the first slot holding the highest
  score, the selected segment swaps slots with the one at the front, and segments falling below
  ``min_score`` are overwritten by the last slot. Ties (frequent: scores are rounded to 4
  decimals) are broken by these slots, so we keep the same slot arrays and moves.
* ``at::sort`` (hard NMS order, final ordering in ``batched_nms``) is not stable; we call
  ``torch.sort`` on identical float32 arrays, which reproduces OpenTAD's tie order for the same
  torch build.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

F32 = np.float32
_NEG_INF = F32(-np.inf)


@lru_cache(maxsize=1)
def _libm_expf():
    """The C library's scalar expf (what OpenTAD's ``std::exp(float)`` calls), or None."""
    for name in (ctypes.util.find_library("m"), "libm.so.6"):
        if not name:
            continue
        try:
            fn = ctypes.CDLL(name).expf
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_float
        fn.argtypes = [ctypes.c_float]
        return fn
    return None


def expf(x: np.ndarray) -> np.ndarray:
    """float32 exp equal to the C library's ``expf`` (see module docstring)."""
    x = np.asarray(x, dtype=F32)
    yd = np.exp(x.astype(np.float64))
    y = yd.astype(F32)
    fn = _libm_expf()
    if fn is None or y.size == 0:
        return y
    # Distance of the float64 value to the float32 rounding midpoints, in units of the gap.
    y64 = y.astype(np.float64)
    lo = np.nextafter(y, F32(0)).astype(np.float64)
    hi = np.nextafter(y, F32(np.inf)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        near = np.abs(yd - (y64 + lo) / 2) < 0.0025 * (y64 - lo)
        near |= np.abs(yd - (y64 + hi) / 2) < 0.0025 * (hi - y64)
    idx = np.flatnonzero(near)
    if len(idx):
        flat = y.reshape(-1)
        xs = x.reshape(-1)[idx].tolist()
        flat[idx] = np.array([fn(v) for v in xs], dtype=F32)
    return y


@dataclass(frozen=True)
class KernelParams:
    """NMS parameters as the C++ code sees them (float arguments are C ``float``)."""

    iou_threshold: float = 0.0
    sigma: float = 0.5
    min_score: float = 0.0
    method: int = 2
    t1: float = 0.0
    t2: float = 0.0


def _lanes(offsets: np.ndarray, budget: int = 1 << 22):
    """Split groups into lock-step batches of similar size (limits padding and memory)."""
    sizes = np.diff(offsets)
    order = np.argsort(-sizes, kind="stable")
    order = order[sizes[order] > 0]
    batches = []
    i = 0
    while i < len(order):
        width = int(sizes[order[i]])
        # Groups at least a third as large share the batch; cap the padded cell count.
        j = i
        limit = max(1, budget // max(width, 1))
        while j < len(order) and sizes[order[j]] * 3 >= width and j - i < limit:
            j += 1
        batches.append((order[i:j], width))
        i = j
    return batches


def _pack(values: list[np.ndarray], fills: list, offsets: np.ndarray, groups, width: int):
    """Lay out the given groups' entries as rows of width ``width`` (padding with fills)."""
    sizes = (offsets[groups + 1] - offsets[groups]).astype(np.int64)
    rows = np.repeat(np.arange(len(groups)), sizes)
    cols = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    src = np.repeat(offsets[groups], sizes) + cols
    out = []
    for v, fill in zip(values, fills):
        a = np.full((len(groups), width), fill, dtype=v.dtype)
        a[rows, cols] = v[src]
        out.append(a)
    return out, sizes


def soft_nms(
    x1: np.ndarray,
    x2: np.ndarray,
    score: np.ndarray,
    offsets: np.ndarray,
    p: KernelParams,
    max_num: int,
):
    """OpenTAD's ``SoftNMSop`` for every group ``offsets[g]:offsets[g+1]`` at once.

    Returns ``(index, score, counts)``: per group, in selection order and capped at ``max_num``
    (``<= 0``: no cap), the selected entries' positions in the input arrays and their decayed
    float32 scores; groups are concatenated in input order.

    Each batch of groups is a set of 2-D arrays, one row per group, whose columns are the C++
    slots: segment, area, score and input index move between columns exactly as in the C++
    loop. Each pass tests the live columns for overlap with the selected segment (two dense
    comparisons) and computes IoU and decay only for the few that overlap. (Keeping entries in
    time order instead, to visit only near-by ones, was tried: the gathers cost more than the
    dense comparisons they save.)
    """
    x1 = np.asarray(x1, F32)
    x2 = np.asarray(x2, F32)
    score = np.asarray(score, F32)
    offsets = np.asarray(offsets, np.int64)
    n_groups = len(offsets) - 1
    sigma, min_score = F32(p.sigma), F32(p.min_score)
    thr, t1, t2 = F32(p.iou_threshold), F32(p.t1), F32(p.t2)
    method = int(p.method)
    if method not in (0, 1, 2, 3):
        raise ValueError(f"soft-NMS method must be 0, 1, 2 or 3, got {method}")
    # Method 0 with a threshold <= 0 zeroes *every* other score, overlapping or not.
    dense_zero = method == 0 and thr <= 0
    res_idx = [None] * n_groups
    res_sc = [None] * n_groups
    area = (x2 - x1) + F32(1e-6)
    gid = np.arange(len(x1), dtype=np.int64)
    for groups, width in _lanes(offsets):
        cap = width if max_num <= 0 else min(width, int(max_num))
        (X1, X2, AR, SC, ID), n = _pack(
            [x1, x2, area, score, gid], [np.inf, -np.inf, 1.0, -np.inf, -1], offsets, groups, width
        )
        n = n.copy()
        nrow = len(groups)
        out_id = np.full((nrow, cap), -1, dtype=np.int64)
        out_sc = np.zeros((nrow, cap), dtype=F32)
        taken = np.zeros(nrow, dtype=np.int64)
        rows_all = np.arange(nrow)
        for i in range(cap):
            act = np.flatnonzero(n > i)
            if len(act) == 0:
                break
            # Rows are sorted by initial size, so active rows form a prefix up to ``hi``.
            hi = int(act[-1]) + 1
            right = int(n[:hi].max())
            rows = rows_all[:hi]
            m = i + np.argmax(SC[:hi, i:right], axis=1)
            alive = n[:hi] > i
            t_x1, t_x2, t_ar = X1[rows, m], X2[rows, m], AR[rows, m]
            ra = rows[alive]
            out_id[ra, i] = ID[ra, m[alive]]
            out_sc[ra, i] = SC[ra, m[alive]]
            taken[:hi] += alive
            # Swap: the slot of the maximum receives the front slot's segment.
            for arr in (X1, X2, AR, SC, ID):
                arr[rows, m] = arr[:hi, i]
            if right <= i + 1:
                continue
            reg = slice(i + 1, right)
            s_view = SC[:hi, reg]
            if dense_zero:
                valid = np.arange(i + 1, right)[None, :] < n[:hi, None]
                s_view[valid] *= F32(0)
                decayed = None
            else:
                # Overlap test first (cheap, dense), exact IoU only on the few overlapping cells:
                # inter > 0 needs start < t's end and end > t's start.
                hit = X1[:hi, reg] < t_x2[:, None]
                hit &= X2[:hi, reg] > t_x1[:, None]
                r, c = np.divmod(np.flatnonzero(hit), right - i - 1)
                cols = c + (i + 1)
                xx1 = np.maximum(X1[r, cols], t_x1[r])
                xx2 = np.minimum(X2[r, cols], t_x2[r])
                inter = np.maximum(xx2 - xx1, F32(0))
                ovr = inter / ((t_ar[r] + AR[r, cols]) - inter)
                if method == 2:
                    sel = ovr > 0
                    w = expf(-(ovr[sel] * ovr[sel]) / sigma)
                elif method == 1:
                    sel = (ovr >= thr) & (ovr > 0)
                    w = F32(1) - ovr[sel]
                elif method == 0:
                    sel = ovr >= thr
                    w = np.zeros(int(sel.sum()), F32)
                else:
                    sel = (ovr >= (t1 + t2 * t_ar[r])) & (ovr > 0)
                    w = expf(-(ovr[sel] * ovr[sel]) / sigma)
                r, c = r[sel], c[sel]
                s_view[r, c] = s_view[r, c] * w
                decayed = (r, c)
            # Removal: on the first pass every score is checked, later only the decayed ones
            # can newly fall below min_score (the others are unchanged and were checked).
            if i == 0 or decayed is None:
                valid = np.arange(i + 1, right)[None, :] < n[:hi, None]
                rr, rc = np.nonzero(valid & (s_view < min_score))
            else:
                below = s_view[decayed] < min_score
                rr, rc = decayed[0][below], decayed[1][below]
            if len(rr):
                _compact(rr, rc + (i + 1), n, (X1, X2, AR, SC, ID), min_score)
        counts = np.minimum(taken, cap)
        for k, g in enumerate(groups):
            res_idx[g] = out_id[k, : counts[k]]
            res_sc[g] = out_sc[k, : counts[k]]
    empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, F32)
    res_idx = [empty_i if r is None else r for r in res_idx]
    res_sc = [empty_f if r is None else r for r in res_sc]
    counts = np.array([len(r) for r in res_idx], dtype=np.int64)
    idx = np.concatenate(res_idx) if n_groups else empty_i
    sc = np.concatenate(res_sc) if n_groups else empty_f
    return idx, sc, counts


def _compact(rr, rc, n, arrays, min_score):
    """The C++ removal: each removed slot (left to right) takes the last live slot's segment.

    Net effect: holes below the new length are filled, leftmost first, by the surviving
    segments beyond the new length, rightmost first. ``rr``/``rc`` are row-major sorted.
    """
    X1, X2, AR, SC, ID = arrays
    cnt = np.bincount(rr, minlength=len(n))
    rows = np.flatnonzero(cnt)
    old_n = n[rows].copy()
    n[rows] = old_n - cnt[rows]
    hole = rc < n[rr]
    hr, hc = rr[hole], rc[hole]
    # Tail slots [new_n, old_n) of each row, right to left; survivors there are the movers.
    k = cnt[rows]
    tr = np.repeat(rows, k)
    tc = np.repeat(old_n, k) - 1 - (np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k))
    survivor = SC[tr, tc] >= min_score
    mr, mc = tr[survivor], tc[survivor]
    for arr in arrays:
        arr[hr, hc] = arr[mr, mc]
    SC[tr, tc] = _NEG_INF
    X1[tr, tc] = np.inf
    X2[tr, tc] = -np.inf
    ID[tr, tc] = -1


def hard_nms(
    x1: np.ndarray,
    x2: np.ndarray,
    score: np.ndarray,
    offsets: np.ndarray,
    iou_threshold: float,
    max_num: int,
):
    """OpenTAD's ``nms_1d_cpu`` (after its score filter) for every group at once.

    Returns ``(index, counts)``: per group, the kept entries in ``torch.sort`` descending order,
    capped at ``max_num`` (``<= 0``: no cap).
    """
    x1 = np.asarray(x1, F32)
    x2 = np.asarray(x2, F32)
    score = np.asarray(score, F32)
    offsets = np.asarray(offsets, np.int64)
    thr = F32(iou_threshold)
    order = sort_desc_groups(score, offsets)  # at::sort(descending) per group, same tie order
    x1, x2 = x1[order], x2[order]
    area = (x2 - x1) + F32(1e-6)
    n_groups = len(offsets) - 1
    res = [np.zeros(0, np.int64)] * n_groups
    for groups, width in _lanes(offsets):
        (X1, X2, AR, POS), n = _pack(
            [x1, x2, area, np.arange(len(x1))], [np.inf, -np.inf, 1.0, -1], offsets, groups, width
        )
        nrow = len(groups)
        cap = width if max_num <= 0 else min(width, int(max_num))
        keep = np.arange(width)[None, :] < n[:, None]
        kept = np.zeros(nrow, dtype=np.int64)
        if thr <= 0:
            # ovr >= thr holds for every pair: only the best of each group survives.
            keep[:, 1:] = False
        else:
            for i in range(width):
                if not ((kept < cap) & (n > i)).any():
                    break  # every group has its max_num segments or is exhausted
                act = keep[:, i] & (kept < cap)
                kept += act
                if not act.any() or i + 1 >= width:
                    continue
                r = np.flatnonzero(act)
                reg = slice(i + 1, width)
                xx1 = np.maximum(X1[r, reg], X1[r, i][:, None])
                xx2 = np.minimum(X2[r, reg], X2[r, i][:, None])
                inter = np.maximum(xx2 - xx1, F32(0))
                ovr = inter / ((AR[r, i][:, None] + AR[r, reg]) - inter)
                sub = keep[r, reg]
                sub &= ~(ovr >= thr)
                keep[r, reg] = sub
        for k, g in enumerate(groups):
            pos = POS[k][keep[k]][:cap]
            res[g] = order[pos]
    counts = np.array([len(r) for r in res], dtype=np.int64)
    return (np.concatenate(res) if n_groups else np.zeros(0, np.int64)), counts


def sort_desc_groups(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per group, ``torch.sort(values, descending=True)`` indices (global), groups in order."""
    import torch

    values = np.asarray(values, F32)
    out = np.empty(len(values), dtype=np.int64)
    for g in range(len(offsets) - 1):
        lo, hi = int(offsets[g]), int(offsets[g + 1])
        if hi - lo:
            idx = torch.sort(torch.from_numpy(values[lo:hi].copy()), descending=True).indices
            out[lo:hi] = idx.numpy() + lo
    return out


def seg_voting(
    kept_x1: np.ndarray,
    kept_x2: np.ndarray,
    all_x1: np.ndarray,
    all_x2: np.ndarray,
    all_score: np.ndarray,
    thresh: float,
):
    """OpenTAD's ``seg_voting`` for one video: score-weighted mean of all pre-NMS segments whose
    IoU with a kept segment is >= ``thresh`` (plain scores: OpenTAD computes a +1.5 offset but
    never uses it). IoU and the neighbour test are float32 exactly as OpenTAD; the weighted sums
    are float64, rounded to float32 (OpenTAD's float32 matrix product may differ in the last bit).
    """
    kept_x1, kept_x2 = np.asarray(kept_x1, F32), np.asarray(kept_x2, F32)
    all_x1, all_x2 = np.asarray(all_x1, F32), np.asarray(all_x2, F32)
    all_score = np.asarray(all_score, F32)
    thr = F32(thresh)
    if len(kept_x1) == 0:
        return kept_x1.copy(), kept_x2.copy()
    # IoU >= thresh > 0 needs overlap (start < kept end) and a neighbour no longer than
    # kept/thresh (so start > kept start - kept length / thresh): a window in start order.
    order = np.argsort(all_x1, kind="stable")
    sx1 = all_x1[order].astype(np.float64)
    ks64, ke64 = kept_x1.astype(np.float64), kept_x2.astype(np.float64)
    hi = np.searchsorted(sx1, ke64, side="left")
    reach = (ke64 - ks64) / max(float(thr), 1e-12) * 1.01 + 1e-6 * (1 + np.abs(ks64))
    lo = np.minimum(np.searchsorted(sx1, ks64 - reach, side="left"), hi)
    num = np.zeros((len(kept_x1), 2), np.float64)
    den = np.zeros(len(kept_x1), np.float64)
    chunk = 1 << 20
    k0 = 0
    while k0 < len(kept_x1):
        # Process kept segments in chunks bounded by the number of pairs.
        k1 = k0 + 1
        tot = int(hi[k0] - lo[k0])
        while k1 < len(kept_x1) and tot + int(hi[k1] - lo[k1]) <= chunk:
            tot += int(hi[k1] - lo[k1])
            k1 += 1
        ks = np.arange(k0, k1)
        cnt = hi[ks] - lo[ks]
        kk = np.repeat(ks, cnt)
        within = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        jj = order[np.repeat(lo[ks], cnt) + within]
        left = np.maximum(kept_x1[kk], all_x1[jj])
        right = np.minimum(kept_x2[kk], all_x2[jj])
        inter = np.maximum(right - left, F32(0))
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = inter / (((kept_x2[kk] - kept_x1[kk]) + (all_x2[jj] - all_x1[jj])) - inter)
        hit = iou >= thr
        kk, jj = kk[hit], jj[hit]
        w = all_score[jj].astype(np.float64)
        size = len(kept_x1)
        den += np.bincount(kk, weights=w, minlength=size)
        num[:, 0] += np.bincount(kk, weights=w * all_x1[jj], minlength=size)
        num[:, 1] += np.bincount(kk, weights=w * all_x2[jj], minlength=size)
        k0 = k1
    with np.errstate(invalid="ignore", divide="ignore"):
        v1 = (num[:, 0] / den).astype(F32)
        v2 = (num[:, 1] / den).astype(F32)
    return v1, v2


def seg_voting_exact(kept_x1, kept_x2, all_x1, all_x2, all_score, thresh):
    """Score voting with OpenTAD's own dense float32 torch computation (K x N matrices and a
    float32 matrix product), bit-identical to OpenTAD with the same torch build; slow."""
    import torch

    # torch.tensor copies into torch-allocated memory: BLAS results can depend on alignment.
    kept = torch.tensor(np.stack([np.asarray(kept_x1, F32), np.asarray(kept_x2, F32)], 1))
    segs = torch.tensor(np.stack([np.asarray(all_x1, F32), np.asarray(all_x2, F32)], 1))
    scores = torch.tensor(np.asarray(all_score, F32))
    k, n = kept.shape[0], segs.shape[0]
    a = kept[:, None].expand(k, n, 2)
    b = segs[None, :].expand(k, n, 2)
    inter = (torch.minimum(a[:, :, 1], b[:, :, 1]) - torch.maximum(a[:, :, 0], b[:, :, 0])).clamp(
        min=0
    )
    iou = inter / ((a[:, :, 1] - a[:, :, 0]) + (b[:, :, 1] - b[:, :, 0]) - inter)
    weights = (iou >= thresh).to(scores.dtype) * scores[None, :]
    weights /= torch.sum(weights, dim=1, keepdim=True)
    refined = (weights @ segs).numpy()
    return refined[:, 0].copy(), refined[:, 1].copy()
