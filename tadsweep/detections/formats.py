"""Read and write OpenTAD detection files ``{"results": {video: [{segment, label, score}]}}``.

Files may be gzip-compressed or plain JSON (detected from the content, not the name). Loading
validates every entry and reports the first problem as one line naming the file and the entry,
e.g. ``candidates.json.gz: results["video_3"][12].segment: end 3.1 < start 4.0``.

Internally the tools work on :class:`Detections`, a columnar form (one numpy array per field,
videos kept in file order, entries in list order) because the post-processing and evaluation code
is vectorized; :func:`load` returns the plain dict-of-lists form fixed by the project contract.
"""

from __future__ import annotations

import gc
import gzip
import itertools
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from tadsweep import readers
from tadsweep.atomic import atomic_write_bytes
from tadsweep.detections import n_threads
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
    cap); corrupt content becomes an InputError naming the file.

    Fast path: orjson (several times faster than the standard library on the half a million
    entries of a THUMOS-sized file) with the garbage collector paused (building as many small
    dicts triggers dozens of useless collections) and the duplicate-key check done on the raw
    bytes. Anything the fast path does not accept goes to readers.read_json, which reads the
    same data or reports the problem exactly as before."""
    raw = readers._read_bytes(path, readers.MAX_DETECTIONS_BYTES)
    data = _fast_parse(raw)
    if data is not None:
        return data
    return readers.read_json(path, max_bytes=readers.MAX_DETECTIONS_BYTES, shape=False)


def _fast_parse(raw: bytes):
    """orjson's parse of ``raw`` if it holds no duplicate key, else None (also when orjson is
    missing -- the OpenTAD image has none -- or refuses the text, e.g. NaN, which Python's
    parser reads and the entry check then names)."""
    try:
        import orjson
    except ImportError:
        return None
    if b"\\" in raw:  # escapes would need a real scan to tell strings apart: rare, slow path
        return None
    with paused_gc():
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(data, (dict, list)):
        return None
    return data if _keys_unique(raw, data) else None


@contextmanager
def paused_gc():
    """No cyclic garbage collection inside (parsed JSON and its dicts hold no cycles)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _keys_unique(raw: bytes, data) -> bool:
    """Whether no JSON object in ``raw`` repeats a key (a parser keeps only the last one).

    Outside strings (``raw`` holds no backslash, so quotes pair up) every ``{`` opens an
    object and every ``:`` follows a key. Counting the parsed dicts and their keys -- entry
    objects of a list without looking inside them -- gives at most those counts; equal counts
    mean every object was counted and none lost a key. A nested object the walk skips makes
    the counts differ, and the slow path decides."""
    dicts = keys = 0
    stack = [data]
    while stack:
        x = stack.pop()
        if type(x) is dict:
            dicts += 1
            keys += len(x)
            stack.extend(v for v in x.values() if type(v) in (dict, list))
        else:
            objects = [v for v in x if type(v) is dict]
            dicts += len(objects)
            keys += sum(map(len, objects))
            stack.extend(v for v in x if type(v) is list)
    if [dicts, keys] == [raw.count(b"{"), raw.count(b":")]:
        return True  # the usual case: no "{" or ":" inside strings either
    b = np.frombuffer(raw, dtype=np.uint8)
    quotes = np.flatnonzero(b == ord('"'))
    outside = [
        int(np.count_nonzero(np.searchsorted(quotes, np.flatnonzero(b == c)) % 2 == 0))
        for c in b"{:"
    ]
    return [dicts, keys] == outside


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


def _from_dict_fast(results: dict, source: str) -> Detections | None:
    """:func:`from_dict` of valid data in one pass over all entries (a few C-level passes
    instead of per-entry Python checks); None at any problem, for the per-video scan to name."""
    lists = list(results.values())
    if set(map(type, lists)) - {list}:
        return None
    entries = list(itertools.chain.from_iterable(lists))
    try:
        segs = [d["segment"] for d in entries]
        scores = [d["score"] for d in entries]
        names = [d["label"] for d in entries]
    except (KeyError, TypeError, IndexError):
        return None
    # exact types: numpy would turn text ("0.5") and booleans into numbers
    if set(map(type, segs)) - {list} or set(map(len, segs)) - {2} or set(map(type, names)) - {str}:
        return None
    if set(map(type, scores)) - _NUMBER:
        return None
    flat = list(itertools.chain.from_iterable(segs))
    if set(map(type, flat)) - _NUMBER:
        return None
    try:
        seg = np.array(flat, dtype=np.float64).reshape(-1, 2)
        sc = np.array(scores, dtype=np.float64)
    except OverflowError:
        return None
    s, e = seg[:, 0], seg[:, 1]
    bad = ~(np.isfinite(s) & np.isfinite(e) & np.isfinite(sc)) | (s < 0) | (e < s) | (sc < 0)
    if bad.any():
        return None
    label_index = {name: i for i, name in enumerate(dict.fromkeys(names))}  # first-seen order
    ids = np.fromiter(map(label_index.__getitem__, names), dtype=np.int32, count=len(names))
    return Detections(
        videos=[str(v) for v in results],
        offsets=np.concatenate([[0], np.cumsum(list(map(len, lists)), dtype=np.int64)]).astype(
            np.int64
        ),
        start=s.copy(),
        end=e.copy(),
        score=sc,
        label=ids,
        labels=list(label_index),
        source=source,
    )


