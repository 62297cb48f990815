"""Read and write OpenTAD detection files ``{"results": {video: [{segment, label, score}]}}``.

Files may be gzip-compressed or plain JSON (detected from the content, not the name). Loading
validates every entry and reports the first problem as one line naming the file and the entry,
e.g. ``candidates.json.gz: results["video_3"][12].segment: end 3.1 < start 4.0``.

Internally the tools work on :class:`Detections`, a columnar form (one numpy array per field,
videos kept in file order, entries in list order) because the post-processing and evaluation code
is vectorized; :func:`load` returns the plain dict-of-lists form fixed by the project contract.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from tadsweep import readers
from tadsweep.atomic import atomic_write_bytes
from tadsweep.errors import InputError


@dataclass
class Detections:
    """Detections of many videos in columnar form.

    Entry ``k`` of video ``videos[v]`` is row ``offsets[v] + k``; ``label`` indexes ``labels``.
    Values are float64 exactly as parsed from JSON (OpenTAD converts them to float32 itself).
    """

    videos: list[str]
    offsets: np.ndarray
    start: np.ndarray
    end: np.ndarray
    score: np.ndarray
    label: np.ndarray
    labels: list[str]
    source: str = "<memory>"
    _video_index: dict = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def video_of_row(self) -> np.ndarray:
        """Video index of every row."""
        return np.repeat(np.arange(len(self.videos)), np.diff(self.offsets))

    def video_slice(self, video: str) -> slice:
        if self._video_index is None:
            self._video_index = {v: i for i, v in enumerate(self.videos)}
        i = self._video_index[video]
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def to_dict(self) -> dict[str, list[dict]]:
        """The plain ``{video: [{"segment": [s, e], "label": name, "score": x}, ...]}`` form."""
        out = {}
        start, end, score = self.start.tolist(), self.end.tolist(), self.score.tolist()
        names = [self.labels[i] for i in self.label.tolist()]
        for v, video in enumerate(self.videos):
            lo, hi = int(self.offsets[v]), int(self.offsets[v + 1])
            out[video] = [
                {"segment": [start[k], end[k]], "label": names[k], "score": score[k]}
                for k in range(lo, hi)
            ]
        return out

    def select(self, rows: np.ndarray) -> Detections:
        """Rows ``rows`` (sorted, as a boolean mask or indices) of every video, same videos."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            keep = rows
        else:
            keep = np.zeros(len(self), dtype=bool)
            keep[rows] = True
        counts = np.bincount(self.video_of_row[keep], minlength=len(self.videos))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return Detections(
            list(self.videos),
            offsets,
            self.start[keep],
            self.end[keep],
            self.score[keep],
            self.label[keep],
            list(self.labels),
            self.source,
        )


def concat(parts: list[Detections], source: str = "<memory>") -> Detections:
    """Concatenate detections video by video (videos in first-seen order, parts in order)."""
    labels: dict[str, int] = {}
    for p in parts:
        for name in p.labels:
            labels.setdefault(name, len(labels))
    videos: dict[str, int] = {}
    for p in parts:
        for v in p.videos:
            videos.setdefault(v, len(videos))
    chunks: list[list[tuple[Detections, slice]]] = [[] for _ in videos]
    for p in parts:
        for v, name in enumerate(p.videos):
            chunks[videos[name]].append((p, slice(int(p.offsets[v]), int(p.offsets[v + 1]))))
    cols: dict[str, list] = {"start": [], "end": [], "score": [], "label": []}
    counts = []
    for pieces in chunks:
        n = 0
        for p, sl in pieces:
            remap = np.array([labels[name] for name in p.labels], dtype=np.int32)
            cols["start"].append(p.start[sl])
            cols["end"].append(p.end[sl])
            cols["score"].append(p.score[sl])
            cols["label"].append(remap[p.label[sl]] if len(remap) else p.label[sl])
            n += sl.stop - sl.start
        counts.append(n)

    def cat(key, dtype):
        return np.concatenate(cols[key]).astype(dtype) if cols[key] else np.zeros(0, dtype)

    return Detections(
        list(videos),
        np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64),
        cat("start", np.float64),
        cat("end", np.float64),
        cat("score", np.float64),
        cat("label", np.int32),
        list(labels),
        source,
    )


def _read_json(path: str | os.PathLike) -> object:
    """Parse a plain or gzip JSON data file (tadsweep.readers, with the detection files' size
    cap); corrupt content becomes an InputError naming the file."""
    return readers.read_json(path, max_bytes=readers.MAX_DETECTIONS_BYTES, shape=False)


