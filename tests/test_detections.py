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


@pytest.mark.parametrize("name", ["d.json", "d.json.gz", "d.npz"])
def test_roundtrip(tmp_path, name):
    path = tmp_path / name
    dump(RESULTS, path)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    assert (raw[:4] == b"PK\x03\x04") == name.endswith(".npz")
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


def test_gzip_members_and_inflaters(tmp_path, monkeypatch):
    """The reader takes every gzip member (as gzip.GzipFile does), in chunks smaller than a
    member, with isal's inflate or zlib's (the OpenTAD image has no isal) alike, and refuses a
    cut member, trailing garbage and more than its cap."""
    from tadsweep import readers

    rng = np.random.default_rng(3)
    results = {
        f"v{v}": [{"segment": [float(k), k + 1.5], "label": f"c{k % 3}",
                   "score": float(np.round(rng.random(), 4))} for k in range(30)]
        for v in range(8)
    }  # fmt: skip
    text = json.dumps({"results": results}).encode()
    raw = b"".join(gzip.compress(text[i : i + 200], mtime=0) for i in range(0, len(text), 200))
    path = tmp_path / "t.json.gz"
    path.write_bytes(raw)
    monkeypatch.setattr(readers, "_CHUNK", 7)  # members and chunks cut anywhere
    assert readers._read_bytes(path, 1 << 20) == text
    assert load(path) == results
    monkeypatch.setitem(sys.modules, "isal", None)  # zlib's inflate
    assert readers._read_bytes(path, 1 << 20) == text
    with pytest.raises(InputError, match="larger than 1000 bytes"):
        readers._read_bytes(path, 1000)
    cut = tmp_path / "cut.json.gz"
    for bad in (raw[: len(raw) // 2], raw + b"\0\0", raw + b"x", raw[:10] + raw):
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


# --- one JSON path: orjson where installed, the standard library where not (the image) ------


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
@pytest.mark.parametrize("orjson", [True, False])
def test_duplicate_keys_are_refused(tmp_path, monkeypatch, text, message, orjson):
    if not orjson:
        monkeypatch.setitem(sys.modules, "orjson", None)
    path = tmp_path / "d.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_detections(path)


def test_strings_with_json_syntax_and_escapes_load(tmp_path):
    """Labels and videos holding ':', '{', quotes, backslashes and non-ASCII (counts that differ
    from the parsed keys: the standard library decides) load as the standard library reads them,
    through the JSON export and the .npz alike."""
    results = {
        'v:{"1"}': [entry(label="a:{b}"), entry(label='q"\\x')],
        "vidéo\u0000": [entry(label="é", score=1)],
    }
    plain = tmp_path / "upstream.json"
    plain.write_text(json.dumps({"results": results}))  # upstream's json.dump layout
    expected = {k: [dict(e, score=float(e["score"])) for e in v] for k, v in results.items()}
    assert load(plain) == expected
    for name in ("d.json", "d.json.gz", "d.npz"):
        dump(load_detections(plain), tmp_path / name)
        assert load(tmp_path / name) == expected


def test_json_paths_agree_bit_for_bit(tmp_path, monkeypatch):
    """Random values, including where repr switches to an exponent (tiny) and integers, up to the
    largest segment end accepted (formats.MAX_SECONDS):
    orjson's parse and the standard library's give identical columns, and the .npz gives them
    back bit for bit (and the JSON export as json.dumps writes them)."""
    rng = np.random.default_rng(5)
    values = np.concatenate(
        [rng.random(300) * 10.0 ** rng.integers(-9, 7, 300), rng.integers(0, 9, 50) * 1.0, [0.0]]
    )
    results = {}
    for v in range(20):
        n = int(rng.integers(0, 40))
        s, d = (rng.choice(values, n) for _ in range(2))
        results[f"v{v}"] = [
            {"segment": [float(a), float(a + b)], "label": f"c{k % 5}", "score": float(x)}
            for k, (a, b, x) in enumerate(zip(s, d, rng.random(n)))
        ]
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"results": results}))
    fast = load_detections(path)
    dump(fast, tmp_path / "d.npz")
    dump(fast, tmp_path / "e.json")
    assert (tmp_path / "e.json").read_bytes() == json.dumps(
        {"results": results}, separators=(",", ":")
    ).encode()
    again = load_detections(tmp_path / "d.npz")
    monkeypatch.setitem(sys.modules, "orjson", None)
    slow = load_detections(path)
    for col in ("offsets", "start", "end", "score", "label"):
        for other in (slow, again):
            a, b = getattr(fast, col), getattr(other, col)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), col
    assert (fast.videos, fast.labels) == (slow.videos, slow.labels) == (again.videos, again.labels)
    assert len(fast) > 200


# --- the .npz between steps -------------------------------------------------------------------


def _npz(path, **change):
    """An .npz as dump writes it for RESULTS, with entries changed (None: left out)."""
    dump(RESULTS, path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    for k, v in change.items():
        if v is None:
            del arrays[k]
        else:
            arrays[k] = v
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": np.array("something else 9")}, "format 'something else 9'"),
        ({"start": None}, "KeyError"),
        ({"start": np.zeros(2)}, "do not fit together"),
        ({"label": np.array([0, 5, 0], np.int32)}, "do not fit together"),
        ({"offsets": np.array([0, 2, 1, 3])}, "do not fit together"),
        ({"score": np.zeros(3, np.float32)}, "do not fit together"),
        ({"videos": np.array([object()], dtype=object)}, "ValueError"),  # pickled: refused
        ({"labels": np.frombuffer(b"[1, 2]", np.uint8)}, "do not fit together"),
    ],
)
def test_npz_that_is_not_ours_is_refused(tmp_path, change, message):
    path = _npz(tmp_path / "c.npz", **change)
    with pytest.raises(InputError, match=message) as info:
        load_detections(path)
    assert str(info.value).startswith(f"{path}: not a tadsweep detections file (")


def test_npz_truncated_and_its_size_cap(tmp_path, monkeypatch):
    from tadsweep import readers

    path = tmp_path / "c.npz"
    dump(RESULTS, path)
    assert load(path) == load_detections(path).to_dict()
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match="c.npz: not a tadsweep detections file"):
        load(path)
    path.write_bytes(good)
    monkeypatch.setattr(readers, "MAX_DETECTIONS_BYTES", 100)  # declared sizes, before reading
    with pytest.raises(InputError, match="c.npz: larger than 100 bytes"):
        load(path)


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
    assert out.stdout.strip() == "['_evaluate', '_nms']"
    assert detections.missing_kernels() == []
