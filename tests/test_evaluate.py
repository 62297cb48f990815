import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import reference_opentad as ref
from cases import ground_truth_and_predictions

from tadsweep.detections.evaluate import evaluate, load_ground_truth
from tadsweep.detections.formats import Detections, from_dict
from tadsweep.errors import InputError

TIOUS = (0.3, 0.4, 0.5, 0.6, 0.7)


def write_gt(tmp_path, db, name="gt.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"database": db}))
    return path


def has_instances(db):
    return any(
        ref.remove_duplicate_annotations(v["annotations"])
        for v in db.values()
        if v["subset"] == "validation"
    )


def assert_same_metrics(expected, got):
    assert set(expected) == set(got)
    for key in expected:
        if key == "per_class":
            assert list(expected[key]) == list(got[key])  # same class index order
            for name, aps in expected[key].items():
                for t, ap in aps.items():
                    assert got[key][name][t] == pytest.approx(ap, abs=1e-9)
        else:
            assert got[key] == pytest.approx(expected[key], abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_matches_reference_on_random_cases(tmp_path, seed):
    rng = np.random.default_rng(seed)
    checked = 0
    for _ in range(40):
        db, res = ground_truth_and_predictions(rng)
        if not has_instances(db):
            continue
        gt = load_ground_truth(write_gt(tmp_path, db))
        assert_same_metrics(ref.evaluate(db, res), evaluate(gt, res, strict=False))
        checked += 1
    assert checked > 20


def test_tied_tious_follow_numpy_argsort(tmp_path):
    # The prediction [2, 4] has tIoU 1/3 with both ground truths: OpenTAD takes them in
    # argsort()[::-1] order, which decides who is left for the second prediction.
    db = {
        "v": {
            "subset": "validation",
            "annotations": [
                {"segment": [1.0, 3.0], "label": "a"},
                {"segment": [3.0, 5.0], "label": "a"},
            ],
        }
    }
    res = {
        "v": [
            {"segment": [2.0, 4.0], "label": "a", "score": 0.9},
            {"segment": [3.0, 5.5], "label": "a", "score": 0.8},
        ]
    }
    gt = load_ground_truth(write_gt(tmp_path, db))
    assert_same_metrics(ref.evaluate(db, res, tious=(0.3,)), evaluate(gt, res, (0.3,)))


def test_nan_segments_are_scored_like_opentad(tmp_path):
    # Score voting on a zero-length segment yields NaN segments; OpenTAD's matching never
    # rejects a NaN tIoU, so the prediction takes a ground truth.
    db = {"v": {"subset": "validation", "annotations": [{"segment": [1.0, 2.0], "label": "a"}]}}
    res = {"v": [{"segment": [float("nan"), float("nan")], "label": "a", "score": 0.5}]}
    det = Detections(
        ["v"],
        np.array([0, 1]),
        np.array([np.nan]),
        np.array([np.nan]),
        np.array([0.5]),
        np.array([0], np.int32),
        ["a"],
    )
    gt = load_ground_truth(write_gt(tmp_path, db))
    expected = ref.evaluate(db, res)
    assert expected["average_mAP"] == 1.0
    assert_same_metrics(expected, evaluate(gt, det))


def test_perfect_and_empty_predictions(tmp_path):
    db = {
        "v1": {"subset": "validation", "annotations": [{"segment": [1, 2], "label": "a"}]},
        "v2": {"subset": "validation", "annotations": [{"segment": [5, 9], "label": "b"}]},
    }
    gt = load_ground_truth(write_gt(tmp_path, db))
    perfect = {
        "v1": [{"segment": [1, 2], "label": "a", "score": 0.5}],
        "v2": [{"segment": [5, 9], "label": "b", "score": 0.5}],
    }
    m = evaluate(gt, perfect)
    assert m["average_mAP"] == 1.0 and m["mAP@0.7"] == 1.0
    assert m["per_class"] == {"a": {t: 1.0 for t in TIOUS}, "b": {t: 1.0 for t in TIOUS}}
    assert evaluate(gt, {})["average_mAP"] == 0.0


def test_ground_truth_filtering(tmp_path):
    db = {
        "v1": {
            "subset": "validation",
            "annotations": [
                {"segment": [1.0, 2.0], "label": "b"},
                {"segment": [1.0005, 2.0], "label": "b"},  # duplicate within 1e-3
                {"segment": [1.0005, 2.0], "label": "a"},  # other label: kept
                {"segment": [3.0, 3.0], "label": "c"},  # zero length: dropped
                {"segment": [5.0, 5.0], "label": "c"},  # zero length: dropped (inverted: refused)
            ],
        },
        "v2": {"subset": "training", "annotations": [{"segment": [0, 1], "label": "d"}]},
    }
    gt = load_ground_truth(write_gt(tmp_path, db))
    assert gt.classes == ["b", "a"]  # order of first appearance
    assert len(gt) == 2 and gt.videos == ["v1"]
    assert gt.known_labels == {"a", "b", "c", "d"}


def test_cli_prints_json(tmp_path):
    db = {"v": {"subset": "validation", "annotations": [{"segment": [1, 2], "label": "a"}]}}
    gt = write_gt(tmp_path, db)
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"results": {"v": [{"segment": [1, 2], "label": "a", "score": 1}]}}))
    out = subprocess.run(
        [sys.executable, "-m", "tadsweep.detections.evaluate", str(gt), str(pred)]
        + ["--tiou", "0.5", "0.9"],
        capture_output=True,
        text=True,
        check=True,
    )
    metrics = json.loads(out.stdout)
    assert metrics["average_mAP"] == 1.0
    assert set(metrics) == {"average_mAP", "mAP@0.5", "mAP@0.9", "per_class"}


