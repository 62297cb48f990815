import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tadsweep.detections.formats import Detections, concat, dump, from_dict, load, load_detections
from tadsweep.errors import InputError

RESULTS = {
    "video_1": [
        {"segment": [0.5, 2.25], "label": "Run", "score": 0.9},
        {"segment": [3.0, 3.0], "label": "Jump", "score": 0.0},  # zero length is allowed
    ],
    "video_2": [],
    "video_3": [{"segment": [1, 4], "label": "Run", "score": 1}],
}


@pytest.mark.parametrize("name", ["d.json", "d.json.gz"])
def test_roundtrip(tmp_path, name):
    path = tmp_path / name
    dump(RESULTS, path)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    assert load(path) == {
        "video_1": RESULTS["video_1"],
        "video_2": [],
        "video_3": [{"segment": [1.0, 4.0], "label": "Run", "score": 1.0}],
    }
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp files left behind


def test_gzip_is_detected_from_content(tmp_path):
    path = tmp_path / "named_plain.json"
    path.write_bytes(gzip.compress(json.dumps({"results": RESULTS}).encode()))
    assert list(load(path)) == ["video_1", "video_2", "video_3"]


def test_columnar_form():
    det = from_dict(RESULTS, "x")
    assert isinstance(det, Detections)
    assert det.videos == ["video_1", "video_2", "video_3"]
    assert det.offsets.tolist() == [0, 2, 2, 3]
    assert det.labels == ["Run", "Jump"]
    assert det.label.tolist() == [0, 1, 0]
    assert det.select(np.array([True, False, True])).offsets.tolist() == [0, 1, 1, 2]
    both = concat([det, from_dict({"video_2": [RESULTS["video_1"][0]], "video_9": []})])
    assert both.videos == ["video_1", "video_2", "video_3", "video_9"]
    assert both.offsets.tolist() == [0, 2, 3, 4, 4]


def entry(**overrides):
    e = {"segment": [1.0, 2.0], "label": "Run", "score": 0.5}
    e.update(overrides)
    return e


@pytest.mark.parametrize(
    "results, message",
    [
        (
            {"video_3": [entry()] * 12 + [entry(segment=[4.0, 3.1])]},
            r'c.json: results\["video_3"\]\[12\].segment: end 3.1 < start 4.0$',
        ),
        ({"v": [entry(segment=[-1.0, 2.0])]}, r'results\["v"\]\[0\].segment: negative start -1.0'),
        ({"v": [entry(segment=[1.0])]}, r"segment: expected \[start, end\] numbers"),
        ({"v": [entry(segment="1-2")]}, r"segment: expected \[start, end\] numbers"),
        ({"v": [entry(score="high")]}, r'results\["v"\]\[0\].score: expected a number'),
        ({"v": [entry(score=True)]}, r"score: expected a number"),
        ({"v": [entry(score=-0.5)]}, r"score: negative score"),
        ({"v": [entry(label=3)]}, r"label: expected a class name string"),
        ({"v": [{"segment": [1, 2], "score": 0.5}]}, r'results\["v"\]\[0\]: missing key "label"'),
        ({"v": [entry(), "oops"]}, r'results\["v"\]\[1\]: expected an object'),
        ({"v": {"segment": [1, 2]}}, r'results\["v"\]: expected a list'),
    ],
)
def test_bad_entries(tmp_path, results, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"results": results}))
    with pytest.raises(InputError, match=message) as info:
        load(path)
    assert "\n" not in str(info.value)


def test_nan_and_infinite_values(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"results": {"v": [{"segment": [1, 2], "label": "a", "score": NaN}]}}')
    with pytest.raises(InputError, match=r'results\["v"\]\[0\].score: not finite: nan'):
        load(path)
    path.write_text('{"results": {"v": [{"segment": [1, Infinity], "label": "a", "score": 1}]}}')
    with pytest.raises(InputError, match=r"segment: not finite"):
        load(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b'{"results": {"v": [', "invalid JSON"),
        (b'{"detections": {}}', 'missing key "results"'),
        (b"[1, 2]", 'expected a JSON object with key "results"'),
        (b'{"results": [1]}', '"results" must be an object'),
        (b"\xff\xfe\x00", "not UTF-8"),
    ],
)
def test_corrupt_files(tmp_path, content, message):
    path = tmp_path / "c.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_detections(path)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "c.json.gz"
    dump(RESULTS, path)
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(InputError, match="c.json.gz: truncated or corrupt gzip"):
        load(path)


