"""Benchmark: evaluation, post-processing and a 48-setting sweep, against the loop reference.

Deterministic THUMOS-14-sized synthetic data: 211 validation videos, 20 classes, 3325
instances; 4000 pre-NMS candidates per video, clustered around the instances like ActionFormer's
(most of them overlap many others of the same class -- the expensive case for soft-NMS); 2000
detections per video after NMS for the evaluation benchmark.

The loop reference (tests/reference_opentad.py) is timed in the same run on a subset and
extrapolated; the output says which subset and how. Run: ``python benchmarks/bench_postprocess.py``
(``--quick`` for a smaller sweep and reference subset).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tadsweep.detections.evaluate import GroundTruth, evaluate  # noqa: E402
from tadsweep.detections.formats import from_dict  # noqa: E402
from tadsweep.detections.postprocess import NMSSetting, apply_detections, sweep  # noqa: E402

N_VIDEOS, N_CLASSES, N_INSTANCES, N_CAND = 211, 20, 3325, 4000


def make_data(seed: int = 0, n_videos: int = N_VIDEOS, n_cand: int = N_CAND):
    """Ground-truth database and pre-NMS candidates ({video: [entries]}); fewer videos or
    candidates per video for a quick run (instances scale with the videos)."""
    rng = np.random.default_rng(seed)
    classes = [f"Class{c:02d}" for c in range(N_CLASSES)]
    n_inst = max(n_videos, round(N_INSTANCES * n_videos / N_VIDEOS))
    per_video = rng.multinomial(n_inst - n_videos, np.ones(n_videos) / n_videos) + 1
    database, results = {}, {}
    for v in range(n_videos):
        name = f"video_test_{v:07d}"
        dur = float(np.clip(rng.lognormal(np.log(180), 0.5), 40, 1200))
        vcls = rng.choice(N_CLASSES, size=rng.integers(1, 3), replace=False)
        k = per_video[v]
        lens = np.clip(rng.lognormal(np.log(4.0), 0.6, k), 0.5, 40)
        starts = np.round(np.sort(rng.uniform(0, dur - lens.max() - 1, k)), 1)
        for j in range(1, k):  # distinct starts: no instance is a duplicate of another
            starts[j] = max(starts[j], round(starts[j - 1] + 0.1, 1))
        gcls = rng.choice(vcls, size=k)
        database[name] = {
            "subset": "validation",
            "duration": dur,
            "annotations": [
                {"segment": [round(float(s), 1), round(float(s + ln), 1)], "label": classes[c]}
                for s, ln, c in zip(starts, lens, gcls)
            ],
        }
        # 70% of the candidates around instances (mostly the right class), 30% background.
        n_fg = int(n_cand * 0.7)
        inst = rng.integers(0, k, n_fg)
        centre = starts[inst] + lens[inst] / 2 + rng.normal(0, 0.3, n_fg) * lens[inst]
        length = lens[inst] * np.exp(rng.normal(0, 0.35, n_fg))
        label = np.where(rng.random(n_fg) < 0.8, gcls[inst], rng.integers(0, N_CLASSES, n_fg))
        score = rng.beta(0.6, 3, n_fg) * np.where(label == gcls[inst], 1.0, 0.4)
        n_bg = n_cand - n_fg
        centre = np.concatenate([centre, rng.uniform(0, dur, n_bg)])
        length = np.concatenate([length, rng.lognormal(np.log(3), 0.8, n_bg)])
        label = np.concatenate(
            [
                label,
                np.where(
                    rng.random(n_bg) < 0.5,
                    rng.choice(vcls, n_bg),
                    rng.integers(0, N_CLASSES, n_bg),
                ),
            ]
        )
        score = np.clip(np.concatenate([score, rng.beta(0.4, 8, n_bg) * 0.5]), 0.001, 0.99)
        s = np.clip(centre - length / 2, 0, dur)
        e = np.clip(centre + length / 2, 0, dur)
        # OpenTAD's order: sliding window by window, each window's top-k by descending score.
        window = np.floor(centre / 12.8).astype(int)
        order = np.lexsort((-score, window))
        results[name] = [
            {
                "segment": [round(float(s[i]), 2), round(float(e[i]), 2)],
                "label": classes[label[i]],
                "score": round(float(score[i]), 4),
            }
            for i in order
        ]
    return database, results


def ground_truth(database) -> GroundTruth:
    import json
    import tempfile

    from tadsweep.detections.evaluate import load_ground_truth

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"database": database}, fh)
    try:
        return load_ground_truth(fh.name)
    finally:
        Path(fh.name).unlink()


def clock(fn, repeat=1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def pair_work(results, multiclass: bool) -> float:
    """Soft-NMS loop work of a set of videos: sum over groups of n^2 (the C++/loop passes)."""
    total = 0.0
    for entries in results.values():
        if multiclass:
            _, counts = np.unique([d["label"] for d in entries], return_counts=True)
            total += float((counts.astype(float) ** 2).sum())
        else:
            total += float(len(entries)) ** 2
    return total


def grid_48():
    grid = []
    for sigma in (0.3, 0.5, 0.7, 0.9):
        for max_seg_num in (200, 1000, 2000):
            for min_score in (0.001, 0.01):
                grid.append(dict(sigma=sigma, max_seg_num=max_seg_num, min_score=min_score))
                grid.append(
                    dict(
                        sigma=sigma,
                        max_seg_num=max_seg_num,
                        min_score=min_score,
                        multiclass=False,
                        voting_thresh=0.7,
                    )
                )
    for k, g in enumerate(grid):
        g["setting"] = f"s{k}"
    return grid


def line(what, ours, ref, note=""):
    ratio = ref / ours if ours > 0 else float("inf")
    print(f"{what:<44} {ours:9.2f} s   reference {ref:10.1f} s   x{ratio:7.1f}  {note}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12-setting sweep, smaller subsets")
    args = parser.parse_args(argv)
    import reference_opentad as ref
    import torch

    print(f"threads: torch {torch.get_num_threads()}; numpy {np.__version__}")
    t0 = time.perf_counter()
    database, results = make_data()
    det = from_dict(results, "synthetic candidates")
    gt = ground_truth(database)
    n_inst = len(gt)
    print(
        f"data: {len(results)} videos, {len(gt.classes)} classes, {n_inst} instances, "
        f"{len(det)} pre-NMS candidates ({time.perf_counter() - t0:.1f} s to generate)"
    )

    # --- evaluation: 2000 detections per video (multiclass soft-NMS, no score floor)
    dets = apply_detections(det, NMSSetting(sigma=0.7, max_seg_num=2000, min_score=0.0))
    dets_dict = dets.to_dict()
    t_eval, m = clock(lambda: evaluate(gt, dets), repeat=3)
    t_ref_eval, m_ref = clock(lambda: ref.evaluate(database, dets_dict))
    assert abs(m["average_mAP"] - m_ref["average_mAP"]) < 1e-9
    print(f"\n{len(dets)} detections evaluated; average mAP {m['average_mAP']:.4f} (same in both)")
    line("evaluate (full data)", t_eval, t_ref_eval, "reference on the full data")

    # --- post-processing: reference timed on a subset, extrapolated by the n^2 loop work
    n_sub = 1 if args.quick else 3
    sub = dict(list(results.items())[:n_sub])
    cases = [
        ("post-process, multiclass soft-NMS", dict(sigma=0.7, max_seg_num=2000, min_score=0.0)),
        (
            "post-process, class-agnostic + voting",
            dict(sigma=0.7, max_seg_num=2000, min_score=0.0, multiclass=False, voting_thresh=0.7),
        ),
    ]
    ref_per_work = {}
    for what, s in cases:
        t_ours, _ = clock(lambda s=s: apply_detections(det, NMSSetting(**s)), repeat=2)
        t_sub, out_sub = clock(lambda s=s: ref.post_process(sub, s))
        assert ref.dumps(out_sub) == ref.dumps(apply_detections(sub, NMSSetting(**s)).to_dict())
        mc = s.get("multiclass", True)
        scale = pair_work(results, mc) / pair_work(sub, mc)
        ref_per_work[mc] = t_sub / pair_work(sub, mc)
        line(what, t_ours, t_sub * scale, f"reference: {n_sub} video(s) x{scale:.0f} (n^2 work)")

    # --- sweep
    grid = grid_48()
    if args.quick:
        grid = grid[::4]
    t_sweep, rows = clock(lambda: sweep(gt, det, grid))
    ref_sweep = 0.0
    for g in grid:
        mc = g.get("multiclass", True)
        ref_sweep += ref_per_work[mc] * pair_work(results, mc)
    ref_sweep += len(grid) * t_ref_eval
    best = max(rows, key=lambda r: r["average_mAP"])
    print(f"\nsweep of {len(grid)} settings; best {best['setting']}: {best['average_mAP']:.4f}")
    line(
        f"sweep ({len(grid)} settings, post-process + evaluate)",
        t_sweep,
        ref_sweep,
        "reference extrapolated from the timings above",
    )


if __name__ == "__main__":
    main()
