import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import reference_opentad as ref
from cases import candidates, setting

from tadsweep.detections.evaluate import evaluate, load_ground_truth, split_halves
from tadsweep.detections.formats import from_dict, load
from tadsweep.detections.postprocess import (
    NMSSetting,
    apply,
    round_like_python,
    sweep,
)
from tadsweep.errors import InputError

F32 = np.float32


def same(expected: dict, got: dict) -> bool:
    # json text compares NaN segments (possible with voting) as equal, dicts would not.
    return ref.dumps(expected) == ref.dumps(got)


@pytest.mark.parametrize("seed", range(10))
def test_matches_reference_on_random_cases(seed):
    rng = np.random.default_rng(100 + seed)
    for _ in range(40):
        res, s = candidates(rng), setting(rng)
        assert same(ref.post_process(res, s), apply(from_dict(res), NMSSetting(**s))), s


@pytest.mark.parametrize("method", [0, 1, 2, 3])
@pytest.mark.parametrize("multiclass", [True, False])
def test_every_method_and_mode(method, multiclass):
    rng = np.random.default_rng(method * 2 + multiclass)
    for voting in (0.0, 0.6):
        for _ in range(6):
            res = candidates(rng, max_n=60)
            s = dict(
                method=method,
                multiclass=multiclass,
                voting_thresh=voting,
                sigma=0.5,
                iou_threshold=0.4,
                min_score=0.005,
                max_seg_num=50,
                t1=0.1,
                t2=0.02,
            )
            assert same(ref.post_process(res, s), apply(res, s))


def test_dense_groups_with_many_ties_and_removals():
    # One crowded class: exercises slot swaps, removal compaction and tie breaking together.
    rng = np.random.default_rng(7)
    s0 = np.round(rng.random(150) * 10, 1)
    entries = [
        {
            "segment": [float(a), float(a + rng.integers(1, 4))],
            "label": "a",
            "score": float(rng.choice([0.002, 0.004, 0.3, 0.3, 0.6])),
        }
        for a in s0
    ]
    res = {"v": entries}
    for s in (
        dict(sigma=0.5, min_score=0.003, max_seg_num=200),
        dict(method=1, iou_threshold=0.2, min_score=0.01, max_seg_num=200),
        dict(method=0, iou_threshold=0.0, min_score=0.0, max_seg_num=200),
        dict(method=0, iou_threshold=0.0, min_score=0.001, max_seg_num=200),
        dict(use_soft_nms=False, iou_threshold=0.0, max_seg_num=200),
    ):
        assert same(ref.post_process(res, s), apply(res, s)), s


def test_rounding_equals_python_round():
    rng = np.random.default_rng(1)
    v = np.concatenate(
        [
            (rng.random(100_000) * 3000).astype(F32),
            rng.random(100_000).astype(F32),
            np.array([0.125, 0.375, 2.675, 1.005, 0.00005, 1e-9, 0.0], F32),
        ]
    )
    for nd in (2, 4):
        assert round_like_python(v, nd).tolist() == [round(float(x), nd) for x in v.tolist()]


def test_output_rounding_and_order():
    res = {
        "v": [
            {"segment": [0.123456, 1.987654], "label": "a", "score": 0.123456789},
            {"segment": [5.0, 6.0], "label": "b", "score": 0.9},
        ]
    }
    out = apply(res, NMSSetting())["v"]
    assert out[0] == {"segment": [5.0, 6.0], "label": "b", "score": 0.9}
    assert out[1] == {"segment": [0.12, 1.99], "label": "a", "score": 0.1235}