def test_gzip_members_threads_and_inflaters(tmp_path, monkeypatch):
    """dump writes one gzip member per so many bytes of text, the same bytes whatever the
    thread count; the reader takes every member, with isal's inflate or zlib's (the OpenTAD
    image has no isal) alike, and refuses a cut member, trailing garbage and a bomb."""
    import tadsweep.detections.formats as formats
    from tadsweep import readers

    monkeypatch.setattr(formats, "_GZIP_MEMBER", 200)  # many members from a small file
    rng = np.random.default_rng(3)
    results = {
        f"v{v}": [{"segment": [float(k), k + 1.5], "label": f"c{k % 3}",
                   "score": float(np.round(rng.random(), 4))} for k in range(30)]
        for v in range(8)
    }  # fmt: skip
    text = json.dumps({"results": results}, separators=(",", ":")).encode()
    written = {}
    for threads in ("1", "2"):
        monkeypatch.setenv("TADSWEEP_THREADS", threads)
        path = tmp_path / f"t{threads}.json.gz"
        dump(from_dict(results), path)
        written[threads] = path.read_bytes()
    raw = written["1"]
    assert raw == written["2"] and gzip.decompress(raw) == text
    assert raw.count(b"\x1f\x8b\x08") >= len(text) // 200
    path = tmp_path / "t1.json.gz"
    assert readers._read_bytes(path, 1 << 20) == text
    monkeypatch.setitem(sys.modules, "isal", None)  # zlib's inflate
    assert readers._read_bytes(path, 1 << 20) == text
    with pytest.raises(InputError, match="larger than 1000 bytes"):
        readers._read_bytes(path, 1000)
    cut = tmp_path / "cut.json.gz"
    for bad in (raw[: len(raw) // 2], raw + b"\0\0", raw + b"x"):
        cut.write_bytes(bad)
        with pytest.raises(InputError, match="cut.json.gz: truncated or corrupt gzip"):
            load(cut)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        load(tmp_path / "nope.json")


def test_cli_reports_one_line_and_exit_2(tmp_path):
    gt = tmp_path / "gt.json"
    gt.write_text(
        json.dumps(
            {
                "database": {
                    "v": {
                        "subset": "validation",
                        "annotations": [{"segment": [1, 2], "label": "a"}],
                    }
                }
            }
        )
    )
    pred = tmp_path / "p.json.gz"
    pred.write_bytes(gzip.compress(b'{"results": {"v": [{"segment": [4.0, 3.1], "label": "a"'))
    proc = subprocess.run(
        [sys.executable, "-m", "tadsweep.detections.evaluate", str(gt), str(pred)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "p.json.gz: invalid JSON" in proc.stderr
    pred.write_text(json.dumps({"results": {"v": [entry(segment=[4.0, 3.1])]}}))
    proc = subprocess.run(
        [sys.executable, "-m", "tadsweep.detections.evaluate", str(gt), str(pred)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr == f'error: {pred}: results["v"][0].segment: end 3.1 < start 4.0\n'


# --- the fast path (orjson, one pass over all entries, columnar writer) ------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"results": {"v": [{"segment": [1, 2], "label": "a", "score": 0.5, "score": 1}]}}',
         'duplicate key "score"'),
        ('{"results": {"v": [], "v": []}}', 'duplicate key "v"'),
        ('{"results": {}, "results": {}}', 'duplicate key "results"'),
        # a key repeated inside a nested object the counting walk does not enter
        ('{"results": {"v": [{"segment": [1, 2], "label": "a", "score": 0.5,'
         ' "x": {"k": 1, "k": 2}}]}}', 'duplicate key "k"'),
    ],
)  # fmt: skip
def test_duplicate_keys_are_refused(tmp_path, text, message):
    path = tmp_path / "d.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_detections(path)


def test_strings_with_json_syntax_and_escapes_load(tmp_path):
    """Labels holding ':', '{' (the exact count) and escapes (the standard parser) load as the
    standard library reads them; non-ASCII names are written as json.dumps writes them."""
    import tadsweep.detections.formats as formats

    results = {
        'v:{"1"}': [entry(label="a:{b}"), entry(label='q"\\x')],
        "vidéo": [entry(label="é", score=2)],
    }
    for name in ("d.json", "d.json.gz"):
        path = tmp_path / name
        dump(from_dict(results), path)
        data = path.read_bytes()
        data = gzip.decompress(data) if name.endswith(".gz") else data
        assert data == json.dumps({"results": load(path)}, separators=(",", ":")).encode()
        # no backslash: orjson, with the string-aware key count
        plain = json.dumps({"results": {"v:{": [entry(label="a:{b}")]}})
        assert formats._fast_parse(plain.encode()) == json.loads(plain)
        assert load(path) == {k: [dict(e, score=float(e["score"])) for e in v]
                              for k, v in results.items()}  # fmt: skip


def test_fast_paths_match_the_standard_library_exactly(tmp_path, monkeypatch):
    """Random values, including where repr switches to an exponent (tiny, huge) and integers:
    the columnar writer's bytes are json.dumps's, and the orjson load is
    bit-identical to the standard library's parse through the per-video scan."""
    import tadsweep.detections.formats as formats

    rng = np.random.default_rng(5)
    values = np.concatenate(
        [rng.random(300) * 10.0 ** rng.integers(-9, 18, 300), rng.integers(0, 9, 50) * 1.0, [0.0]]
    )
    results = {}
    for v in range(20):
        n = int(rng.integers(0, 40))
        s, d, c = (rng.choice(values, n) for _ in range(3))
        results[f"v{v}"] = [
            {"segment": [float(a), float(a + b)], "label": f"c{k % 5}", "score": float(x)}
            for k, (a, b, x) in enumerate(zip(s, d, c))
        ]
    path = tmp_path / "d.json"
    dump(from_dict(results), path)
    assert path.read_bytes() == json.dumps({"results": results}, separators=(",", ":")).encode()
    assert formats._fast_parse(path.read_bytes()) is not None  # orjson took it
    fast = load_detections(path)
    monkeypatch.setattr(formats, "_from_dict_fast", lambda results, source: None)
    slow = from_dict(json.loads(path.read_text())["results"])
    for col in ("offsets", "start", "end", "score", "label"):
        a, b = getattr(fast, col), getattr(slow, col)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), col
    assert (fast.videos, fast.labels) == (slow.videos, slow.labels)
    assert len(fast) > 200


# --- the columnar reader (compiled scan of dump's layout) -------------------------------------


def _both_ways(path):
    """load_detections, and the dict path's result for the same file."""
    import tadsweep.detections.formats as formats

    fast = load_detections(path)
    with formats.paused_gc():
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        slow = from_dict(json.loads(raw)["results"])
    return fast, slow


def test_columnar_reader_is_the_dict_path_bit_for_bit(tmp_path):
    """Rounded values as OpenTAD writes them (the scan takes them) and what it leaves to the
    dict path (exponents, 16+ digits, integers, escapes: quotes, non-ASCII): identical arrays
    either way; empty videos and labels holding the layout's own characters included."""
    import tadsweep.detections.formats as formats

    rng = np.random.default_rng(11)
    for trial in range(12):
        labels = ["Run", "a:{b}[", "],x", "", "}{,", "CricketShot"]
        if trial % 3 == 2:
            labels += ["é", 'a:{"segment":[']
        results = {}
        for v in range(int(rng.integers(1, 30))):
            n = int(rng.integers(0, 60)) * (v % 4 != 1)
            s = np.round(rng.random(n) * 10.0 ** rng.integers(0, 5), 2)
            e = np.round(s + rng.random(n) * 50, 2)
            c = np.round(rng.random(n), 4)
            if trial % 3 == 2:  # what the scan leaves: exponents, long digits, integers
                c = c * 10.0 ** rng.integers(-8, 0, n)
                e = np.where(rng.random(n) < 0.2, np.ceil(e), e * (1 + 1e-12))
            results[f"vidéo {v}" if trial % 3 == 2 and v % 5 == 0 else f"v {v}"] = [
                {"segment": [float(a), float(b)], "label": labels[k % len(labels)],
                 "score": float(x)}
                for k, (a, b, x) in enumerate(zip(s, e, c))
            ]  # fmt: skip
        path = tmp_path / f"d{trial}.json.gz"
        dump(results, path)
        fast, slow = _both_ways(path)
        for col in ("offsets", "start", "end", "score", "label"):
            a, b = getattr(fast, col), getattr(slow, col)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (trial, col)
        assert (fast.videos, fast.labels) == (slow.videos, slow.labels)
        took = formats._columnar(gzip.decompress(path.read_bytes()), "x") is not None
        assert took == (trial % 3 != 2), trial  # the scan took exactly the rounded files
    assert formats._columnar(b'{"results":{}}', "x").videos == []


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"results":{"v":[{"segment":[4.0,3.1],"label":"a","score":0.5}]}}',
         r'results\["v"\]\[0\].segment: end 3.1 < start 4.0'),
        ('{"results":{"v":[{"segment":[-1.0,2.0],"label":"a","score":0.5}]}}',
         "negative start -1.0"),
        ('{"results":{"v":[{"segment":[1.0,2.0],"label":"a","score":-0.5}]}}', "negative score"),
        ('{"results":{"v":[{"segment":[1.0,2.0],"label":"a","score":"0.5"}]}}',
         "score: expected a number"),
        ('{"results":{"v":[{"segment":[1.0,2.0],"label":3,"score":0.5}]}}',
         "label: expected a class name string"),
        ('{"results":{"v":[],"v":[]}}', 'duplicate key "v"'),
        ('{"results":{"v":[{"segment":[01,2.0],"label":"a","score":0.5}]}}', "invalid JSON"),
        ('{"results":{"v":[{"segment":[1.,2.0],"label":"a","score":0.5}]}}', "invalid JSON"),
        ('{"results":{"v":[{"segment":[1.0,2.0],"label":"a\x01","score":0.5}]}}',
         "invalid JSON"),
        ('{"results":{"v":[{"segment":[1.0,2.0],"label":"a","score":0.5}]}}x', "invalid JSON"),
        ('{"results":{"v":[{"segment":[1.0,2.0],"label":"a","score":0.5},]}}', "invalid JSON"),
    ],
)  # fmt: skip
def test_columnar_reader_leaves_bad_files_to_the_dict_path(tmp_path, text, message):
    """Files in dump's compact layout that are wrong: refused with the dict path's message."""
    import tadsweep.detections.formats as formats

    assert formats._columnar(text.encode(), "x") is None
    path = tmp_path / "d.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_detections(path)


