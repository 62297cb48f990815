"""The data audit: the annotation JSON against THUMOS-14's shape as OpenTAD ships it, the class
map, and every listed video (present, decodable by decord, frames and fps as the annotation says,
not truncated), in parallel. It reads headers (the mp4 box sizes, decord's index) and decodes one
keyframe per video, never whole videos: cheap enough to run before every study."""

import json
import math
import os
import struct
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tadsweep.atomic import atomic_path
from tadsweep.errors import InputError
from tadsweep.site.doctor import Finding, finding

THUMOS_CLASSES = (  # noqa: SIM905 -- a list this long reads better as one string
    "BaseballPitch BasketballDunk Billiards CleanAndJerk CliffDiving CricketBowling CricketShot "
    "Diving FrisbeeCatch GolfSwing HammerThrow HighJump JavelinThrow LongJump PoleVault Shotput "
    "SoccerPenalty TennisSwing ThrowDiscus VolleyballSpiking"
).split()
# OpenTAD's annotation: THUMOS validation videos as "training", test videos as "validation", less
# two test videos it removes on purpose (tools/prepare_data/thumos/README.md)
THUMOS_SUBSETS = {"training": 200, "validation": 211}
THUMOS_REMOVED = {"video_test_0000270", "video_test_0001292"}
IGNORED_LABEL = "Ambiguous"  # OpenTAD's loaders skip it
VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".webm", ".mov"}
MAX_ANNOTATION_BYTES = 1 << 28
TOLERANCE = 0.01  # relative: fps and frame counts; a re-encode moves them by far more


def read_annotation(path) -> tuple[dict, list[Finding]]:
    """The database, with duplicate video ids reported (JSON keeps the last silently)."""
    try:
        if os.path.getsize(path) > MAX_ANNOTATION_BYTES:
            raise InputError(
                f"{path}: larger than {MAX_ANNOTATION_BYTES} bytes: no annotation file"
            )
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the annotation file ({exc})") from None
    dups: list[str] = []

    def pairs(items):
        seen = {}
        for k, v in items:
            if k in seen:
                dups.append(k)
            else:
                seen[k] = v
        return seen

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except ValueError as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None
    db = data.get("database") if isinstance(data, dict) else None
    if not isinstance(db, dict):
        raise InputError(f"{path}: no 'database' mapping (OpenTAD's annotation format)")
    twice = dict.fromkeys(d for d in dups if d in db)
    return db, [finding("annotation-duplicate-id", f"{path}: {k}", "twice", "once") for k in twice]


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _video_ok(info) -> bool:
    return (
        isinstance(info, dict)
        and _number(info.get("duration"))
        and info["duration"] > 0
        and isinstance(info.get("frame"), int)
        and info["frame"] > 0
    )