def test_video_filters_act_per_video_in_original_order():
    res = {
        "v": [
            {"segment": [0, 1], "label": "a", "score": 0.5},
            {"segment": [2, 3], "label": "a", "score": 0.001},
            {"segment": [4, 5], "label": "a", "score": 0.9},
            {"segment": [6, 7], "label": "a", "score": 0.5},
        ],
        "w": [{"segment": [0, 1], "label": "a", "score": 0.2}],
    }
    out = apply(res, dict(video_topk=2, video_thresh=0.001, max_seg_num=10))
    # 0.001 is not > 0.001; of the rest, the top 2 are 0.9 and the earlier 0.5.
    assert (
        out["v"] == ref.post_process({"v": [res["v"][0], res["v"][2]]}, dict(max_seg_num=10))["v"]
    )
    assert len(out["w"]) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": 4}, "method must be 0, 1, 2 or 3"),
        ({"max_seg_num": 0}, "max_seg_num must be an integer >= 1"),
        ({"sigma": 0.0}, "sigma must be > 0"),
        ({"multiclass": "yes"}, "multiclass must be true or false"),
        ({"video_topk": -3}, "video_topk must be null or an integer >= 1"),
        ({"min_score": float("nan")}, "min_score must be a finite number"),
    ],
)
def test_setting_validation(kwargs, message):
    with pytest.raises(InputError, match=message):
        NMSSetting.from_dict(kwargs)


def test_setting_rejects_unknown_keys():
    with pytest.raises(InputError, match="unknown key"):
        NMSSetting.from_dict({"sigmaa": 0.5})


@pytest.fixture
def small_study(tmp_path):
    rng = np.random.default_rng(11)
    res = candidates(rng, n_videos=4, max_n=50)
    db = {
        v: {
            "subset": "validation",
            "annotations": [
                {"segment": [1.0, 3.0], "label": "c0"},
                {"segment": [4, 8], "label": "c1"},
            ],
        }
        for v in res
    }
    db["extra"] = {"subset": "validation", "annotations": [{"segment": [0, 1], "label": "c2"}]}
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps({"database": db}))
    cand_path = tmp_path / "cand.json.gz"
    from tadsweep.detections.formats import dump

    dump(res, cand_path)
    return gt_path, cand_path, res, db


GRID = [
    {"setting": "a", "sigma": 0.7, "max_seg_num": 20, "min_score": 0.001},
    {"setting": "b", "multiclass": False, "voting_thresh": 0.7, "max_seg_num": 20},
    {"setting": "c", "use_soft_nms": False, "iou_threshold": 0.5},
]


def test_sweep_rows_equal_reference(small_study):
    gt_path, _, res, db = small_study
    gt = load_ground_truth(gt_path)
    rows = sweep(gt, res, GRID)
    assert [r["setting"] for r in rows] == ["a", "b", "c"]
    for row, grid in zip(rows, GRID):
        params = {k: v for k, v in grid.items() if k != "setting"}
        expected = ref.evaluate(db, ref.post_process(res, params))
        for key in ("average_mAP", "mAP@0.3", "mAP@0.7"):
            assert row[key] == pytest.approx(expected[key], abs=1e-9)
        assert row["max_seg_num"] == NMSSetting.from_dict(params).max_seg_num
        assert row["video_topk"] is None
        split = split_halves(db)  # each half's columns: upstream's evaluator on that half alone
        for h in ("a", "b"):
            subset = {h: "validation", "a" if h == "b" else "b": "other"}
            alone = {v: {**info, "subset": subset[split[v]]} for v, info in db.items()}
            mine = {v: e for v, e in res.items() if split[v] == h}
            expected = ref.evaluate(alone, ref.post_process(mine, params))
            for key in ("average_mAP", "mAP@0.3", "mAP@0.7"):
                assert row[f"{h}:{key}"] == pytest.approx(expected[key], abs=1e-9)


