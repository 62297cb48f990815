"""Benchmark: whole commands as a user runs them, beside the in-process kernels and upstream
OpenTAD's own evaluator and compiled ``batched_nms`` on the same input.

Data: bench_postprocess.py's THUMOS-14-sized synthetic set (211 videos, 3325 instances, 4000
pre-NMS candidates per video, 2000 detections per video after soft-NMS), written as the workflow
writes it (gzip JSON). Each command runs as a subprocess; the first run is reported apart; wall
time and CPU time (user + system of the child) are medians of the rest.
Upstream's code comes from $OPENTAD_ROOT as in tests/test_upstream_exact.py (its `nms_1d_cpu`
compiled into build/opentad-cpu/); without it that part is left out and the output says so.

Run: ``python benchmarks/bench_commands.py`` (``--quick``: 12 videos, 500 candidates each;
``--baseline DIR``: also time the commands of the ``tadsweep/`` package in DIR, e.g. a copy of an
older version, taking turns with this one so both see the same load).
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
FLOORS = {  # what runs before any work (this version only; not timed for --baseline)
    "python": ("floor: python -c pass", "pass"),
    "numpy": ("floor: python -c 'import numpy'", "import numpy"),
    "floor-evaluate": (
        "floor: imports of evaluate",
        "import tadsweep.detections.evaluate, tadsweep.detections._text",
    ),
    "floor": (
        "floor: imports of apply (no torch)",
        "import tadsweep.detections.postprocess, tadsweep.detections._text",
    ),
}
SETTINGS = {  # AdaTAD's THUMOS setting, and class-agnostic NMS with score voting
    MULTICLASS: dict(sigma=0.7, max_seg_num=2000, min_score=0.0),
    VOTING: dict(sigma=0.7, max_seg_num=2000, min_score=0.0, multiclass=False, voting_thresh=0.7),
}


COMMANDS = ("evaluate", "multiclass", "voting", *FLOORS)  # --commands


def flags(s: dict) -> list[str]:
    out = ["--sigma", str(s["sigma"]), "--max-seg-num", str(s["max_seg_num"])]
    out += ["--min-score", str(s["min_score"])]
    if not s.get("multiclass", True):
        out += ["--no-multiclass", "--voting-thresh", str(s["voting_thresh"])]
    return out


def command(argv: list[str], repeat: int, roots: list[Path]) -> list[dict]:
    """Wall and CPU seconds of `python argv` with each code tree in `roots` first on the path
    (first run apart, median of `repeat` more); the trees take turns, so load hits them alike."""
    runs: list[list] = [[] for _ in roots]
    for _ in range(repeat + 1):
        for k, root in enumerate(roots):
            path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, *argv],
                env={**os.environ, "PYTHONPATH": path},
                cwd=root,  # `python -m` puts the working folder first on the path
                check=True,
                stdout=subprocess.DEVNULL,
            )
            wall = time.perf_counter() - t
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            runs[k].append((wall, cpu))
    out = []
    for r in runs:
        rest = r[1:] or r  # --repeat 0: the first run only
        out.append(
            {
                "first": r[0][0],
                "wall": statistics.median(w for w, _ in rest),
                "cpu": statistics.median(c for _, c in rest),
            }
        )
    return out


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
    kwargs = dict(s)
    t = time.perf_counter()
    for segs, scores, labels in inputs:
        nms_module.batched_nms(segs, scores, labels, **kwargs)
    return time.perf_counter() - t


def row(what: str, ours: float, theirs: float | None = None, note: str = "") -> None:
    other = f"{theirs:9.2f} s  x{theirs / ours:6.1f}" if theirs is not None else " " * 19
    print(f"{what:<46} {ours:8.2f} s  {other}  {note}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 videos, 500 candidates each")
    parser.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="timed runs per command after the first (0: the first only)",
    )
    parser.add_argument("--no-upstream", action="store_true", help="leave upstream out")
    parser.add_argument(
        "--commands", nargs="+", choices=COMMANDS, default=list(COMMANDS), help="commands to time"
    )
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a folder holding another version's tadsweep/ package: its commands are timed "
        "in turn with this one's (old vs new under the same load)",
    )
    args = parser.parse_args(argv)
    size = dict(n_videos=12, n_cand=500) if args.quick else {}
    figures: dict = {"cores": os.cpu_count(), "load_average": os.getloadavg()[0]}
    print(f"{os.cpu_count()} cores, load average {figures['load_average']:.1f} at the start")

    with tempfile.TemporaryDirectory(prefix="bench-commands-") as tmp:
        tmp = Path(tmp)
        database, results = make_data(**size)
        known = {a["label"] for v in database.values() for a in v["annotations"]}
        results = {v: [d for d in e if d["label"] in known] for v, e in results.items()}
        gt_path, cand_path, det_path = tmp / "gt.json", tmp / "cand.json.gz", tmp / "dets.json.gz"
        out_path = tmp / "out.json.gz"
        gt_path.write_text(json.dumps({"database": database}))
        cand = formats.from_dict(results, "synthetic candidates")
        formats.dump(cand, cand_path)
        dets = apply_detections(cand, NMSSetting(sigma=0.7, max_seg_num=2000, min_score=0.0))
        formats.dump(dets, det_path)
        print(
            f"data: {len(cand.videos)} videos, {len(cand)} candidates "
            f"({cand_path.stat().st_size / 1e6:.1f} MB gzip), {len(dets)} detections "
            f"({det_path.stat().st_size / 1e6:.1f} MB gzip)\n"
        )

        roots = [ROOT] + ([args.baseline.resolve()] if args.baseline else [])
        head = "whole commands (subprocess)                                 first    wall   CPU"
        print(head + ("   | baseline: first   wall    CPU" if args.baseline else ""))
        apply = ["-m", "tadsweep.detections.postprocess", "apply", str(cand_path), str(out_path)]
        cmds = {
            "evaluate": (
                "evaluate",
                ["-m", "tadsweep.detections.evaluate", str(gt_path), str(det_path)],
            ),
            "multiclass": (
                f"postprocess apply, {MULTICLASS}",
                [*apply, *flags(SETTINGS[MULTICLASS])],
            ),
            "voting": (f"postprocess apply, {VOTING}", [*apply, *flags(SETTINGS[VOTING])]),
            **{k: (what, ["-c", code]) for k, (what, code) in FLOORS.items()},
        }
        figures["commands"] = {}
        for key in args.commands:
            name, argv_ = cmds[key]
            rs = command(argv_, args.repeat, roots[:1] if key in FLOORS else roots)
            figures["commands"][name] = rs[0]
            line = f"  {name:<56} " + "  |  ".join(
                f"{r['first']:5.2f} s {r['wall']:5.2f} s {r['cpu']:5.2f} s" for r in rs
            )
            if len(rs) > 1:
                figures.setdefault("baseline", {})[name] = rs[1]
            print(line)

        print("\nin-process kernels (median)                      tadsweep   upstream OpenTAD")
        gt = load_ground_truth(gt_path)
        reps = max(args.repeat, 1)
        t_load, det = clock(lambda: formats.load_detections(det_path), reps)
        t_eval, m = clock(lambda: evaluate(gt, det, TIOUS), reps)
        figures["kernels"] = {"load detections": t_load, "evaluate": t_eval}
        row("load detections (gzip JSON -> columns)", t_load)
        evaluate_map = nms_module = None
        root = os.environ.get("OPENTAD_ROOT")
        if args.no_upstream or not root:
            print("  (upstream left out: " + ("--no-upstream)" if root else "no $OPENTAD_ROOT)"))
        else:
            evaluate_map, nms_module = upstream(Path(root))
        theirs = None
        if evaluate_map:
            plain = det.to_dict()
            t_up, up_map = clock(lambda: evaluate_map(gt_path, plain), 1)
            assert abs(up_map - m["average_mAP"]) < 1e-12, (up_map, m["average_mAP"])
            theirs = figures["kernels"]["upstream evaluate"] = t_up
        row("evaluate", t_eval, theirs, f"average mAP {m['average_mAP']:.4f}")
        for name, s in SETTINGS.items():
            t_ours, out = clock(lambda s=s: apply_detections(cand, NMSSetting(**s)), reps)
            figures["kernels"][name] = t_ours
            theirs = None
            if nms_module:
                theirs = upstream_nms_all(nms_module, cand, s)
                figures["kernels"][f"upstream {name}"] = theirs
            row(f"post-process, {name}", t_ours, theirs, "upstream: batched_nms per video")
            if name == MULTICLASS:
                t_dump, _ = clock(lambda out=out: formats.dump(out, tmp / "o.json.gz"), reps)
                figures["kernels"]["write detections"] = t_dump
                row("write detections (columns -> gzip JSON)", t_dump)
    print("\ntargets (warm cache): evaluate < 0.5 s, one post-processing call < 1.5 s end to end")
    figures["load_average_end"] = os.getloadavg()[0]
    print(f"load average {figures['load_average_end']:.1f} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
