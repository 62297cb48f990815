"""Detections in columns (:class:`Detections`), and their two file formats: the workflow's own
``.npz`` between steps, OpenTAD's JSON at the edges, every entry checked where it enters, a bad
one named (``results["video_3"][12].segment: end 3.1 < start 4.0``). See docs/architecture.md,
"Detection files"."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import zipfile
from dataclasses import dataclass, replace

import numpy as np

from tadsweep import readers
from tadsweep.atomic import atomic_path, atomic_write_bytes
from tadsweep.errors import InputError

FORMAT = "tadsweep detections 1"  # the .npz's "format" entry
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass
class Detections:
    """Detections of many videos: entry ``k`` of video ``videos[v]`` is row ``offsets[v] + k``;
    ``label`` indexes ``labels``. float64 as parsed (OpenTAD converts to float32 itself)."""

    videos: list[str]
    offsets: np.ndarray
    start: np.ndarray
    end: np.ndarray
    score: np.ndarray
    label: np.ndarray
    labels: list[str]
    source: str = "<memory>"

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def video_of_row(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.videos)), np.diff(self.offsets))

    def where(self, row: int) -> str:
        """``results["video"][k]``: the entry of a row, as error lines name it."""
        v = int(np.searchsorted(self.offsets, row, side="right") - 1)
        return f"{self.source}: results[{json.dumps(self.videos[v])}][{row - int(self.offsets[v])}]"

    def to_dict(self) -> dict[str, list[dict]]:
        """The plain ``{video: [{"segment": [s, e], "label": name, "score": x}, ...]}`` form."""
        start, end, score = self.start.tolist(), self.end.tolist(), self.score.tolist()
        names = [self.labels[i] for i in self.label.tolist()]
        off = self.offsets.tolist()
        return {
            video: [
                {"segment": [start[k], end[k]], "label": names[k], "score": score[k]}
                for k in range(off[v], off[v + 1])
            ]
            for v, video in enumerate(self.videos)
        }

    def select(self, keep: np.ndarray) -> Detections:
        """The rows of a boolean mask, same videos."""
        counts = np.bincount(self.video_of_row[keep], minlength=len(self.videos))
        return replace(
            self,
            offsets=np.r_[0, np.cumsum(counts)].astype(np.int64),
            **{k: getattr(self, k)[keep] for k in ("start", "end", "score", "label")},
        )


def concat(parts: list[Detections], source: str = "<memory>") -> Detections:
    """Concatenate detections video by video (videos in first-seen order, parts in order)."""
    videos = {v: i for i, v in enumerate(dict.fromkeys(v for p in parts for v in p.videos))}
    labels = {n: i for i, n in enumerate(dict.fromkeys(n for p in parts for n in p.labels))}

    def column(values, dtype) -> np.ndarray:  # an empty one too: there may be no parts
        return np.concatenate([*values, np.zeros(0, dtype)]).astype(dtype)

    def remap(names, index: dict) -> np.ndarray:
        return np.array([index[n] for n in names], np.int64)

    vid = column((remap(p.videos, videos)[p.video_of_row] for p in parts), np.int64)
    order = np.argsort(vid, kind="stable")  # within a video: parts, then rows, in order
    return Detections(
        list(videos),
        np.r_[0, np.cumsum(np.bincount(vid, minlength=len(videos)))].astype(np.int64),
        column((p.start for p in parts), np.float64)[order],
        column((p.end for p in parts), np.float64)[order],
        column((p.score for p in parts), np.float64)[order],
        column((remap(p.labels, labels)[p.label] for p in parts), np.int32)[order],
        list(labels),
        source,
    )


# ----------------------------------------------------------------------------- validation


MAX_SECONDS = 1e7  # a segment ending later (116 days) is in no video (evaluate: 2x its duration)


def check(det: Detections) -> Detections:
    """Refuse, naming the first bad entry, a segment not finite, starting below 0, ending before
    its start or past MAX_SECONDS, and a score not in [0, 1] (a sigmoid's, as OpenTAD's)."""
    s, e, sc = det.start, det.end, det.score
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(s) & np.isfinite(e) & np.isfinite(sc))
        bad |= (s < 0) | (e < s) | (e > MAX_SECONDS) | (sc < 0) | (sc > 1)
    if bad.any():
        row = int(np.argmax(bad))
        a, b, x = float(s[row]), float(e[row]), float(sc[row])
        if not (np.isfinite(a) and np.isfinite(b)):
            problem = f".segment: not finite: [{a}, {b}]"
        elif a < 0:
            problem = f".segment: negative start {a}"
        elif b < a:
            problem = f".segment: end {b} < start {a}"
        elif b > MAX_SECONDS:
            problem = f".segment: ends at {b:g} s, later than any video ({MAX_SECONDS:g} s)"
        elif not np.isfinite(x):
            problem = f".score: not finite: {x}"
        else:
            problem = f".score: {'negative score' if x < 0 else 'above 1:'} {x}"
        raise InputError(det.where(row) + problem)
    return det


_NUMBER = frozenset({int, float, np.float64, np.int64})  # exact: numpy takes text and booleans


def entry_problem(entry, keys=("segment", "label", "score")) -> str | None:
    """Why the structure of one entry (a detection; an annotation has no "score") is wrong."""
    if not isinstance(entry, dict):
        return f": expected an object, got {type(entry).__name__}"
    for key in keys:
        if key not in entry:
            return f': missing key "{key}"'
    seg = entry["segment"]
    if not isinstance(seg, (list, tuple)) or len(seg) != 2 or set(map(type, seg)) - _NUMBER:
        return f".segment: expected [start, end] numbers, got {json.dumps(seg)[:60]}"
    if not isinstance(entry["label"], str):
        return f".label: expected a class name string, got {json.dumps(entry['label'])[:60]}"
    if "score" in keys and type(entry["score"]) not in _NUMBER:
        return f".score: expected a number, got {json.dumps(entry['score'])[:60]}"
    return None


def from_dict(results, source: str = "<memory>") -> Detections:
    """Validate a ``{video: [entries]}`` mapping (structure, then :func:`check`) into columns: a
    few C-level passes over all entries, then, if one is bad, a search that names it."""
    if not isinstance(results, dict):
        raise InputError(f'{source}: "results" must be an object mapping video -> list')
    for video, entries in results.items():
        if type(entries) is not list:
            raise InputError(
                f"{source}: results[{json.dumps(video)}]: expected a list of detections, "
                f"got {type(entries).__name__}"
            )
    entries = list(itertools.chain.from_iterable(results.values()))
    try:
        segs = [d["segment"] for d in entries]
        scores = [d["score"] for d in entries]
        names = [d["label"] for d in entries]
        flat = list(itertools.chain.from_iterable(segs))
        ok = not (set(map(type, segs)) - {list, tuple} or set(map(len, segs)) - {2})
        ok = ok and not (set(map(type, flat)) | set(map(type, scores))) - _NUMBER
        ok = ok and not set(map(type, names)) - {str}
        seg = np.array(flat, dtype=np.float64).reshape(-1, 2) if ok else None
        sc = np.array(scores, dtype=np.float64) if ok else None
    except (KeyError, TypeError, OverflowError):
        ok = False
    if not ok:
        for video, items in results.items():
            for k, entry in enumerate(items):
                problem = entry_problem(entry)
                if problem is None and max(map(abs, [*entry["segment"], entry["score"]])) > 1e308:
                    big = abs(entry["score"]) > 1e308  # an integer too large for a double
                    problem = f".{'score' if big else 'segment'}: out of range of a double"
                if problem is not None:
                    raise InputError(f"{source}: results[{json.dumps(video)}][{k}]{problem}")
        raise InputError(f"{source}: malformed detections")  # not reached: a problem is named
    label_index = {name: i for i, name in enumerate(dict.fromkeys(names))}  # first-seen order
    counts = list(map(len, results.values()))
    return check(
        Detections(
            videos=[str(v) for v in results],
            offsets=np.r_[0, np.cumsum(counts, dtype=np.int64)].astype(np.int64),
            start=seg[:, 0].copy(),
            end=seg[:, 1].copy(),
            score=sc,
            label=np.fromiter(map(label_index.__getitem__, names), np.int32, len(names)),
            labels=list(label_index),
            source=source,
        )
    )


def as_detections(results, source: str = "<memory>") -> Detections:
    """Accept :class:`Detections` or a plain results mapping (optionally wrapped in "results")."""
    if isinstance(results, Detections):
        return results
    if isinstance(results, dict) and set(results) == {"results"}:
        results = results["results"]
    return from_dict(results, source)


# ----------------------------------------------------------------------------- files

_COLUMNS = {"offsets": np.int64, "start": np.float64, "end": np.float64, "score": np.float64,
            "label": np.int32}  # fmt: skip


def load_detections(path: str | os.PathLike) -> Detections:
    """A detections file: tadsweep's .npz (told by its content), else OpenTAD's JSON."""
    try:
        with readers.open_input(path) as fh:  # a FIFO: no wait for a writer
            npz = fh.peek(4)[:4] == _ZIP_MAGIC
    except OSError:
        npz = False  # readers names the problem
    if npz:
        return _read_npz(path)
    data = readers.read_detections_json(path)
    if not isinstance(data, dict):
        raise InputError(f'{path}: expected a JSON object with key "results"')
    if "results" not in data:
        raise InputError(f'{path}: missing key "results"')
    with readers.paused_gc():  # the parsed dicts are freed before the collector runs again
        return from_dict(data.pop("results"), source=str(path))


def load(path: str | os.PathLike) -> dict[str, list[dict]]:
    """A detections file as the results mapping."""
    return load_detections(path).to_dict()


def _names(names: list[str]) -> np.ndarray:
    return np.frombuffer(json.dumps(names).encode(), np.uint8)  # exact for any string


def _read_npz(path) -> Detections:
    def bad(why):
        return InputError(f"{path}: not a tadsweep detections file ({why}); write it again")

    try:
        with zipfile.ZipFile(path) as zf:  # sizes as declared: reading never exceeds them
            cap = readers.detections_cap()
            if sum(i.file_size for i in zf.infolist()) > cap:
                raise readers.too_large(path, cap, readers.CAP_ENV)
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != FORMAT:
                raise bad(f"format {str(z['format'])[:40]!r}")
            cols = {k: z[k] for k in _COLUMNS}
            videos, labels = (json.loads(z[k].tobytes()) for k in ("videos", "labels"))
    except InputError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, MemoryError) as exc:
        raise bad(f"{type(exc).__name__}: {exc}"[:120]) from None
    off, n = cols["offsets"], len(cols["label"])
    ok = all(a.dtype == t and a.ndim == 1 for a, t in zip(cols.values(), _COLUMNS.values()))
    ok = ok and all(
        isinstance(x, list) and all(type(s) is str for s in x) for x in (videos, labels)
    )
    ok = ok and len(off) == len(videos) + 1 and off[0] == 0 and (np.diff(off) >= 0).all()
    ok = ok and off[-1] == n and all(len(cols[k]) == n for k in ("start", "end", "score"))
    ok = ok and (n == 0 or (cols["label"].min() >= 0 and cols["label"].max() < len(labels)))
    if not ok:
        raise bad("its columns do not fit together")
    return Detections(videos, **cols, labels=labels, source=str(path))


def write_npz(path, arrays: dict) -> None:
    """Arrays as an .npz, atomically, nothing pickled: deflate level 1 (3x smaller than raw, 7x
    faster than np.savez_compressed's level 6)."""
    deflate = zipfile.ZIP_DEFLATED
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", deflate, compresslevel=1) as zf:
        for name, a in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asarray(a), allow_pickle=False)


def dump(results, path: str | os.PathLike) -> None:
    """Write detections atomically: ``.npz`` between steps, else OpenTAD's JSON for users
    (``.gz``: gzip), values as they are (checked where they entered)."""
    det = as_detections(results)
    if str(path).endswith(".npz"):
        cols = {k: getattr(det, k) for k in _COLUMNS}
        write_npz(path, {"format": np.array(FORMAT), "videos": _names(det.videos),
                         "labels": _names(det.labels), **cols})  # fmt: skip
        return
    # json.dumps: NaN (score voting on a zero-length segment) written as upstream writes it
    data = json.dumps({"results": det.to_dict()}, separators=(",", ":")).encode()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=1, mtime=0)
    atomic_write_bytes(path, data)
