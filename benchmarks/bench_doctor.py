"""The doctor's data audit on about 400 generated videos of THUMOS-14's size (320x180, 30 fps,
1-4 minutes), whole command as a user runs it, projected to THUMOS-14's 413 videos.

    python benchmarks/bench_doctor.py [--videos 400] [--jobs N] [--dir DIR]

Eight distinct clips are encoded (OpenCV's mp4v) and copied to 400 files with an annotation that
lists them all. The page cache is dropped before the timed run where the user may (root), so the
audit reads every file's headers from disk, as on a shared filesystem's first read.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THUMOS_VIDEOS = 413  # OpenTAD's raw THUMOS-14 videos: 200 validation + 213 test
FPS, SIZE = 30, (320, 180)
LENGTHS = (60, 90, 120, 150, 180, 210, 240, 75)  # seconds, one distinct clip each


def clip(path: Path, seconds: int) -> None:
    import cv2
    import numpy as np

    w, h = SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    for f in range(seconds * FPS):
        frame = np.broadcast_to((ramp + 3 * f) % 256, (h, w, 3)).astype(np.uint8)
        writer.write(np.ascontiguousarray(frame))
    writer.release()


def make_site(dest: Path, n: int, scale: float = 1.0) -> tuple[Path, Path]:
    videos = dest / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    sources = []
    for i, seconds in enumerate(LENGTHS[: min(n, len(LENGTHS))]):
        seconds = max(1, round(seconds * scale))
        src = dest / f"clip{i}.mp4"
        if not src.exists():
            clip(src, seconds)
        sources.append((src, seconds))
    db = {}
    for k in range(n):
        src, seconds = sources[k % len(sources)]
        name = f"video_{'test' if k % 2 else 'validation'}_{k:07d}"
        shutil.copyfile(src, videos / f"{name}.mp4")
        db[name] = {
            "subset": "validation" if k % 2 else "training",
            "duration": float(seconds),
            "frame": seconds * FPS,
            "annotations": [{"segment": [1.0, 5.0], "label": "Diving"}],
        }
    annotation = dest / "annotation.json"
    annotation.write_text(json.dumps({"database": db}))
    return annotation, videos


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=400)
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--dir", help="keep the generated site here (default: a temporary folder)")
    ap.add_argument("--scale", type=float, default=1.0, help="clip lengths times this (tests)")
    ap.add_argument("--warm", action="store_true", help="keep the page cache (tests)")
    args = ap.parse_args(argv)
    tmp = Path(args.dir or tempfile.mkdtemp(prefix="bench-doctor-"))
    try:
        started = time.perf_counter()
        annotation, videos = make_site(tmp, args.videos, args.scale)
        made = time.perf_counter() - started
        cold = not args.warm and drop_caches()
        cmd = [
            sys.executable,
            "-m",
            "tadsweep.site.doctor",
            "--out",
            str(tmp / "out"),
            "--annotation",
            str(annotation),
            "--videos",
            str(videos),
            "--expect",
            "none",
            "--jobs",
            str(args.jobs),
        ]
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        )
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"the doctor failed ({proc.returncode}): {proc.stderr[-2000:]}")
        with open(tmp / "out" / "videos.tsv") as fh:
            probe = sorted(float(r["seconds"]) for r in csv.DictReader(fh, delimiter="\t"))
        figures = {
            "videos": args.videos,
            "jobs": args.jobs,
            "cache": "cold" if cold else "warm",
            "site_seconds": round(made, 1),
            "audit_seconds": round(wall, 2),
            "per_video_ms": round(1000 * wall / args.videos, 1),
            "probe_median_ms": round(1000 * probe[len(probe) // 2], 1),
            "thumos14_projected_seconds": round(wall * THUMOS_VIDEOS / args.videos, 1),
        }
    finally:
        if not args.dir:
            shutil.rmtree(tmp, ignore_errors=True)
    width = max(map(len, figures))
    print("doctor data audit (whole command: annotation, listing, every video probed)")
    for key, value in figures.items():
        print(f"  {key:<{width}}  {value}")
    return figures


if __name__ == "__main__":
    main()