def test_compiled_kernels_missing_are_named(tmp_path):
    """A checkout whose C++ kernels were never built: missing_kernels names every one (the
    workflow stops on it before any job, with what to run); the built one here has none."""
    import shutil

    import tadsweep.detections as detections

    src = Path(detections.__file__).parent
    pkg = tmp_path / "tadsweep" / "detections"
    pkg.mkdir(parents=True)
    (tmp_path / "tadsweep" / "__init__.py").write_text("")
    for f in [src / "__init__.py", *src.glob("_*.cpp")]:
        shutil.copy(f, pkg)
    code = "from tadsweep.detections import missing_kernels; print(missing_kernels())"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env={"PYTHONPATH": str(tmp_path)}, check=True)  # fmt: skip
    assert out.stdout.strip() == "['_evaluate', '_nms', '_text']"
    assert detections.missing_kernels() == []


def test_compiled_writer_is_json_dumps_and_refuses_columns_that_do_not_match():
    """The writer formats every double as repr does (json.dumps' numbers: shortest digits,
    repr's choice of exponent, NaN and Infinity), checked on random bit patterns and the edges
    of repr's layout; inconsistent columns are a ValueError, never a read out of bounds."""
    from tadsweep.detections import _text

    rng = np.random.default_rng(8)
    bits = rng.integers(0, 1 << 63, 60_000, dtype=np.uint64)
    edges = [0.0, -0.0, 1e16, 1e15, 9999999999999998.0, 1e-4, 9.999999999999999e-05, 1e-5,
             0.1, 5e-324, 1.7976931348623157e308, 123.456, 2.0**60, float("nan"),
             float("inf"), -float("inf"), -1.5e-7]  # fmt: skip
    values = np.concatenate([bits.view(np.float64), rng.random(20_000) * 1e3, edges])
    values = np.concatenate([values, -values])
    n = len(values)
    label, offsets = np.zeros(n, np.int32), np.array([0, n], np.int64)
    got = _text.dump(values, values, values, [b'"a"'], label, [b'"v"'], offsets)
    entries = [{"segment": [x, x], "label": "a", "score": x} for x in values.tolist()]
    assert got == json.dumps({"results": {"v": entries}}, separators=(",", ":")).encode()
    one, two = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    ok = (one, two, one, [b'"a"'], np.zeros(2, np.int32), [b'"v"'], np.array([0, 2]))
    assert _text.dump(*ok) == (
        b'{"results":{"v":[{"segment":[1.0,3.0],"label":"a","score":1.0},'
        b'{"segment":[2.0,4.0],"label":"a","score":2.0}]}}'
    )
    for k, bad in [(0, one[:1]), (3, []), (4, np.array([0, 1], np.int32)),
                   (6, np.array([0, 3])), (6, np.array([0]))]:  # fmt: skip
        args = list(ok)
        args[k] = bad
        with pytest.raises(ValueError, match="do not match"):
            _text.dump(*args)