def test_unknown_video_and_label_are_errors(tmp_path):
    db = {"v": {"subset": "validation", "annotations": [{"segment": [1, 2], "label": "a"}]}}
    gt = load_ground_truth(write_gt(tmp_path, db))
    bad_video = from_dict({"w": []}, "pred.json")
    with pytest.raises(InputError, match=r'pred.json: results\["w"\]: unknown video'):
        evaluate(gt, bad_video)
    bad_label = from_dict({"v": [{"segment": [1, 2], "label": "zz", "score": 1}]}, "pred.json")
    with pytest.raises(
        InputError, match=r'pred.json: results\["v"\]\[0\].label: unknown label "zz"'
    ):
        evaluate(gt, bad_label)
    # Without strict checks they are scored like OpenTAD (ignored / false positives).
    assert evaluate(gt, bad_label, strict=False)["average_mAP"] == 0.0


@pytest.mark.parametrize(
    "db, message",
    [
        ({}, "no ground-truth instances"),
        ({"v": {"annotations": []}}, 'database\\["v"\\]: missing key "subset"'),
        (
            {"v": {"subset": "validation", "annotations": [{"segment": [1], "label": "a"}]}},
            r'database\["v"\].annotations\[0\].segment: expected \[start, end\]',
        ),
        (
            {"v": {"subset": "validation", "annotations": [{"segment": [1, 2]}]}},
            r'annotations\[0\]: missing key "label"',
        ),
    ],
)
def test_bad_ground_truth(tmp_path, db, message):
    with pytest.raises(InputError, match=message):
        load_ground_truth(write_gt(tmp_path, db))


def test_bad_ground_truth_file(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text('{"database": {"v": ')
    with pytest.raises(InputError, match="gt.json: invalid JSON"):
        load_ground_truth(path)
    path.write_text('{"taxonomy": []}')
    with pytest.raises(InputError, match='gt.json: missing key "database"'):
        load_ground_truth(path)


def test_bench_commands_runs_quick(tmp_path):
    """benchmarks/bench_commands.py (make bench) on its quick size: every whole command runs on
    the workflow's .npz and on upstream's JSON, timed beside the in-process kernels (upstream's
    side is left to make bench: torch's import alone is a second per command)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_commands

    out = tmp_path / "figures.json"
    figures = bench_commands.main(["--quick", "--repeat", "0", "--no-upstream", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(figures))
    for label in (".npz (the workflow's)", "upstream's JSON"):
        for what in (
            "sweep, 2 settings",
            "evaluate",
            *(f"apply {s}" for s in bench_commands.SETTINGS),
        ):
            assert f"{what}, {label}" in figures["commands"]
    for r in figures["commands"].values():
        assert r["wall"] > 0 and r["cpu"] > 0 and r["first"] == r["wall"]
    kernels = {"load detections (npz)", "load detections (json)", "evaluate",
               "write detections (npz)", *bench_commands.SETTINGS}  # fmt: skip
    assert kernels <= set(figures["kernels"])