def from_dict(results: dict, source: str = "<memory>") -> Detections:
    """Validate a ``{video: [entries]}`` mapping and convert it to :class:`Detections`."""
    if not isinstance(results, dict):
        raise InputError(f'{source}: "results" must be an object mapping video -> list')
    fast = _from_dict_fast(results, source)
    if fast is not None:
        return fast
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
    raw = readers._read_bytes(path, readers.MAX_DETECTIONS_BYTES)
    det = _columnar(raw, str(path))
    if det is not None:
        return det
    # the parsed dicts are freed before the collector runs again: it never walks them
    with paused_gc():
        data = _fast_parse(raw)
        if data is None:
            data = readers.read_json(path, max_bytes=readers.MAX_DETECTIONS_BYTES, shape=False)
        if not isinstance(data, dict):
            raise InputError(f'{path}: expected a JSON object with key "results"')
        if "results" not in data:
            raise InputError(f'{path}: missing key "results"')
        det = from_dict(data["results"], source=str(path))
        del data
    return det


# ----------------------------------------------------------------------------- columnar reader
# The files the workflow writes (dump: compact JSON, keys in the order segment, label, score;
# OpenTAD rounds segments to 2 and scores to 4 decimals) are read straight into arrays by one
# compiled pass (_text.cpp), without a Python object per entry (over 10x faster than the dict
# path). It takes a file only in exactly that layout, with numbers it converts exactly (plain
# decimals of at most 15 digits: one correctly rounded division, as float() gives) and strings
# free of escapes and control characters. Anything else (spaces, another key order, exponents,
# minus signs, ...) goes to the dict path, which reads the file or names the problem, as before.


def _columnar(raw: bytes, source: str) -> Detections | None:
    """The file as :class:`Detections` if it is in dump's layout and valid, else None."""
    try:
        from tadsweep.detections import _text
    except ImportError:  # not built for this Python (the OpenTAD image): the dict path reads
        return None
    # capacity: an entry takes at least 38 bytes; the pages past the last entry are never
    # touched, so the views below cost no memory and no copy
    n = len(raw) // 38 + 1
    start, end, score = np.empty(n), np.empty(n), np.empty(n)
    label = np.empty(n, np.int32)
    found = _text.scan(raw, start, end, score, label)
    if found is None:
        return None
    n_entries, videos, labels, counts = found
    if len(set(videos)) != len(videos):
        return None  # a repeated key: the dict path refuses it by name
    start, end, score = start[:n_entries], end[:n_entries], score[:n_entries]
    if (end < start).any():
        return None  # the dict path names the entry (no minus sign: the rest holds)
    return Detections(
        videos=videos,
        offsets=np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64),
        start=start,
        end=end,
        score=score,
        label=label[:n_entries],
        labels=labels,
        source=source,
    )


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
        data = _dumps_columnar(results)
    else:
        data = json.dumps({"results": results}, separators=(",", ":")).encode("utf-8")
    if str(path).endswith(".gz"):
        data = _gzip(data)
    atomic_write_bytes(path, data)


_GZIP_MEMBER = 2 << 20  # bytes of text per gzip member


def _gzip(data: bytes) -> bytes:
    """gzip of ``data`` as one member per 2 MB of text, compressed on threads (zlib releases
    the GIL): a valid gzip file, which every gzip reader reads whole. Level 1: 2.5x faster than
    6 for about 20% more bytes (a THUMOS-sized file is 5 MB); mtime 0 and members cut by size,
    not by thread count: the same bytes on every machine."""
    view = memoryview(data)
    parts = [view[i : i + _GZIP_MEMBER] for i in range(0, len(data), _GZIP_MEMBER)] or [data]
    with ThreadPoolExecutor(min(n_threads(), len(parts))) as pool:
        return b"".join(pool.map(lambda p: gzip.compress(p, compresslevel=1, mtime=0), parts))


def _dumps_columnar(det: Detections) -> bytes:
    """``json.dumps({"results": det.to_dict()}, separators=(",", ":"))``, byte for byte; the
    compiled writer (_text.cpp) builds no object per entry (20x faster on a THUMOS-sized file)."""
    try:
        from tadsweep.detections import _text
    except ImportError:  # not built for this Python (the OpenTAD image)
        return json.dumps({"results": det.to_dict()}, separators=(",", ":")).encode()
    return _text.dump(
        np.ascontiguousarray(det.start, np.float64),
        np.ascontiguousarray(det.end, np.float64),
        np.ascontiguousarray(det.score, np.float64),
        [json.dumps(name).encode() for name in det.labels],
        np.ascontiguousarray(det.label, np.int32),
        [json.dumps(video).encode() for video in det.videos],
        np.ascontiguousarray(det.offsets, np.int64),
    )
