"""Targets and losses of the anchor-free head (ActionFormer's recipe, one level): a step is positive
in an action's central region (the shortest action wins); sigmoid focal loss over all steps and
classes, 1D DIoU loss on the positives, both per positive."""

import torch
import torch.nn.functional as F

CENTER_FRACTION = 0.25  # half-width of the central region, as a fraction of the action length
CENTER_MIN = 1.5  # ... but at least this many steps, so short actions have positives


def assign(seq_len: int, segs: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """Targets of one sample: cls (T, K) in {0,1}, dist (T, 2) to start/end, positive mask (T,)."""
    points = torch.arange(seq_len, dtype=torch.float32) + 0.5
    cls = torch.zeros(seq_len, num_classes)
    dist = torch.zeros(seq_len, 2)
    if segs.numel() == 0:
        return cls, dist, torch.zeros(seq_len, dtype=torch.bool)
    start, end = segs[:, 0][None], segs[:, 1][None]  # (1, N)
    length = end - start
    center = 0.5 * (start + end)
    radius = torch.clamp(CENTER_FRACTION * length, min=CENTER_MIN)
    p = points[:, None]
    ok = (p > start) & (p < end) & ((p - center).abs() <= radius)  # (T, N)
    cost = length.expand_as(ok).masked_fill(~ok, float("inf"))
    best_cost, best = cost.min(dim=1)
    pos = torch.isfinite(best_cost)
    cls[pos, labels[best[pos]]] = 1.0
    dist[:, 0] = points - segs[best, 0]
    dist[:, 1] = segs[best, 1] - points
    dist[~pos] = 0.0
    return cls, dist, pos


def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    return (alpha * targets + (1 - alpha) * (1 - targets)) * loss


def diou_loss_1d(pred, target, eps=1e-6):
    """1 - DIoU of segments given as (left, right) distances from the same anchor point."""
    pl, pr = pred[:, 0], pred[:, 1]
    tl, tr = target[:, 0], target[:, 1]
    inter = torch.clamp(torch.minimum(pl, tl) + torch.minimum(pr, tr), min=0)
    union = pl + pr + tl + tr - inter
    iou = inter / union.clamp(min=eps)
    enclose = torch.maximum(pl, tl) + torch.maximum(pr, tr)
    center_gap = 0.5 * ((pr - pl) - (tr - tl))
    return 1.0 - iou + (center_gap / enclose.clamp(min=eps)) ** 2


def detection_loss(logits, dist, batch_targets):
    """logits (B, T, K), dist (B, T, 2); batch_targets: list of (segs, labels) per sample."""
    b, t, k = logits.shape
    cls_t, dist_t, pos = zip(*(assign(t, s, lab, k) for s, lab in batch_targets))
    cls_t, dist_t, pos = torch.stack(cls_t), torch.stack(dist_t), torch.stack(pos)
    norm = max(int(pos.sum()), 1)
    cls_loss = sigmoid_focal_loss(logits, cls_t).sum() / norm
    reg_loss = diou_loss_1d(dist[pos], dist_t[pos]).sum() / norm
    return {"cls_loss": cls_loss, "reg_loss": reg_loss, "cost": cls_loss + reg_loss}
