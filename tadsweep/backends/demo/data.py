"""Synthetic THUMOS-like feature sequences and annotations, in OpenTAD's on-disk formats: class
signatures, overlaps, noise and unannotated look-alikes keep a small detector far from 100% mAP."""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tadsweep.backends.demo.io import atomic_write_bytes, save_npy, write_json
from tadsweep.errors import InputError

FEATURE_RATE = 2.0  # feature steps per second of video
FPS = 30  # nominal frame rate, only used for the annotation's "frame" field
SEQ_LEN = 256  # steps per video
FEAT_DIM = 32  # channels per step
NOISE_STD = 0.9  # per channel, white
DRIFT_STD = 0.5  # per channel, slow (about 24 steps)
SIGNAL_NORM = 3.5  # norm of a body vector (noise norm is NOISE_STD * sqrt(FEAT_DIM))
PULSE_GAIN = 2.0  # onset/offset pulses relative to the body
CLASS_NAMES = ["Sprint", "HighJump", "Throw", "Dive", "Spin", "Vault", "Swing", "Lift"]


def class_names(num_classes: int) -> list[str]:
    extra = [f"Class{k}" for k in range(len(CLASS_NAMES), num_classes)]
    return (CLASS_NAMES + extra)[:num_classes]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@dataclass
class Signatures:
    onset: np.ndarray  # (K, C)
    body: np.ndarray  # (K, C)
    offset: np.ndarray  # (K, C)
    period: np.ndarray  # (K,) steps of the body's modulation
    median_len: np.ndarray  # (K,) typical instance length in steps


def make_signatures(rng: np.random.Generator, num_classes: int, dim: int) -> Signatures:
    k = num_classes
    basis = _unit(rng.standard_normal((3 * k, dim)))
    # Neighbouring classes share part of their body so that the body alone is ambiguous.
    body = _unit(0.75 * basis[2 * k :] + 0.66 * np.roll(basis[2 * k :], -1, axis=0))
    frac = np.arange(k) / max(k - 1, 1)
    return Signatures(
        onset=basis[:k],
        body=body,
        offset=basis[k : 2 * k],
        period=4.0 + 12.0 * frac,
        median_len=10.0 + 30.0 * rng.permutation(frac),
    )


def _render_instance(sig: Signatures, k: int, length: int, amp: float, rng, body_only=False):
    i = np.arange(length, dtype=np.float64)
    phase = rng.uniform(0, 2 * math.pi)
    ramp = np.clip(np.minimum(i + 1, length - i) / 2.0, 0.0, 1.0)
    body_w = ramp * (0.6 + 0.4 * np.cos(2 * math.pi * i / sig.period[k] + phase))
    out = body_w[:, None] * sig.body[k][None]
    if not body_only:
        width = 1.5
        pulse_on = PULSE_GAIN * np.exp(-(i**2) / (2 * width**2))
        pulse_off = PULSE_GAIN * np.exp(-((i - length + 1) ** 2) / (2 * width**2))
        out += pulse_on[:, None] * sig.onset[k][None] + pulse_off[:, None] * sig.offset[k][None]
    return (SIGNAL_NORM * amp) * out


def _smooth_noise(rng, length: int, dim: int, width: int) -> np.ndarray:
    raw = rng.standard_normal((length + 2 * width, dim))
    kernel = np.hanning(2 * width + 1)
    kernel /= np.sqrt((kernel**2).sum())
    out = np.stack([np.convolve(raw[:, c], kernel, mode="valid") for c in range(dim)], axis=1)
    return out[:length]


