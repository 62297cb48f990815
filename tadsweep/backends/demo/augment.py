"""Feature-level stand-ins for AdaTAD's training augmentations (params.augment): imgaug "default"
-> random temporal crop + feature noise; randaugment {num_ops: n, magnitude: m} -> n ops at m/10.
Randomness comes only from the generator passed in, seeded per (seed, epoch) by the trainer."""

import torch

from tadsweep.errors import InputError

CROP_FRACTION = 0.875  # training windows cover 7/8 of a video
MIN_KEPT = 0.5  # a cropped instance survives if at least half of it stays in the window


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (), generator=g))


def crop(feats, segs, labels, start: int, length: int):
    """Cut feats to [start, start+length) and move the instances that mostly survive."""
    end = start + length
    clipped = segs.clamp(min=start, max=end)
    kept = (clipped[:, 1] - clipped[:, 0]) >= MIN_KEPT * (segs[:, 1] - segs[:, 0])
    kept &= clipped[:, 1] > clipped[:, 0]
    return feats[start:end], clipped[kept] - start, labels[kept]


def _op_noise(x, segs, labels, s, g):
    return x + 0.3 * s * torch.randn(x.shape, generator=g), segs, labels


def _op_channel_drop(x, segs, labels, s, g):
    keep = (torch.rand(x.shape[1], generator=g) >= 0.3 * s).to(x.dtype)
    return x * keep, segs, labels


def _op_time_mask(x, segs, labels, s, g):
    width = max(1, int(0.08 * s * x.shape[0]))
    start = _randint(g, 0, x.shape[0] - width)
    x = x.clone()
    x[start : start + width] = 0.0
    return x, segs, labels


def _op_scale(x, segs, labels, s, g):
    lo, hi = 1 - 0.4 * s, 1 + 0.4 * s
    return x * (lo + (hi - lo) * float(torch.rand((), generator=g))), segs, labels


def _op_shift(x, segs, labels, s, g):
    # Translate in time with zero padding; instances move with the content.
    limit = max(1, int(0.1 * s * x.shape[0]))
    shift = _randint(g, -limit, limit)
    padded = torch.zeros((x.shape[0] + 2 * limit, x.shape[1]), dtype=x.dtype)
    padded[limit + shift : limit + shift + x.shape[0]] = x
    return crop(padded, segs + limit + shift, labels, limit, x.shape[0])


def _op_smooth(x, segs, labels, s, g):
    half = max(1, round(2 * s))
    kernel = torch.ones(x.shape[1], 1, 2 * half + 1, dtype=x.dtype) / (2 * half + 1)
    y = torch.nn.functional.conv1d(x.T[None], kernel, padding=half, groups=x.shape[1])
    return y[0].T.contiguous(), segs, labels


RAND_OPS = [_op_noise, _op_channel_drop, _op_time_mask, _op_scale, _op_shift, _op_smooth]


def check(augment: dict) -> None:
    if augment.get("imgaug", "none") not in ("default", "none", None):
        raise InputError(f"augment.imgaug: {augment['imgaug']!r} (demo knows 'default', 'none')")
    ra = augment.get("randaugment")
    if ra is not None and not isinstance(ra, dict):
        raise InputError(f"augment.randaugment: expected null or a mapping, got {ra!r}")


def train_length(augment: dict, seq_len: int) -> int:
    return int(seq_len * CROP_FRACTION) if augment.get("imgaug") == "default" else seq_len


def apply(feats, segs, labels, augment: dict, g: torch.Generator):
    """Augment one training sample (feats (T, C); segs (N, 2) in steps; labels (N,))."""
    if augment.get("imgaug") == "default":
        length = train_length(augment, feats.shape[0])
        feats, segs, labels = crop(
            feats, segs, labels, _randint(g, 0, feats.shape[0] - length), length
        )
        feats = feats + 0.15 * torch.randn(feats.shape, generator=g)
    ra = augment.get("randaugment")
    if ra:
        num_ops = int(ra.get("num_ops", 2))
        strength = float(ra.get("magnitude", 9)) / 10.0
        prob = float(ra.get("prob", 0.5))  # pytorchvideo's: each drawn op acts with this
        order = torch.randperm(len(RAND_OPS), generator=g)[:num_ops]
        for idx in order.tolist():
            if prob >= 1.0 or torch.rand(1, generator=g).item() < prob:
                feats, segs, labels = RAND_OPS[idx](feats, segs, labels, strength, g)
    return feats, segs, labels
