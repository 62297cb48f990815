"""OpenTAD's 1-D NMS kernels, re-implemented bit-exactly.

OpenTAD (``opentad/models/utils/post_processing/nms/``) runs its C++ ``softnms``/``nms`` once per
group (a class of a video, or a whole video when class-agnostic). Soft-NMS and score voting are
compiled loops (numba, ``cache=True``) over all groups, spread over threads (the kernels release
the GIL; groups are independent, so the thread count never changes a result). Hard NMS runs all
groups in lock-step numpy passes (pass ``i`` of every group is one set of numpy operations).

Bit-exactness, and why each detail is here:

* All arithmetic is float32 in the same operation order as the C++ code (areas ``x2-x1+1e-6``,
  ``inter/(iarea+area-inter)``, ``-(ovr*ovr)/sigma``, ``score *= weight``). numba keeps float32
  operands in float32 and, without ``fastmath``, neither reorders nor fuses operations.
* ``std::exp(float)`` is the C library's ``expf`` (glibc's is not correctly rounded: about 1e-4
  of results differ from the correctly rounded value by one ulp). The soft-NMS kernel calls that
  very symbol (:data:`_c_expf`).
* The C++ soft-NMS keeps its arrays in "slots": the maximum is the first slot holding the highest
  score, the selected segment swaps slots with the one at the front, and segments falling below
  ``min_score`` are overwritten by the last slot. Ties (frequent: scores are rounded to 4
  decimals) are broken by these slots, so the kernel tracks every segment's slot through the same
  moves (see :func:`_soft_nms_group`).
* ``at::sort`` (hard NMS order, final ordering in ``batched_nms``) is not stable: on CPU it is
  libstdc++'s ``std::sort`` (introsort) on (value, index) pairs, re-implemented step for step in
  :func:`_introsort_desc`, so ties come out in torch's order without importing torch.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
from numba import types

F32 = np.float32
_NEG_INF = F32(-np.inf)
_ZERO = F32(0)
_ONE = F32(1)
_EPS = F32(1e-6)  # the C++ area offset: x2 - x1 + 1e-6 (a float literal there too)

# The C library's expf, called directly from compiled code (resolved like OpenTAD's own call).
_c_expf = types.ExternalFunction("expf", types.float32(types.float32))


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


def n_threads() -> int:
    """Threads for the compiled kernels: ``TADSWEEP_THREADS``, else the CPUs this process may
    use."""
    env = os.environ.get("TADSWEEP_THREADS", "").strip()
    if env:
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run_parallel(kernel, weights: np.ndarray, *args) -> None:
    """Run ``kernel(groups, *args)`` over all groups, in chunks on a thread pool.

    ``weights`` estimates each group's work; chunks of about equal work, heaviest groups first,
    are handed out as threads become free (one large group can take as long as many small ones).
    The kernels write each group's results to its own place, so order and count of threads do
    not matter.
    """
    order = np.argsort(-weights, kind="stable")
    order = order[weights[order] > 0]
    threads = min(n_threads(), len(order))
    if threads <= 1:
        if len(order):
            kernel(order, *args)
        return
    cum = np.cumsum(weights[order].astype(np.float64))
    n_chunks = 8 * threads
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, n_chunks) / n_chunks, side="right")
    chunks = [c for c in np.split(order, np.unique(cuts)) if len(c)]
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(lambda c: kernel(c, *args), chunks):
            pass  # re-raises a kernel's exception


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _weight(ovr, iarea, method, thr, sigma, t1, t2):
    """The C++ soft-NMS weight of an overlap ``ovr`` with the selected segment (area ``iarea``)."""
    if method == 0:
        return _ZERO if ovr >= thr else _ONE
    if method == 1:
        return _ONE - ovr if ovr >= thr else _ONE
    if method == 2 or ovr >= t1 + t2 * iarea:
        return _c_expf(-(ovr * ovr) / sigma)
    return _ONE


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _soft_nms_plain(X1, X2, SC, ID, cap, method, thr, sigma, min_score, t1, t2, out_id, out_sc):
    """The C++ loop as written (every slot, every pass): for groups the fast kernel rejects."""
    n = len(X1)
    AR = (X2 - X1) + _EPS
    taken = 0
    i = 0
    while i < n and taken < cap:
        m = i
        for s in range(i + 1, n):
            if SC[m] < SC[s]:
                m = s
        tx1, tx2, tar, tsc, tid = X1[m], X2[m], AR[m], SC[m], ID[m]
        out_id[taken] = tid
        out_sc[taken] = tsc
        taken += 1
        X1[m], X2[m], AR[m], SC[m], ID[m] = X1[i], X2[i], AR[i], SC[i], ID[i]
        X1[i], X2[i], AR[i], SC[i], ID[i] = tx1, tx2, tar, tsc, tid
        pos = i + 1
        while pos < n:
            inter = max(_ZERO, min(tx2, X2[pos]) - max(tx1, X1[pos]))
            ovr = inter / ((tar + AR[pos]) - inter)
            SC[pos] = SC[pos] * _weight(ovr, tar, method, thr, sigma, t1, t2)
            if SC[pos] < min_score:
                n -= 1
                X1[pos], X2[pos], AR[pos], SC[pos], ID[pos] = X1[n], X2[n], AR[n], SC[n], ID[n]
            else:
                pos += 1
        i += 1
    return taken


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _better(score1, slot1, score2, slot2):
    """Whether the C++ maximum scan prefers the first (score, slot) to the second."""
    return score1 > score2 or (score1 == score2 and slot1 < slot2)


_BLOCK = 32  # segments per block of the fast kernel (timings hardly depend on it)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _soft_nms_group(x1, x2, sc, ids, cap, method, thr, sigma, min_score, t1, t2, out_id, out_sc):
    """The C++ soft-NMS of one group, for segments of positive length and finite values.

    Writes the first ``cap`` selections (input ids, decayed scores) and returns their number.

    The C++ loop visits every slot on every pass: to find the maximum, and to decay it. Here
    segments are kept in time order (by start) and in blocks of ``_BLOCK``. Each block knows its
    best live segment (highest score, then lowest slot: the C++ scan's choice) and the latest end
    of its segments. A pass compares block bests, and decays only the segments of the blocks that
    can overlap the selected one: a segment with ``inter == 0`` gets weight exactly 1 (``ovr`` is
    0, ``expf(-0) == 1``; the caller routes ``method 0`` with ``thr <= 0``, where it would be 0, to
    :func:`_soft_nms_plain`), and its score, already checked against ``min_score`` on the first
    pass, is unchanged. Slots are tracked as in C++ (``eslot``: segment -> slot, ``slot2elem``
    its inverse): the selected segment swaps with slot ``i``, and segments removed in a pass are
    replaced as the C++ loop replaces them (see the removal step).
    """
    n0 = len(x1)
    order = np.argsort(x1, kind="mergesort")
    ex1 = x1[order]
    ex2 = x2[order]
    ear = (ex2 - ex1) + _EPS
    esc = sc[order]
    eid = ids[order]
    eslot = order.copy()
    slot2elem = np.empty(n0, np.int64)
    slot2elem[order] = np.arange(n0)
    alive = np.ones(n0, np.bool_)
    B = _BLOCK
    nb = (n0 + B - 1) // B
    bbest = np.full(nb, -1, np.int64)  # best live segment of the block, -1: none
    bscore = np.full(nb, _NEG_INF, F32)  # its score and slot (kept current unless dirty)
    bslot = np.zeros(nb, np.int64)
    bx2max = np.empty(nb, F32)  # latest end of the block's live segments (or later)
    dirty = np.ones(nb, np.bool_)  # best and end need a rescan
    removed = np.empty(n0, np.int64)
    holes = np.empty(n0, np.int64)
    n = n0  # live slots are [i, n), as in C++
    taken = 0
    i = 0
    while i < n and taken < cap:
        # The maximum: best of the block bests (rescanning blocks whose best may have changed).
        best = -1
        best_sc = _NEG_INF
        best_slot = 0
        for b in range(nb):
            if dirty[b]:
                bb = -1
                x2m = _NEG_INF
                for k in range(b * B, min(b * B + B, n0)):
                    if alive[k]:
                        if bb < 0 or _better(esc[k], eslot[k], esc[bb], eslot[bb]):
                            bb = k
                        x2m = max(x2m, ex2[k])
                bbest[b] = bb
                if bb >= 0:
                    bscore[b] = esc[bb]
                    bslot[b] = eslot[bb]
                bx2max[b] = x2m
                dirty[b] = False
            if bbest[b] >= 0 and (best < 0 or _better(bscore[b], bslot[b], best_sc, best_slot)):
                best = bbest[b]
                best_sc = bscore[b]
                best_slot = bslot[b]
        e = best
        out_id[taken] = eid[e]
        out_sc[taken] = esc[e]
        taken += 1
        alive[e] = False
        dirty[e // B] = True
        # Swap: the segment in slot i moves to the selected one's slot (a later slot, so it can
        # only lose its block's lead).
        f = slot2elem[i]
        if f != e:
            m = eslot[e]
            slot2elem[m] = f
            eslot[f] = m
            if bbest[f // B] == f:
                dirty[f // B] = True
        first = i == 0
        i += 1
        if taken == cap or i >= n:
            break
        # Decay the live segments that overlap the selected one. Blocks are in start order, so
        # the scan stops at the first start >= the selected end.
        tx1, tx2, tar = ex1[e], ex2[e], ear[e]
        nrem = 0
        for b in range(nb):
            lo = b * B
            if ex1[lo] >= tx2:
                break
            if bx2max[b] <= tx1:
                continue
            for k in range(lo, min(lo + B, n0)):
                if ex1[k] >= tx2:
                    break
                if not alive[k]:
                    continue
                inter = max(_ZERO, min(tx2, ex2[k]) - max(tx1, ex1[k]))
                if inter > 0:
                    ovr = inter / ((tar + ear[k]) - inter)
                    old = esc[k]
                    new = old * _weight(ovr, tar, method, thr, sigma, t1, t2)
                    esc[k] = new
                    # Keep the block's best current without a rescan where possible.
                    if bbest[b] == k:
                        if new < old:
                            dirty[b] = True
                        else:
                            bscore[b] = new
                    elif new > old and not dirty[b] and _better(new, eslot[k], bscore[b], bslot[b]):
                        bbest[b] = k
                        bscore[b] = new
                        bslot[b] = eslot[k]
                    if new < min_score and not first:
                        removed[nrem] = k
                        nrem += 1
        if first:
            # The first pass checks every score against min_score (later passes only change, and
            # so only need to check, the decayed ones).
            for k in range(n0):
                if alive[k] and esc[k] < min_score:
                    removed[nrem] = k
                    nrem += 1
        if nrem:
            # The C++ loop, walking slots upwards, overwrites each removed slot with the last live
            # slot (n-1) and re-examines it; removed segments pulled in are overwritten again.
            # Net effect: the removed slots below the new length (holes), lowest first, receive
            # the surviving segments at or above it, highest slot first.
            for r in range(nrem):
                k = removed[r]
                alive[k] = False
                if bbest[k // B] == k:
                    dirty[k // B] = True
                holes[r] = eslot[k]
            hole = holes[:nrem]
            hole.sort()
            new_n = n - nrem
            s = n - 1
            for h in range(nrem):
                if hole[h] >= new_n:
                    break
                while not alive[slot2elem[s]]:
                    s -= 1
                mv = slot2elem[s]
                slot2elem[hole[h]] = mv
                eslot[mv] = hole[h]
                # A lower slot: it can only take its block's lead.
                b = mv // B
                if bbest[b] == mv:
                    bslot[b] = hole[h]
                elif not dirty[b] and _better(esc[mv], hole[h], bscore[b], bslot[b]):
                    bbest[b] = mv
                    bscore[b] = esc[mv]
                    bslot[b] = hole[h]
                s -= 1
            n = new_n
    return taken


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _soft_nms_groups(
    groups,
    x1,
    x2,
    score,
    offsets,
    max_num,
    method,
    thr,
    sigma,
    min_score,
    t1,
    t2,
    out_id,
    out_sc,
    counts,
):
    """Soft-NMS of the listed groups; group g's selections go to ``out_*[offsets[g]:]``."""
    for g in groups:
        lo, hi = offsets[g], offsets[g + 1]
        n = hi - lo
        cap = n if max_num <= 0 else min(n, max_num)
        gx1, gx2, gsc = x1[lo:hi].copy(), x2[lo:hi].copy(), score[lo:hi].copy()
        ids = np.arange(lo, hi)
        # The fast kernel needs weight exactly 1 wherever segments do not overlap (not so for
        # method 0 with thr <= 0, nor for a Gaussian with sigma <= 0 or NaN) and finite scores.
        fast = not (method == 0 and thr <= 0) and (method < 2 or sigma > 0)
        for k in range(n):
            ok = (gx2[k] - gx1[k]) + _EPS > 0
            ok = ok and np.isfinite(gx1[k]) and np.isfinite(gx2[k]) and np.isfinite(gsc[k])
            fast = fast and ok
        args = (cap, method, thr, sigma, min_score, t1, t2, out_id[lo:hi], out_sc[lo:hi])
        if fast:
            counts[g] = _soft_nms_group(gx1, gx2, gsc, ids, *args)
        else:
            counts[g] = _soft_nms_plain(gx1, gx2, gsc, ids, *args)


def soft_nms(
    x1: np.ndarray,
    x2: np.ndarray,
    score: np.ndarray,
    offsets: np.ndarray,
    p: KernelParams,
    max_num: int,
):
    """OpenTAD's ``SoftNMSop`` for every group ``offsets[g]:offsets[g+1]``.

    Returns ``(index, score, counts)``: per group, in selection order and capped at ``max_num``
    (``<= 0``: no cap), the selected entries' positions in the input arrays and their decayed
    float32 scores; groups are concatenated in input order.
    """
    x1 = np.ascontiguousarray(x1, F32)
    x2 = np.ascontiguousarray(x2, F32)
    score = np.ascontiguousarray(score, F32)
    offsets = np.ascontiguousarray(offsets, np.int64)
    method = int(p.method)
    if method not in (0, 1, 2, 3):
        raise ValueError(f"soft-NMS method must be 0, 1, 2 or 3, got {method}")
    out_id = np.empty(len(x1), np.int64)
    out_sc = np.empty(len(x1), F32)
    counts = np.zeros(len(offsets) - 1, np.int64)
    sizes = np.diff(offsets)
    cap = sizes if max_num <= 0 else np.minimum(sizes, int(max_num))
    params = (F32(p.iou_threshold), F32(p.sigma), F32(p.min_score), F32(p.t1), F32(p.t2))
    _run_parallel(
        _soft_nms_groups,
        sizes * cap,  # about the C++ loop's work
        x1,
        x2,
        score,
        offsets,
        int(max_num),
        method,
        *params,
        out_id,
        out_sc,
        counts,
    )
    keep = np.arange(len(x1)) - np.repeat(offsets[:-1], sizes) < np.repeat(counts, sizes)
    return out_id[keep], out_sc[keep], counts


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


def group_by_class(video_offsets: np.ndarray, label: np.ndarray, n_labels: int):
    """Rows grouped per (video, class), classes in order of first appearance in the video (the
    order of OpenTAD's per-video label indices), rows in order within a group.

    Returns ``(rows, offsets)``: ``rows[offsets[g]:offsets[g+1]]`` are group g's rows.
    """
    return _group_by_class(
        np.ascontiguousarray(video_offsets, np.int64),
        np.ascontiguousarray(label, np.int64),
        int(n_labels),
    )


@numba.njit(cache=True, nogil=True)
def _group_by_class(video_offsets, label, n_labels):
    # A stable counting sort per video (numpy's unique + lexsort took ~60 ms on 850k rows).
    n = len(label)
    rows = np.empty(n, np.int64)
    group_start = np.empty(n + 1, np.int64)
    n_groups = 0
    rank = np.empty(n_labels, np.int64)
    fill = np.empty(n_labels, np.int64)
    for v in range(len(video_offsets) - 1):
        lo, hi = video_offsets[v], video_offsets[v + 1]
        rank[:] = -1
        fill[:] = 0
        n_seen = 0
        for r in range(lo, hi):  # rank = order of first appearance; fill = count per label
            if rank[label[r]] < 0:
                rank[label[r]] = n_seen
                n_seen += 1
            fill[label[r]] += 1
        # Group starts in rank order; then fill[c] = next free place of label c.
        by_rank = np.empty(n_seen, np.int64)
        for c in range(n_labels):
            if rank[c] >= 0:
                by_rank[rank[c]] = c
        pos = lo
        for q in range(n_seen):
            c = by_rank[q]
            group_start[n_groups] = pos
            n_groups += 1
            pos, fill[c] = pos + fill[c], pos
        for r in range(lo, hi):
            rows[fill[label[r]]] = r
            fill[label[r]] += 1
    group_start[n_groups] = n
    return rows, group_start[: n_groups + 1].copy()


def sort_desc_groups(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per group, ``torch.sort(values, descending=True)`` indices (global), groups in order.

    torch sorts a float32 CPU tensor with ``std::sort`` (libstdc++'s introsort, not stable) on
    (value, index) pairs; :func:`_introsort_desc` is that algorithm step for step, so ties come
    out in torch's order without importing torch (1.3 s of every command). Checked against torch
    on many random inputs full of ties (tests/test_postprocess.py)."""
    values = np.ascontiguousarray(values, F32)
    return _sort_desc_groups(values, np.ascontiguousarray(offsets, np.int64))


@numba.njit(cache=True, nogil=True)
def _sort_desc_groups(values, offsets):
    out = np.empty(len(values), np.int64)
    for g in range(len(offsets) - 1):
        lo, hi = offsets[g], offsets[g + 1]
        v = values[lo:hi].copy()
        idx = np.arange(hi - lo)
        _introsort_desc(v, idx, -1)
        out[lo:hi] = idx + lo
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _gt(a, b):
    """at::native's KeyValueCompDesc: NaN first, then larger first."""
    return (np.isnan(a) and not np.isnan(b)) or a > b


@numba.njit(cache=True, nogil=True)
def _introsort_desc(v, idx, depth):
    """libstdc++'s ``std::sort`` (``__introsort_loop`` + ``__final_insertion_sort``) of the
    pairs (v[i], idx[i]) by value, descending, in place. ``depth`` < 0: libstdc++'s limit
    2 * lg(n) (tests pass 0 to check the heapsort fallback against ``std::partial_sort``)."""
    n = len(v)
    if n < 2:
        return
    if depth < 0:
        depth = 0  # 2 * __lg(n)
        while n >> (depth + 1):
            depth += 1
        depth *= 2
    # __introsort_loop: recursion on the right part, a loop on the left one. The parts are
    # disjoint, so an explicit stack of pending parts (each over 16 long) gives the same result.
    stack = np.empty((n // 17 + 2, 3), np.int64)
    stack[0, 0], stack[0, 1], stack[0, 2] = 0, n, depth
    sp = 1
    while sp:
        sp -= 1
        first, last, d = stack[sp, 0], stack[sp, 1], stack[sp, 2]
        while last - first > 16:
            if d == 0:
                _heap_sort(v, idx, first, last)
                break
            d -= 1
            # __unguarded_partition_pivot: median of (first+1, mid, last-1) to first
            mid = first + (last - first) // 2
            a, b, c = first + 1, mid, last - 1
            if _gt(v[a], v[b]):
                if _gt(v[b], v[c]):
                    m = b
                elif _gt(v[a], v[c]):
                    m = c
                else:
                    m = a
            elif _gt(v[a], v[c]):
                m = a
            elif _gt(v[b], v[c]):
                m = c
            else:
                m = b
            _swap(v, idx, first, m)
            lo, hi = first + 1, last
            while True:
                while _gt(v[lo], v[first]):
                    lo += 1
                hi -= 1
                while _gt(v[first], v[hi]):
                    hi -= 1
                if not lo < hi:
                    break
                _swap(v, idx, lo, hi)
                lo += 1
            if last - lo > 16:
                stack[sp, 0], stack[sp, 1], stack[sp, 2] = lo, last, d
                sp += 1
            last = lo
    # __final_insertion_sort
    if n > 16:
        _insertion_sort(v, idx, 0, 16)
        for i in range(16, n):
            _linear_insert(v, idx, i)
    else:
        _insertion_sort(v, idx, 0, n)


@numba.njit(cache=True, nogil=True, inline="always")
def _swap(v, idx, i, j):
    v[i], v[j] = v[j], v[i]
    idx[i], idx[j] = idx[j], idx[i]


@numba.njit(cache=True, nogil=True)
def _linear_insert(v, idx, last):
    """__unguarded_linear_insert."""
    val, key = v[last], idx[last]
    nxt = last - 1
    while _gt(val, v[nxt]):
        v[last], idx[last] = v[nxt], idx[nxt]
        last = nxt
        nxt -= 1
    v[last], idx[last] = val, key


@numba.njit(cache=True, nogil=True)
def _insertion_sort(v, idx, first, last):
    """__insertion_sort."""
    for i in range(first + 1, last):
        if _gt(v[i], v[first]):
            val, key = v[i], idx[i]
            for j in range(i, first, -1):
                v[j], idx[j] = v[j - 1], idx[j - 1]
            v[first], idx[first] = val, key
        else:
            _linear_insert(v, idx, i)


@numba.njit(cache=True, nogil=True)
def _adjust_heap(v, idx, first, hole, length, val, key):
    """__adjust_heap then __push_heap, on the heap v[first:first+length]."""
    top = hole
    child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if _gt(v[first + child], v[first + child - 1]):
            child -= 1
        v[first + hole], idx[first + hole] = v[first + child], idx[first + child]
        hole = child
    if (length & 1) == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        v[first + hole], idx[first + hole] = v[first + child - 1], idx[first + child - 1]
        hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and _gt(v[first + parent], val):
        v[first + hole], idx[first + hole] = v[first + parent], idx[first + parent]
        hole = parent
        parent = (hole - 1) // 2
    v[first + hole], idx[first + hole] = val, key


@numba.njit(cache=True, nogil=True)
def _heap_sort(v, idx, first, last):
    """__partial_sort(first, last, last): __make_heap then __sort_heap."""
    length = last - first
    if length >= 2:
        parent = (length - 2) // 2
        while True:
            _adjust_heap(v, idx, first, parent, length, v[first + parent], idx[first + parent])
            if parent == 0:
                break
            parent -= 1
    while last - first > 1:
        last -= 1
        val, key = v[last], idx[last]
        v[last], idx[last] = v[first], idx[first]
        _adjust_heap(v, idx, first, 0, last - first, val, key)


def seg_voting(kept_x1, kept_x2, all_x1, all_x2, all_score, thresh):
    """OpenTAD's ``seg_voting`` of one video, bit-identical with the same torch build: the
    score-weighted mean of all pre-NMS segments whose IoU with a kept segment is >= ``thresh``
    (plain scores: OpenTAD computes a +1.5 offset it never uses). Returns the voted (x1, x2).

    OpenTAD builds dense K x N float32 matrices in torch, normalises each row by ``torch.sum``
    and takes a float32 matrix product. The row sums and the product depend on torch's own
    reduction and BLAS order, so those two run in torch on the same dense float32 matrix; only
    building it (elementwise IoU test times score: the slow part upstream, about ten K x N
    passes) is compiled here, and only for the neighbours that can pass the test.
    """
    import torch

    kx1, kx2 = np.ascontiguousarray(kept_x1, F32), np.ascontiguousarray(kept_x2, F32)
    ax1, ax2 = np.ascontiguousarray(all_x1, F32), np.ascontiguousarray(all_x2, F32)
    # torch-allocated memory, as upstream's: BLAS results can depend on alignment
    segs = torch.tensor(np.stack([ax1, ax2], 1))
    weights = torch.zeros((len(kx1), len(ax1)), dtype=torch.float32)
    score = np.ascontiguousarray(all_score, F32)
    w = weights.numpy()
    order, lo, hi = _voting_weights(kx1, kx2, ax1, ax2, score, F32(thresh), w)
    # upstream's `weights /= weights.sum(1)`: zeros stay zeros, so only the window is divided
    _divide_rows(w, torch.sum(weights, dim=1).numpy(), order, lo, hi)
    refined = (weights @ segs).numpy()
    return refined[:, 0].copy(), refined[:, 1].copy()


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _voting_weights(kx1, kx2, ax1, ax2, ascore, thr, out):
    """OpenTAD's ``(iou >= thr) * score`` into zeroed ``out`` (K x N), float32 in its operation
    order. IoU >= thr > 0 needs overlap (start < kept end) and a neighbour no longer than
    kept/thr (start > kept start - kept length / thr): a window in start order, with margin.
    Returns the start order and each row's window in it."""
    order = np.argsort(ax1, kind="mergesort")
    sx1 = ax1[order].astype(np.float64)
    thr64 = max(np.float64(thr), 1e-12)
    lo_k = np.zeros(len(kx1), np.int64)
    hi_k = np.zeros(len(kx1), np.int64)
    for k in range(len(kx1)):
        ks, ke = kx1[k], kx2[k]
        ks64, ke64 = np.float64(ks), np.float64(ke)
        hi = np.searchsorted(sx1, ke64, side="left")
        reach = (ke64 - ks64) / thr64 * 1.01 + 1e-6 * (1 + abs(ks64))
        lo = min(np.searchsorted(sx1, ks64 - reach, side="left"), hi)
        for q in range(lo, hi):
            j = order[q]
            inter = max(min(ke, ax2[j]) - max(ks, ax1[j]), _ZERO)
            iou = inter / (((ke - ks) + (ax2[j] - ax1[j])) - inter)
            if iou >= thr:
                out[k, j] = ascore[j]
        lo_k[k], hi_k[k] = lo, hi
    return order, lo_k, hi_k


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _divide_rows(w, sums, order, lo, hi):
    """``w /= sums[:, None]`` where ``w`` can be non-zero (a row without neighbours, sum 0, is
    0/0: NaN throughout, as upstream)."""
    for k in range(w.shape[0]):
        if sums[k] == 0:
            w[k, :] = np.nan
        else:
            for q in range(lo[k], hi[k]):
                j = order[q]
                w[k, j] = w[k, j] / sums[k]