def check_annotation(path, class_map, expect: str | None) -> tuple[dict, list[Finding]]:
    db, out = read_annotation(path)
    classes = []
    if class_map:
        try:
            classes = [c.strip() for c in Path(class_map).read_text().splitlines() if c.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{class_map}: cannot read the class map ({exc})") from None
    counts, labels = {}, {}
    for video, info in db.items():
        if not _video_ok(info):
            want = "duration > 0 and frame > 0"
            out.append(finding("annotation-video-invalid", f"{path}: {video}", info, want))
            continue
        counts[info.get("subset")] = counts.get(info.get("subset"), 0) + 1
        out += _segments(path, video, info, labels)
    for label, n in sorted(labels.items()) if class_map else ():
        if label not in classes:
            used = f"used by {n} segment(s), not listed"
            subject = f"{class_map}: {label}"
            out.append(finding("label-missing-from-class-map", subject, used, "listed"))
    if expect == "thumos14":
        out += _thumos_shape(path, class_map, counts, labels, classes)
    subsets = dict(sorted(counts.items(), key=str))
    read = f"{len(db)} videos, {sum(labels.values())} segments, {len(labels)} labels; {subsets}"
    return db, out + [finding("annotation", path, read, "")]


def _segments(path, video, info, labels) -> list[Finding]:
    out, past, dup, seen = [], [], 0, []
    for i, ann in enumerate(info.get("annotations") or []):
        where = f"{path}: {video}.annotations[{i}]"
        seg = ann.get("segment") if isinstance(ann, dict) else None
        if not (isinstance(seg, list) and len(seg) == 2 and all(map(_number, seg))):
            out.append(finding("segment-invalid", where, ann, "{segment: [start, end], label}"))
            continue
        (s, e), label = seg, ann.get("label")
        if not isinstance(label, str):
            out.append(finding("segment-invalid", where, ann, "a label"))
            continue
        if label != IGNORED_LABEL:
            labels[label] = labels.get(label, 0) + 1
        if s >= e:
            out.append(finding("segment-empty", where, seg, "start < end"))
        if s < 0 or e > info["duration"] + 0.5:
            past.append(seg)
        dup += any(lb == label and abs(s - a) <= 1e-3 and abs(e - b) <= 1e-3 for lb, a, b in seen)
        seen.append((label, s, e))
    if past:
        found = f"{len(past)} segment(s) outside [0, {info['duration']}] s, e.g. {past[0]}"
        out.append(finding("segment-past-end", f"{path}: {video}", found, "inside the video"))
    if dup:
        out.append(finding("annotation-duplicate-segment", f"{path}: {video}", dup, 0))
    return out


def _thumos_shape(path, class_map, counts, labels, classes) -> list[Finding]:
    out = []
    for subset, n in THUMOS_SUBSETS.items():
        if counts.get(subset, 0) != n:
            subject = f"{path}: subset {subset}"
            out.append(finding("annotation-subset-count", subject, counts.get(subset, 0), n))
    if set(labels) != set(THUMOS_CLASSES):
        missing, extra = set(THUMOS_CLASSES) - set(labels), set(labels) - set(THUMOS_CLASSES)
        found = f"missing {sorted(missing)}, extra {sorted(extra)}"
        out.append(finding("annotation-classes", f"{path}: labels", found, "20 THUMOS classes"))
    if class_map and classes != THUMOS_CLASSES:
        found = f"{len(classes)} classes"
        out.append(finding("class-map", class_map, found, "THUMOS-14's 20 in OpenTAD's order"))
    return out


# --- videos -------------------------------------------------------------------------------------


def mp4_truncation(path) -> str | None:
    """Why an ISO media file (mp4/mov) is cut short, from its top-level box sizes alone."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        pos = 0
        while pos < size:
            fh.seek(pos)
            head = fh.read(16)
            if len(head) < 8:
                return f"{size - pos} stray bytes at the end"
            length, kind = struct.unpack(">I4s", head[:8])
            if length == 1 and len(head) == 16:
                length = struct.unpack(">Q", head[8:16])[0]
            elif length == 0:  # runs to the end of the file
                return None
            if length < 8:
                return f"box at byte {pos} has size {length}"
            if pos + length > size:
                name = kind.decode("latin-1")
                return f"box '{name}' needs {pos + length} bytes, the file has {size}"
            pos += length
    return None


def probe(path: str, frames: int, duration: float) -> dict:
    """One video: present, readable, frames and fps against the annotation (one decoded frame)."""
    row = {"bytes": None, "frames": None, "fps": None, "problem": ""}
    started = time.perf_counter()
    try:
        row["bytes"] = os.path.getsize(path)
    except OSError:
        return row | {"status": "missing", "seconds": 0.0}
    status = "ok"
    if row["bytes"] == 0:
        status = "empty"
    elif Path(path).suffix.lower() in {".mp4", ".mov", ".m4v"} and (why := mp4_truncation(path)):
        status, row["problem"] = "truncated", why
    else:
        try:
            import decord

            vr = decord.VideoReader(path, num_threads=1)
            row["frames"], row["fps"] = len(vr), float(vr.get_avg_fps())
            vr[0]  # one keyframe decodes: the codec works (the box walk found no cut)
        except Exception as exc:  # decord raises its own DECORDError and RuntimeErrors
            status, row["problem"] = "undecodable", " ".join(str(exc).split())[:200]
        else:
            anno_fps = frames / duration
            if abs(row["fps"] - anno_fps) > TOLERANCE * anno_fps:
                status = "fps-mismatch"
            elif abs(row["frames"] - frames) > max(2, TOLERANCE * frames):
                status = "frames-mismatch"
    return row | {"status": status, "seconds": round(time.perf_counter() - started, 4)}


def listing(db: dict, videos) -> list[Finding]:
    """Listed videos that are absent and present videos no split lists (no video is opened)."""
    videos = Path(videos)
    if not videos.is_dir():
        raise InputError(f"{videos}: no such folder of videos")
    present = {p.stem for p in videos.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES}
    out = [
        finding("video-missing", videos / f"{v}.mp4", "absent", "present")
        for v in sorted(set(db) - present)
    ]
    for v in sorted(present - set(db)):
        kind = "video-removed-upstream" if v in THUMOS_REMOVED else "video-unannotated"
        out.append(finding(kind, videos / v, "present, not in the annotation", "annotated"))
    return out


def _probe_finding(path, row) -> Finding | None:
    status = row["status"]
    if status in ("ok", "missing"):  # missing: listing() says so
        return None
    found, expected = row.get("problem") or status, "readable"
    if status in ("fps-mismatch", "frames-mismatch"):  # check_videos' rows
        found = f"{row['frames']} frames at {row['fps']:.3f} fps"
        expected = f"{row['anno_frames']} frames at {row['anno_fps']:.3f} fps"
    return finding(f"video-{status}", path, found, expected)


def check_videos(db: dict, videos, jobs: int):
    """Every listed video probed in parallel; returns (findings, per-video rows)."""
    out, videos = listing(db, videos), Path(videos)
    listed = {v: i for v, i in db.items() if _video_ok(i)}
    rows = []
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {
            pool.submit(probe, str(videos / f"{v}.mp4"), i["frame"], float(i["duration"])): v
            for v, i in listed.items()
        }
        done = as_completed(futures)
        if sys.stderr.isatty():
            from tqdm import tqdm

            done = tqdm(done, total=len(futures), desc="videos", unit="video", file=sys.stderr)
        for fut in done:
            v, info = futures[fut], listed[futures[fut]]
            fps = round(info["frame"] / info["duration"], 3)
            rows.append({"video": v, "subset": info.get("subset", ""), **fut.result()})
            rows[-1] |= {"anno_frames": info["frame"], "anno_fps": fps}
            out.append(_probe_finding(videos / f"{v}.mp4", rows[-1]))
    rows.sort(key=lambda r: r["video"])
    return sorted((f for f in out if f), key=lambda f: (f.id, f.subject)), rows


def check_features(db: dict, features) -> tuple[list[Finding], list[dict]]:
    """The demo's pre-extracted features (one .npy per video): present, readable, one rate."""
    import numpy as np

    rows = []
    for v, info in sorted(db.items()):
        row = {"video": v, "subset": info.get("subset", ""), "status": "ok", "frames": None}
        try:
            row["frames"] = int(np.load(Path(features, f"{v}.npy"), mmap_mode="r").shape[0])
            row["rate"] = row["frames"] / float(info["duration"])
        except FileNotFoundError:
            row["status"] = "missing"
        except Exception as exc:  # noqa: BLE001 -- numpy raises many kinds on a corrupt file
            row["status"], row["problem"] = "undecodable", str(exc)[:200]
        rows.append(row)
    rates = sorted(r["rate"] for r in rows if r["status"] == "ok")
    median = rates[len(rates) // 2] if rates else None
    out = []
    for row in rows:
        path = Path(features, row["video"] + ".npy")
        if row["status"] == "ok" and abs(row["rate"] - median) > TOLERANCE * median:
            row["status"] = "fps-mismatch"
            found, want = f"{row['rate']:.3f} steps/s", f"{median:.3f} steps/s (the other videos')"
            out.append(finding("video-fps-mismatch", path, found, want))
        elif row["status"] == "missing":
            out.append(finding("video-missing", path, "absent", "present"))
        else:
            out.append(_probe_finding(path, row))
    return [f for f in out if f], rows


def write_table(rows: list[dict], path) -> None:
    """The per-video table (TSV), atomically."""
    import pandas as pd

    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, sep="\t", index=False)
