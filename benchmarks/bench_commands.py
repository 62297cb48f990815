"""Benchmark: whole commands as a user runs them, on the files the workflow passes (.npz) and on
JSON written by upstream, beside the in-process steps and upstream OpenTAD's own evaluator and
compiled ``batched_nms`` on the same input.

Data: bench_postprocess.py's THUMOS-14-sized synthetic set (211 videos, 3325 instances, 4000
pre-NMS candidates per video, 2000 detections per video after soft-NMS), written twice: as the
workflow writes it (candidates.npz, detections .npz) and as upstream's test.py writes
result_detection.json (``json.dump``, plain). Each command runs as a subprocess; the first run
is reported apart; wall time and CPU time (user + system of the child) are medians of the rest.
Upstream's code comes from $OPENTAD_ROOT as in tests/test_upstream_exact.py (its `nms_1d_cpu`
compiled into build/opentad-cpu/); without it that part is left out and the output says so.

Run: ``python benchmarks/bench_commands.py`` (``--quick``: 12 videos, 500 candidates each).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_postprocess import make_data  # noqa: E402

from tadsweep.detections import formats  # noqa: E402
from tadsweep.detections.evaluate import evaluate, load_ground_truth  # noqa: E402
from tadsweep.detections.postprocess import NMSSetting, apply_detections  # noqa: E402

TIOUS = [0.3, 0.4, 0.5, 0.6, 0.7]
MULTICLASS, VOTING = "multiclass soft-NMS", "class-agnostic + voting"
SETTINGS = {  # AdaTAD's THUMOS setting, and class-agnostic NMS with score voting
    MULTICLASS: dict(sigma=0.7, max_seg_num=2000, min_score=0.0),
    VOTING: dict(sigma=0.7, max_seg_num=2000, min_score=0.0, multiclass=False, voting_thresh=0.7),
}
FLOORS = {  # what runs before any work
    "floor: python -c pass": "pass",
    "floor: python -c 'import numpy'": "import numpy",
    "floor: imports of evaluate": "import tadsweep.detections.evaluate",
    "floor: imports of apply (no torch)": "import tadsweep.detections.postprocess",
}


def flags(s: dict) -> list[str]:
    out = ["--sigma", str(s["sigma"]), "--max-seg-num", str(s["max_seg_num"])]
    out += ["--min-score", str(s["min_score"])]
    if not s.get("multiclass", True):
        out += ["--no-multiclass", "--voting-thresh", str(s["voting_thresh"])]
    return out


def command(argv: list[str], repeat: int) -> dict:
    """Wall and CPU seconds of `python argv` (first run apart, median of `repeat` more)."""
    runs = []
    for _ in range(repeat + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run([sys.executable, *argv], cwd=ROOT, check=True, **quiet)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        runs.append((wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)))
    rest = runs[1:] or runs  # --repeat 0: the first run only
    return {
        "first": runs[0][0],
        "wall": statistics.median(w for w, _ in rest),
        "cpu": statistics.median(c for _, c in rest),
    }


def clock(fn, repeat: int):
    """Median wall seconds of fn() over `repeat` runs, and its last result."""
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def upstream(root: Path):
    """Upstream's mAP class (in this process, one worker, as the tests run it) and its
    nms.py on the compiled nms_1d_cpu."""
    import opentad_site

    map_module = opentad_site.upstream_map(root)

    def evaluate_map(gt_path: Path, results: dict) -> float:
        ev = map_module.mAP(str(gt_path), {"results": results}, "validation", TIOUS, thread=1)
        ev.evaluate()
        return float(np.mean(ev.mAPs))

    return evaluate_map, opentad_site.upstream_nms(root)


def upstream_nms_all(nms_module, det: formats.Detections, s: dict) -> float:
    """Seconds of upstream's batched_nms over every video (tensors built beforehand, as
    gather_ddp_results builds them; its per-video class index too)."""
    import torch

    inputs = []
    for v in range(len(det.videos)):
        lo, hi = int(det.offsets[v]), int(det.offsets[v + 1])
        _, labels = np.unique(det.label[lo:hi], return_inverse=True)
        inputs.append(
            (
                torch.Tensor(np.stack([det.start[lo:hi], det.end[lo:hi]], 1)),
                torch.Tensor(det.score[lo:hi]),
                torch.Tensor(labels.astype(np.float64)),
            )
        )
    t = time.perf_counter()
    for segs, scores, labels in inputs:
        nms_module.batched_nms(segs, scores, labels, **s)
    return time.perf_counter() - t


def row(what: str, ours: float, theirs: float | None = None, note: str = "") -> None:
    other = f"{theirs:9.2f} s  x{theirs / ours:6.1f}" if theirs is not None else " " * 19
    print(f"{what:<46} {ours:8.2f} s  {other}  {note}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 videos, 500 candidates each")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs after the first")
    parser.add_argument("--no-upstream", action="store_true", help="leave upstream out")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    size = dict(n_videos=12, n_cand=500) if args.quick else {}
    figures: dict = {"cores": os.cpu_count(), "load_average": os.getloadavg()[0]}
    print(f"{os.cpu_count()} cores, load average {figures['load_average']:.1f} at the start")

    with tempfile.TemporaryDirectory(prefix="bench-commands-") as tmp:
        tmp = Path(tmp)
        database, results = make_data(**size)
        known = {a["label"] for v in database.values() for a in v["annotations"]}
        results = {v: [d for d in e if d["label"] in known] for v, e in results.items()}
        gt_path = tmp / "gt.json"
        gt_path.write_text(json.dumps({"database": database}))
        cand = formats.from_dict(results, "synthetic candidates")
        dets = apply_detections(cand, NMSSetting(**SETTINGS[MULTICLASS]))
        files = {}  # (what, format) -> path: the workflow's .npz, and upstream's json.dump
        for what, det in (("candidates", cand), ("detections", dets)):
            files[what, "npz"] = tmp / f"{what}.npz"
            formats.dump(det, files[what, "npz"])
            files[what, "json"] = tmp / f"{what}.json"
            files[what, "json"].write_text(json.dumps({"results": det.to_dict()}))
        print(f"data: {len(cand.videos)} videos, {len(cand)} candidates, {len(dets)} detections")
        for (what, kind), path in files.items():
            print(f"  {what} {kind}: {path.stat().st_size / 1e6:.1f} MB")

        print("\nwhole commands (subprocess)" + " " * 33 + "first    wall    CPU")
        out = str(tmp / "out.npz")
        cmds = {}
        grid = tmp / "grid.json"  # the workflow's per-run step: the default and one more setting
        grid.write_text(
            json.dumps(
                [
                    {"setting": "default", **SETTINGS[MULTICLASS]},
                    {"setting": "s1", **SETTINGS[MULTICLASS], "sigma": 0.5},
                ]
            )
        )
        for kind, label in (("npz", ".npz (the workflow's)"), ("json", "upstream's JSON")):
            sw = ["-m", "tadsweep.detections.postprocess", "sweep", "--gt", str(gt_path), "--grid"]
            sw += [str(grid), "--out", str(tmp / "sweep.tsv"), "--candidates"]
            cmds[f"sweep, 2 settings, {label}"] = [*sw, str(files["candidates", kind])]
            ev = ["-m", "tadsweep.detections.evaluate", str(gt_path)]
            cmds[f"evaluate, {label}"] = [*ev, str(files["detections", kind])]
            ap = ["-m", "tadsweep.detections.postprocess", "apply", str(files["candidates", kind])]
            for name, s in SETTINGS.items():
                cmds[f"apply {name}, {label}"] = [*ap, out, *flags(s)]
        cmds.update({k: ["-c", code] for k, code in FLOORS.items()})
        figures["commands"] = {}
        for name, argv_ in cmds.items():
            r = figures["commands"][name] = command(argv_, args.repeat)
            print(f"  {name:<56} {r['first']:5.2f} s {r['wall']:5.2f} s {r['cpu']:5.2f} s")

        print("\nin-process (median)                              tadsweep   upstream OpenTAD")
        gt = load_ground_truth(gt_path)
        reps = max(args.repeat, 1)
        kernels = figures["kernels"] = {}
        for what in ("candidates", "detections"):
            for kind in ("npz", "json"):
                name = f"load {what} ({kind})"
                kernels[name], _ = clock(
                    lambda p=files[what, kind]: formats.load_detections(p), reps
                )
                row(name, kernels[name])
        for kind, suffix in (("npz", ".npz"), ("JSON export", ".json")):
            name = f"write detections ({kind})"
            kernels[name], _ = clock(lambda s=suffix: formats.dump(dets, tmp / f"o{s}"), reps)
            row(name, kernels[name])
        evaluate_map = nms_module = None
        root = os.environ.get("OPENTAD_ROOT")
        if args.no_upstream or not root:
            print("  (upstream left out: " + ("--no-upstream)" if root else "no $OPENTAD_ROOT)"))
        else:
            evaluate_map, nms_module = upstream(Path(root))
        kernels["evaluate"], m = clock(lambda: evaluate(gt, dets, TIOUS), reps)
        theirs = None
        if evaluate_map:
            t_up, up_map = clock(lambda: evaluate_map(gt_path, dets.to_dict()), 1)
            assert abs(up_map - m["average_mAP"]) < 1e-12, (up_map, m["average_mAP"])
            theirs = kernels["upstream evaluate"] = t_up
        row("evaluate", kernels["evaluate"], theirs, f"average mAP {m['average_mAP']:.4f}")
        for name, s in SETTINGS.items():
            kernels[name], _ = clock(lambda s=s: apply_detections(cand, NMSSetting(**s)), reps)
            theirs = None
            if nms_module:
                theirs = kernels[f"upstream {name}"] = upstream_nms_all(nms_module, cand, s)
            row(f"post-process, {name}", kernels[name], theirs, "upstream: batched_nms per video")
    figures["load_average_end"] = os.getloadavg()[0]
    print(f"load average {figures['load_average_end']:.1f} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
