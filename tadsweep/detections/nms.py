"""OpenTAD's 1-D NMS kernels (``opentad/models/utils/post_processing/nms/``), bit-exactly.

Soft and hard NMS, grouping, torch's sort and the voting weights are compiled C++ (``_nms.cpp``:
float32 in the C++ code's operation order, no fused multiply-adds, the C library's ``expf``; the
soft-NMS kernel tracks the C++ "slots" that break score ties). See docs/architecture.md, "What
makes the commands fast".
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tadsweep.detections import n_threads

# _nms is imported where used: planning imports this module where it may not be built.

F32 = np.float32


def _run_parallel(kernel, weights: np.ndarray, *args) -> None:
    """Run ``kernel(groups, *args)`` over all groups on threads, in chunks of about equal work
    (``weights``), heaviest first. Each group's results have their own place: the thread count
    never changes a result."""
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
        list(pool.map(lambda c: kernel(c, *args), chunks))  # re-raises a kernel's exception


def soft_nms(x1, x2, score, offsets: np.ndarray, p, max_num: int):
    """OpenTAD's ``SoftNMSop`` for every group ``offsets[g]:offsets[g+1]``, with ``p``'s
    iou_threshold, sigma, min_score, method, t1 and t2 (an NMSSetting).

    Returns ``(index, score, counts)``: per group, in selection order and capped at ``max_num``
    (``<= 0``: no cap), the selected entries' positions and their decayed float32 scores.
    """
    from tadsweep.detections import _nms

    x1, x2, score = (np.ascontiguousarray(a, F32) for a in (x1, x2, score))
    offsets = np.ascontiguousarray(offsets, np.int64)
    out_id = np.empty(len(x1), np.int64)
    out_sc = np.empty(len(x1), F32)
    counts = np.zeros(len(offsets) - 1, np.int64)
    sizes = np.diff(offsets)
    cap = sizes if max_num <= 0 else np.minimum(sizes, int(max_num))
    params = (F32(p.iou_threshold), F32(p.sigma), F32(p.min_score), F32(p.t1), F32(p.t2))
    args = (x1, x2, score, offsets, int(max_num), int(p.method), *params, out_id, out_sc, counts)
    _run_parallel(_nms.soft_nms_groups, sizes * cap, *args)  # weights: the C++ loop's work
    keep = np.arange(len(x1)) - np.repeat(offsets[:-1], sizes) < np.repeat(counts, sizes)
    return out_id[keep], out_sc[keep], counts


def hard_nms(x1, x2, score, offsets: np.ndarray, iou_threshold: float, max_num: int):
    """OpenTAD's ``nms_1d_cpu`` (after its score filter) for every group
    ``offsets[g]:offsets[g+1]``.

    Returns ``(index, counts)``: per group, the kept entries in ``torch.sort`` descending order,
    capped at ``max_num`` (``<= 0``: no cap).
    """
    from tadsweep.detections import _nms

    x1, x2 = (np.ascontiguousarray(a, F32) for a in (x1, x2))
    offsets = np.ascontiguousarray(offsets, np.int64)
    order = sort_desc_groups(score, offsets)  # at::sort(descending) per group, same tie order
    keep = np.zeros(len(x1), np.uint8)
    sizes = np.diff(offsets)
    args = (x1, x2, order, offsets, int(max_num), F32(iou_threshold), keep)
    _run_parallel(_nms.hard_nms_groups, sizes * sizes, *args)  # weights: the C++ loop's work
    kept = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    return order[keep.view(bool)], kept[offsets[1:]] - kept[offsets[:-1]]


def group_by_class(video_offsets: np.ndarray, label: np.ndarray, n_labels: int):
    """Rows grouped per (video, class), classes in order of first appearance in the video (as
    OpenTAD indexes labels per video): ``(rows, offsets)``, group g is
    ``rows[offsets[g]:offsets[g+1]]``."""
    from tadsweep.detections import _nms

    label = np.ascontiguousarray(label, np.int64)
    rows = np.empty(len(label), np.int64)
    starts = np.empty(len(label) + 1, np.int64)
    offsets = np.ascontiguousarray(video_offsets, np.int64)
    n_groups = _nms.group_by_class(offsets, label, int(n_labels), rows, starts)
    return rows, starts[: n_groups + 1].copy()


def sort_desc_groups(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per group, ``torch.sort(values, descending=True)`` indices (global), groups in order:
    the kernel makes torch's very ``std::sort`` call, so ties come out in torch's order."""
    from tadsweep.detections import _nms

    values = np.ascontiguousarray(values, F32)
    out = np.empty(len(values), np.int64)
    _nms.sort_desc_groups(values, np.ascontiguousarray(offsets, np.int64), out)
    return out


def seg_voting(kept_x1, kept_x2, all_x1, all_x2, all_score, thresh):
    """OpenTAD's ``seg_voting`` of one video: the score-weighted mean of all pre-NMS segments
    whose IoU with a kept segment is >= ``thresh``. Returns the voted (x1, x2).

    The row sums and the matrix product depend on torch's reduction and BLAS order, so they run
    in torch on the same dense float32 matrix; only building it is compiled here.
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
