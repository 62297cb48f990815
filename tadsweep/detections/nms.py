"""OpenTAD's 1-D NMS kernels, re-implemented bit-exactly.

OpenTAD (``opentad/models/utils/post_processing/nms/``) runs its C++ ``softnms``/``nms`` once per
group (a class of a video, or a whole video when class-agnostic). Soft-NMS and score voting are
compiled C++ loops (``_nms.cpp``, built at install: no JIT start-up in each command) over all
groups, spread over threads (the kernels release the GIL; groups are independent, so the thread
count never changes a result). Hard NMS runs all groups in lock-step numpy passes (pass ``i`` of
every group is one set of numpy operations).

Bit-exactness, and why each detail is here:

* All arithmetic is float32 in the same operation order as the C++ code (areas ``x2-x1+1e-6``,
  ``inter/(iarea+area-inter)``, ``-(ovr*ovr)/sigma``, ``score *= weight``), compiled without
  ``-ffast-math`` and without fused multiply-adds (setup.py).
* ``std::exp(float)`` is the C library's ``expf`` (glibc's is not correctly rounded: about 1e-4
  of results differ from the correctly rounded value by one ulp). The soft-NMS kernel calls that
  very function.
* The C++ soft-NMS keeps its arrays in "slots": the maximum is the first slot holding the highest
  score, the selected segment swaps slots with the one at the front, and segments falling below
  ``min_score`` are overwritten by the last slot. Ties (frequent: scores are rounded to 4
  decimals) are broken by these slots, so the kernel tracks every segment's slot through the same
  moves (see ``soft_nms_fast`` in ``_nms.cpp``).
* ``at::sort`` (hard NMS order, final ordering in ``batched_nms``) is not stable: on CPU it is
  libstdc++'s ``std::sort`` (introsort) on (value, index) pairs with torch's comparator; the
  kernel makes that very call, so ties come out in torch's order without importing torch.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from tadsweep.detections import n_threads

# The compiled module (_nms) is imported inside the functions that run it: planning imports this
# module (through postprocess's settings) on machines where it may not be built.

F32 = np.float32


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
    from tadsweep.detections import _nms

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
        _nms.soft_nms_groups,
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
    from tadsweep.detections import _nms

    label = np.ascontiguousarray(label, np.int64)
    rows = np.empty(len(label), np.int64)
    starts = np.empty(len(label) + 1, np.int64)
    offsets = np.ascontiguousarray(video_offsets, np.int64)
    n_groups = _nms.group_by_class(offsets, label, int(n_labels), rows, starts)
    return rows, starts[: n_groups + 1].copy()


def sort_desc_groups(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per group, ``torch.sort(values, descending=True)`` indices (global), groups in order.

    torch sorts a float32 CPU tensor with ``std::sort`` (libstdc++'s introsort, not stable) on
    (value, index) pairs; the kernel makes the same call with torch's comparator, so ties come
    out in torch's order without importing torch (1.3 s of every command). Checked against torch
    on many random inputs full of ties (tests/test_postprocess.py)."""
    from tadsweep.detections import _nms

    values = np.ascontiguousarray(values, F32)
    out = np.empty(len(values), np.int64)
    _nms.sort_desc_groups(values, np.ascontiguousarray(offsets, np.int64), out)
    return out


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

    from tadsweep.detections import _nms

    kx1, kx2 = np.ascontiguousarray(kept_x1, F32), np.ascontiguousarray(kept_x2, F32)
    ax1, ax2 = np.ascontiguousarray(all_x1, F32), np.ascontiguousarray(all_x2, F32)
    # torch-allocated memory, as upstream's: BLAS results can depend on alignment
    segs = torch.tensor(np.stack([ax1, ax2], 1))
    weights = torch.zeros((len(kx1), len(ax1)), dtype=torch.float32)
    score = np.ascontiguousarray(all_score, F32)
    w = weights.numpy()
    order = np.empty(len(ax1), np.int64)
    lo, hi = np.empty(len(kx1), np.int64), np.empty(len(kx1), np.int64)
    _nms.voting_weights(kx1, kx2, ax1, ax2, score, float(thresh), w, order, lo, hi)
    # upstream's `weights /= weights.sum(1)`: zeros stay zeros, so only the window is divided
    _nms.divide_rows(w, torch.sum(weights, dim=1).numpy(), order, lo, hi)
    refined = (weights @ segs).numpy()
    return refined[:, 0].copy(), refined[:, 1].copy()
