"""tadsweep's post-processing and evaluation against upstream's own code (not a port): OpenTAD's
`gather_ddp_results` with its compiled `batched_nms`, and its `mAP` evaluator, from $OPENTAD_ROOT.

Upstream's evaluator forks one process per class chunk through `multiprocessing`; here its `mp`
runs the same per-class code in this process (same results, a thousand cases in seconds)."""

import copy
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import reference_opentad as ref
from cases import candidates, ground_truth_and_predictions, setting

from tadsweep.detections.evaluate import evaluate, load_ground_truth
from tadsweep.detections.postprocess import NMSSetting, apply, apply_detections

pytestmark = pytest.mark.opentad
REPO = Path(__file__).resolve().parents[1]
TIOUS = [0.3, 0.4, 0.5, 0.6, 0.7]
CASES = 1000


@pytest.fixture(scope="module")
def upstream(opentad_root):
    """Upstream's gather_ddp_results (one gloo process) and mAP, importable in this process."""
    import opentad_site
    import torch.distributed as dist
    from mmengine.config import ConfigDict

    with opentad_site.importable(opentad_root):
        from opentad.cores.test_engine import gather_ddp_results
    map_module = opentad_site.upstream_map(opentad_root)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29533", rank=0, world_size=1)

    def post_process(results: dict, s: dict) -> dict:
        cfg = ConfigDict(sliding_window=True, nms=dict(s))
        return gather_ddp_results(1, copy.deepcopy(results), cfg)

    def evaluate_map(gt_path: Path, results: dict, tious=TIOUS) -> np.ndarray:
        ev = map_module.mAP(str(gt_path), {"results": results}, "validation", tious, thread=1)
        ev.evaluate()
        return ev.mAPs

    yield types.SimpleNamespace(post_process=post_process, evaluate=evaluate_map)
    if started:
        dist.destroy_process_group()


def same(expected: dict, got: dict) -> bool:
    # JSON text compares NaN segments (score voting on zero-length segments) as equal.
    return json.dumps(expected, sort_keys=True) == json.dumps(got, sort_keys=True)


def test_post_processing_is_upstreams_on_random_cases(upstream):
    """Every setting kind (soft/hard, 4 methods, per-class/agnostic, min_score, score voting) on
    small random cases full of ties and zero-length segments: identical detections."""
    rng = np.random.default_rng(12)
    voted = 0
    for _ in range(CASES):
        res, s = candidates(rng, n_videos=3, max_n=40), setting(rng)
        if rng.random() < 0.4:  # score voting needs class-agnostic NMS: make it frequent
            s.update(multiclass=False, voting_thresh=float(rng.choice([0.3, 0.5, 0.75])))
        voted += (not s["multiclass"]) and s["voting_thresh"] > 0
        assert same(upstream.post_process(res, s), apply(res, s)), s
    assert voted > CASES // 3


def test_map_is_upstreams_on_random_cases(upstream, tmp_path):
    rng = np.random.default_rng(13)
    checked = 0
    for k in range(CASES):
        db, res = ground_truth_and_predictions(rng)
        valid = [v["annotations"] for v in db.values() if v["subset"] == "validation"]
        if not any(ref.remove_duplicate_annotations(a) for a in valid):
            continue
        path = tmp_path / f"gt{k}.json"
        path.write_text(json.dumps({"database": db}))
        mine = evaluate(load_ground_truth(path), res, TIOUS, strict=False)
        theirs = upstream.evaluate(path, res)
        assert [mine[f"mAP@{t}"] for t in TIOUS] == pytest.approx(list(theirs), abs=1e-12)
        assert mine["average_mAP"] == pytest.approx(float(theirs.mean()), abs=1e-12)
        checked += 1
    assert checked > CASES // 2


@pytest.fixture(scope="module")
def thumos_sized():
    """The benchmark's THUMOS-14-sized data: 211 videos, 20 classes, 4000 candidates each."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_postprocess import make_data

    return make_data()


@pytest.mark.parametrize(
    "s",
    [
        dict(sigma=0.7, max_seg_num=2000, multiclass=True, voting_thresh=0.7),  # AdaTAD's
        dict(sigma=0.5, max_seg_num=1000, multiclass=False, voting_thresh=0.7),  # voting
    ],
    ids=["adatad", "voting"],
)
def test_thumos_sized_detections_and_map_are_upstreams(upstream, thumos_sized, tmp_path, s):
    database, results = thumos_sized
    det = apply_detections(results, NMSSetting(**s))
    ours = det.to_dict()
    assert same(upstream.post_process(results, s), ours)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"database": database}))
    mine = evaluate(load_ground_truth(path), det, TIOUS)  # as the sweep: NaN voted segments
    theirs = upstream.evaluate(path, ours)
    assert mine["average_mAP"] == pytest.approx(float(theirs.mean()), abs=1e-12)
    assert mine["average_mAP"] > 0.05  # a real signal, not an empty match