def sweep_cli(gt, candidates, grid, out, *extra, check=False):
    cmd = [sys.executable, "-m", "tadsweep.detections.postprocess", "sweep", "--gt", str(gt)]
    cmd += ["--candidates", str(candidates), "--grid", str(grid), "--out", str(out), *extra]
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def test_sweep_cli_writes_tsv(small_study, tmp_path):
    gt_path, cand_path, res, _ = small_study
    grid_path = tmp_path / "grid.json"
    grid_path.write_text(json.dumps(GRID))
    out = tmp_path / "sweep.tsv"
    sweep_cli(gt_path, cand_path, grid_path, out, "--save-dir", str(tmp_path / "dets"), check=True)
    rows = list(csv.DictReader(out.open(), delimiter="\t"))
    assert [r["setting"] for r in rows] == ["a", "b", "c"]
    assert {"sigma", "multiclass", "average_mAP", "mAP@0.3", "mAP@0.7"} <= set(rows[0])
    assert {"a:average_mAP", "a:mAP@0.7", "b:average_mAP", "b:mAP@0.3"} <= set(rows[0])
    assert rows[1]["multiclass"] == "False" and rows[0]["video_topk"] == ""
    gt = load_ground_truth(gt_path)
    saved = load(tmp_path / "dets" / "b.npz")
    assert float(rows[1]["average_mAP"]) == evaluate(gt, saved)["average_mAP"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_postprocess_cli(small_study, tmp_path):
    _, cand_path, res, _ = small_study
    out = tmp_path / "out.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tadsweep.detections.postprocess",
            "apply",
            str(cand_path),
            str(out),
            "--sigma",
            "0.7",
            "--max-seg-num",
            "20",
            "--no-multiclass",
            "--voting-thresh",
            "0.7",
            "--min-score",
            "0.001",
        ],
        check=True,
    )
    s = dict(sigma=0.7, max_seg_num=20, multiclass=False, voting_thresh=0.7, min_score=0.001)
    assert same(ref.post_process(res, s), json.loads(out.read_text())["results"])


def test_bad_grid_exits_2(small_study, tmp_path):
    gt_path, cand_path, _, _ = small_study
    grid_path = tmp_path / "grid.json"
    grid_path.write_text(json.dumps([{"setting": "x", "method": 9}]))
    proc = sweep_cli(gt_path, cand_path, grid_path, tmp_path / "s.tsv")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "method must be 0, 1, 2 or 3" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sort_is_torch_sort_without_torch():
    # apply no longer imports torch: its per-video sort re-implements torch's std::sort (not
    # stable), so ties -- frequent after rounding -- must come out in torch's very order.
    import torch

    from tadsweep.detections import nms

    rng = np.random.default_rng(7)
    sizes = [1, 2, 16, 17, 18, 40, 257, 2000, 4000]
    for trial in range(400):
        n = int(rng.choice(sizes))
        kind = trial % 4
        if kind == 0:
            v = rng.integers(0, max(2, n // 10), n) / 7  # many ties
        elif kind == 1:
            v = rng.integers(0, 3, n).astype(float)  # a few values only
        elif kind == 2:
            v = np.sort(rng.integers(0, 50, n))[::-1].astype(float)  # presorted runs
        else:
            v = rng.integers(0, 20, n).astype(float)
            v[rng.random(n) < 0.05] = np.nan  # NaN first, as torch's comparator
        v = v.astype(F32)
        expected = torch.sort(torch.from_numpy(v.copy()), descending=True).indices.numpy()
        np.testing.assert_array_equal(nms.sort_desc_groups(v, np.array([0, n])), expected)
    # several groups at once, offsets applied
    v = (rng.integers(0, 30, 900) / 3).astype(F32)
    offsets = np.array([0, 17, 17, 500, 900])
    got = nms.sort_desc_groups(v, offsets)
    for lo, hi in zip(offsets[:-1], offsets[1:]):
        part = torch.from_numpy(v[lo:hi].copy())
        np.testing.assert_array_equal(got[lo:hi], torch.sort(part, descending=True).indices + lo)


def test_apply_imports_no_torch(tmp_path):
    # the torch import alone took 1.3 s of every `apply`; score voting still needs it
    res = {"v": [{"segment": [0.0, 1.0], "label": "a", "score": 0.5}]}
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps({"results": res}))
    code = (
        "import sys; from tadsweep.detections import postprocess as p; "
        f"p.main(['apply', {str(raw)!r}, {str(tmp_path / 'out.json')!r}]); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert load(tmp_path / "out.json") == res