_NUMBER = frozenset({int, float, np.float64, np.int64})  # exact types: bool is no number


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _entry_problem(entry) -> str | None:
    """Why one detection entry is invalid (slow path, only used to name the first bad entry)."""
    if not isinstance(entry, dict):
        return f"expected an object, got {type(entry).__name__}"
    for key in ("segment", "label", "score"):
        if key not in entry:
            return f'missing key "{key}"'
    seg = entry["segment"]
    if not isinstance(seg, (list, tuple)) or len(seg) != 2 or not all(_number(x) for x in seg):
        return f".segment: expected [start, end] numbers, got {json.dumps(seg)[:60]}"
    s, e = float(seg[0]), float(seg[1])
    if not (math.isfinite(s) and math.isfinite(e)):
        return f".segment: not finite: [{s}, {e}]"
    if s < 0:
        return f".segment: negative start {s}"
    if e < s:
        return f".segment: end {e} < start {s}"
    if not isinstance(entry["label"], str):
        return f".label: expected a class name string, got {json.dumps(entry['label'])[:60]}"
    score = entry["score"]
    if not _number(score):
        return f".score: expected a number, got {json.dumps(score)[:60]}"
    if not math.isfinite(float(score)):
        return f".score: not finite: {score}"
    if score < 0:
        return f".score: negative score {score}"
    return None


def _entry_error(source: str, video: str, k: int, problem: str) -> InputError:
    sep = "" if problem.startswith(".") else ": "
    return InputError(f"{source}: results[{json.dumps(video)}][{k}]{sep}{problem}")


def from_dict(results: dict, source: str = "<memory>") -> Detections:
    """Validate a ``{video: [entries]}`` mapping and convert it to :class:`Detections`."""
    if not isinstance(results, dict):
        raise InputError(f'{source}: "results" must be an object mapping video -> list')
    label_index: dict[str, int] = {}
    starts, ends, scores, labels, counts = [], [], [], [], []
    for video, entries in results.items():
        if not isinstance(entries, list):
            raise InputError(
                f"{source}: results[{json.dumps(video)}]: expected a list of detections, "
                f"got {type(entries).__name__}"
            )
        try:
            # Fast path: plain comprehensions; any structural problem falls to the slow scan.
            seg = np.array([d["segment"] for d in entries], dtype=np.float64)
            sc = np.array([d["score"] for d in entries], dtype=np.float64)
            lab = [d["label"] for d in entries]
            ok = (seg.shape == (len(entries), 2) or len(entries) == 0) and sc.ndim == 1
            ok = ok and all(type(x) is str for x in lab)
            if ok and len(entries):
                s, e = seg[:, 0], seg[:, 1]
                bad = ~(np.isfinite(s) & np.isfinite(e) & np.isfinite(sc))
                bad |= (s < 0) | (e < s) | (sc < 0)
                ok = not bad.any()
            if ok:
                # numpy converts text ("0.5") and booleans to numbers: only JSON numbers pass
                ok = all(
                    type(d["score"]) in _NUMBER
                    and type(d["segment"][0]) in _NUMBER
                    and type(d["segment"][1]) in _NUMBER
                    for d in entries
                )
        except (KeyError, TypeError, ValueError, IndexError):
            ok = False
        if not ok:
            for k, entry in enumerate(entries):
                problem = _entry_problem(entry)
                if problem:
                    raise _entry_error(source, video, k, problem)
            raise InputError(f"{source}: results[{json.dumps(video)}]: malformed detections")
        ids = [label_index.setdefault(x, len(label_index)) for x in lab]
        if len(entries):
            starts.append(seg[:, 0])
            ends.append(seg[:, 1])
        scores.append(sc)
        labels.append(np.asarray(ids, dtype=np.int32))
        counts.append(len(entries))
    z = np.zeros(0)
    return Detections(
        videos=[str(v) for v in results],
        offsets=np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64),
        start=np.concatenate(starts) if starts else z,
        end=np.concatenate(ends) if ends else z.copy(),
        score=np.concatenate(scores) if scores else z.copy(),
        label=np.concatenate(labels) if labels else np.zeros(0, np.int32),
        labels=list(label_index),
        source=source,
    )


def load_detections(path: str | os.PathLike) -> Detections:
    """Load and validate a detection file into columnar :class:`Detections`."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise InputError(f'{path}: expected a JSON object with key "results"')
    if "results" not in data:
        raise InputError(f'{path}: missing key "results"')
    return from_dict(data["results"], source=str(path))


def load(path: str | os.PathLike) -> dict[str, list[dict]]:
    """Load and validate ``{"results": ...}`` (gzip or plain); return the results mapping."""
    return load_detections(path).to_dict()


def as_detections(results, source: str = "<memory>") -> Detections:
    """Accept :class:`Detections` or a plain results mapping (optionally wrapped in "results")."""
    if isinstance(results, Detections):
        return results
    if isinstance(results, dict) and set(results) == {"results"}:
        results = results["results"]
    return from_dict(results, source)


def dump(results, path: str | os.PathLike) -> None:
    """Write ``{"results": results}`` atomically; a ``.gz`` suffix writes gzip."""
    if isinstance(results, Detections):
        results = results.to_dict()
    data = json.dumps({"results": results}, separators=(",", ":")).encode("utf-8")
    if str(path).endswith(".gz"):
        # Level 6 is about 3x faster than the default 9 for 1% more bytes; mtime 0: reproducible.
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)
