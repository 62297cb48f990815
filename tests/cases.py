"""Small random inputs with many ties, for comparing tadsweep against the loop reference; and
`set_dotted`, which tests use to change nested config or params values."""

from __future__ import annotations

import numpy as np


def set_dotted(tree: dict, overrides: dict) -> dict:
    """Set each dotted path of `overrides` in `tree` (in place), e.g. {"lora.r": 0}; returns it."""
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = tree
        for key in parents:
            node = node[key]
        node[leaf] = value
    return tree


def candidates(rng: np.random.Generator, n_videos=4, max_n=40, n_labels=3) -> dict:
    """Pre-NMS candidates: integer-grid or 2-decimal segments, scores from a small set (ties),
    zero-length segments, empty and one-detection videos."""
    res = {}
    for v in range(int(rng.integers(1, n_videos + 1))):
        n = int(rng.choice([0, 1, int(rng.integers(2, max_n + 1))]))
        grid = rng.random() < 0.5
        entries = []
        for _ in range(n):
            if grid:
                s = float(rng.integers(0, 10))
                e = s + float(rng.integers(0, 4))
            else:
                s = round(float(rng.random() * 20), 2)
                e = round(s + float(rng.exponential(2)), 2)
            if rng.random() < 0.6:
                score = float(rng.choice([0.001, 0.0005, 0.01, 0.1, 0.5, 0.9]))
            else:
                score = round(float(rng.random()), 4)
            entries.append(
                {"segment": [s, e], "label": f"c{rng.integers(0, n_labels)}", "score": score}
            )
        res[f"v{v}"] = entries
    return res


def setting(rng: np.random.Generator) -> dict:
    return dict(
        method=int(rng.integers(0, 4)),
        sigma=float(rng.choice([0.3, 0.5, 0.9])),
        min_score=float(rng.choice([0.0, 0.001, 0.01, 0.2])),
        max_seg_num=int(rng.choice([1, 3, 10, 100])),
        multiclass=bool(rng.random() < 0.5),
        iou_threshold=float(rng.choice([0.0, 0.3, 0.6])),
        voting_thresh=float(rng.choice([0.0, 0.0, 0.5, 0.8])),
        use_soft_nms=bool(rng.random() < 0.8),
        t1=float(rng.choice([0.0, 0.2])),
        t2=float(rng.choice([0.0, 0.05])),
    )


def ground_truth_and_predictions(rng: np.random.Generator) -> tuple[dict, dict]:
    """A database (duplicates, zero-length, other-subset videos) and predictions with tied
    scores, tied tIoUs, videos without ground truth and labels that are not GT classes."""
    db, res = {}, {}
    for v in range(int(rng.integers(1, 6))):
        anns = []
        for _ in range(int(rng.integers(0, 8))):
            s = float(rng.integers(0, 20))
            anns.append(
                {"segment": [s, s + float(rng.integers(0, 4))], "label": f"c{rng.integers(0, 3)}"}
            )
        if anns and rng.random() < 0.3:
            anns.append(dict(anns[0]))  # exact duplicate
        subset = "validation" if rng.random() < 0.85 else "training"
        db[f"v{v}"] = {"subset": subset, "annotations": anns}
        entries = []
        for _ in range(int(rng.integers(0, 25))):
            s = float(rng.integers(0, 20)) + float(rng.choice([0.0, 0.5]))
            entries.append(
                {
                    "segment": [s, s + float(rng.integers(0, 5))],
                    "label": f"c{rng.integers(0, 4)}",
                    "score": float(rng.choice([0.1, 0.2, 0.5, 0.9])),
                }
            )
        res[f"v{v}"] = entries
    return db, res