def make_video(rng, sig: Signatures, num_classes: int):
    """One video: features (T, C) and a list of (start_step, end_step, class)."""
    feats = NOISE_STD * rng.standard_normal((SEQ_LEN, FEAT_DIM))
    feats += DRIFT_STD * _smooth_noise(rng, SEQ_LEN, FEAT_DIM, width=12)
    instances = []
    cursor = int(rng.integers(0, 24))
    while True:
        k = int(rng.integers(num_classes))
        length = int(np.clip(round(sig.median_len[k] * math.exp(rng.normal(0, 0.35))), 5, 90))
        if cursor + length > SEQ_LEN:
            break
        feats[cursor : cursor + length] += _render_instance(
            sig, k, length, float(rng.uniform(0.6, 1.2)), rng
        )
        instances.append((cursor, cursor + length, k))
        # A negative gap makes the next instance overlap this one.
        gap = int(rng.integers(-length // 3 if rng.random() < 0.25 else 2, 36))
        cursor = max(cursor + length + gap, cursor + 2)
    for _ in range(int(rng.integers(0, 4))):
        k = int(rng.integers(num_classes))
        length = int(rng.integers(6, 40))
        start = int(rng.integers(0, SEQ_LEN - length))
        feats[start : start + length] += _render_instance(
            sig, k, length, float(rng.uniform(0.4, 0.8)), rng, body_only=True
        )
    return feats.astype(np.float32), instances


def generate(out: str | Path, seed: int, videos_train=40, videos_val=30, num_classes=5) -> None:
    """Write annotations.json, category_idx.txt and features/<video>.npy under `out`."""
    if min(videos_train, videos_val) < 1 or num_classes < 2:
        raise InputError("demo data needs >= 1 training and validation video and >= 2 classes")
    out = Path(out)
    rng = np.random.default_rng(seed)
    sig = make_signatures(rng, num_classes, FEAT_DIM)
    names = class_names(num_classes)
    duration = SEQ_LEN / FEATURE_RATE
    database = {}
    for subset, count, prefix in (
        ("training", videos_train, "video_validation"),
        ("validation", videos_val, "video_test"),
    ):
        # THUMOS-14 naming: the "training" subset are its validation videos.
        for n in range(count):
            name = f"{prefix}_{n:07d}"
            feats, instances = make_video(rng, sig, num_classes)
            save_npy(feats, out / "features" / f"{name}.npy")
            database[name] = {
                "subset": subset,
                "duration": duration,
                "frame": int(round(duration * FPS)),
                "annotations": [
                    {
                        "segment": [round(s / FEATURE_RATE, 2), round(e / FEATURE_RATE, 2)],
                        "label": names[k],
                    }
                    for s, e, k in instances
                ],
            }
    atomic_write_bytes(out / "category_idx.txt", "".join(f"{n}\n" for n in names).encode())
    # Written last: its presence marks a complete dataset.
    write_json({"database": database}, out / "annotations.json")


@dataclass
class Video:
    name: str
    feats: torch.Tensor  # (T, C) float32
    segments: torch.Tensor  # (N, 2) in feature steps
    labels: torch.Tensor  # (N,) int64
    duration: float
    rate: float  # feature steps per second


@dataclass
class Dataset:
    classes: list[str]
    train: list[Video]
    val: list[Video]
    annotation_path: Path


def load(data_dir: str | Path) -> Dataset:
    data_dir = Path(data_dir)
    ann_path = data_dir / "annotations.json"
    try:
        database = json.loads(ann_path.read_text())["database"]
        classes = [c for c in (data_dir / "category_idx.txt").read_text().splitlines() if c]
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"{data_dir}: not a demo dataset ({type(err).__name__}: {err})") from None
    index = {c: i for i, c in enumerate(classes)}
    subsets = {"training": [], "validation": []}
    for name in sorted(database):
        info = database[name]
        path = data_dir / "features" / f"{name}.npy"
        try:
            feats = torch.from_numpy(np.load(path).astype(np.float32))
        except OSError as err:
            raise InputError(f"{path}: cannot read features ({err})") from None
        duration = float(info["duration"])
        rate = feats.shape[0] / duration
        segs = torch.tensor([a["segment"] for a in info["annotations"]], dtype=torch.float32)
        labels = torch.tensor([index[a["label"]] for a in info["annotations"]], dtype=torch.int64)
        video = Video(name, feats, segs.reshape(-1, 2) * rate, labels, duration, rate)
        subsets.get(info["subset"], []).append(video)
    if not subsets["training"] or not subsets["validation"]:
        raise InputError(f"{ann_path}: needs videos in both 'training' and 'validation' subsets")
    return Dataset(classes, subsets["training"], subsets["validation"], ann_path)
