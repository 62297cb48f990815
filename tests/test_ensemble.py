import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import reference_opentad as ref

from tadsweep.detections import ensemble
from tadsweep.detections.ensemble import combine, crossfit_summary, greedy
from tadsweep.detections.evaluate import load_ground_truth, split_halves
from tadsweep.detections.formats import dump, from_dict
from tadsweep.detections.postprocess import NMSSetting
from tadsweep.errors import InputError

SETTING = {"sigma": 0.7, "max_seg_num": 50, "min_score": 0.001}


def make_study(tmp_path, seed=0, n_members=3):
    """Ground truth plus members that each find a different part of it, with noise."""
    rng = np.random.default_rng(seed)
    db, members = {}, {f"m{k}": {} for k in range(n_members)}
    for v in range(4):
        anns = []
        for j in range(6):
            s = 10.0 * j + float(rng.integers(0, 3))
            anns.append({"segment": [s, s + 3.0], "label": f"c{j % 2}"})
        db[f"v{v}"] = {"subset": "validation", "annotations": anns}
        for k in range(n_members):
            entries = []
            for j, a in enumerate(anns):
                found = (j + k) % n_members != 0 or rng.random() < 0.3
                s0, e0 = a["segment"]
                jitter = float(rng.normal(0, 0.4))
                entries.append(
                    {
                        "segment": [round(max(s0 + jitter, 0), 2), round(e0 + jitter, 2)],
                        "label": a["label"] if found else f"c{(j + 1) % 2}",
                        "score": round(float(rng.uniform(0.3, 0.9)), 4),
                    }
                )
            for _ in range(5):
                s = round(float(rng.uniform(0, 60)), 2)
                entries.append(
                    {"segment": [s, s + 2.0], "label": f"c{rng.integers(0, 2)}", "score": 0.05}
                )
            members[f"m{k}"][f"v{v}"] = entries
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps({"database": db}))
    return gt_path, db, members


def pooled(members, names, weights=None):
    out = {}
    for k, n in enumerate(names):
        w = 1.0 if weights is None else weights[k]
        for v, entries in members[n].items():
            out.setdefault(v, []).extend({**e, "score": e["score"] * w} for e in entries)
    return out


def test_pool_concatenates_in_member_order_with_weights(tmp_path):
    _, _, members = make_study(tmp_path)
    dets = [from_dict(members[n], n) for n in ("m2", "m0")]
    got = combine(dets, [0.5, 2.0]).to_dict()
    assert got == pooled(members, ["m2", "m0"], [0.5, 2.0])


def test_average_rescoring():
    a = {
        "v": [
            {"segment": [0.0, 10.0], "label": "x", "score": 0.8},
            {"segment": [50.0, 60.0], "label": "x", "score": 0.4},
        ]
    }
    b = {
        "v": [
            {"segment": [1.0, 10.0], "label": "x", "score": 0.6},  # tIoU 0.9 with a[0]
            {"segment": [0.0, 10.0], "label": "y", "score": 0.9},
        ]
    }  # other label
    got = combine([from_dict(a), from_dict(b)], [1.0, 3.0], mode="average", match_iou=0.5)
    assert got.score.tolist() == pytest.approx(
        [(0.8 + 3 * 0.6) / 4, 0.4 / 4, (1 * 0.8 + 3 * 0.6) / 4, 3 * 0.9 / 4]
    )


def test_greedy_rows_match_reference(tmp_path):
    gt_path, db, members = make_study(tmp_path)
    gt = load_ground_truth(gt_path)
    dets = {n: from_dict(r, n) for n, r in members.items()}
    rows = greedy(gt, dets, NMSSetting.from_dict(SETTING))

    def score(names):
        return ref.evaluate(db, ref.post_process(pooled(members, names), SETTING))

    singles = {n: score([n])["average_mAP"] for n in members}
    best = max(singles, key=singles.get)
    assert rows[0]["members"] == best and rows[0]["step"] == 0
    assert all(r["best_single_average_mAP"] == pytest.approx(singles[best]) for r in rows)
    assert len(rows) >= 2  # members find complementary instances: pooling must help
    for r in rows:
        expected = score(r["members"].split(","))
        assert r["average_mAP"] == pytest.approx(expected["average_mAP"], abs=1e-9)
        assert r["mAP@0.5"] == pytest.approx(expected["mAP@0.5"], abs=1e-9)
    assert [r["average_mAP"] for r in rows] == sorted(r["average_mAP"] for r in rows)
    assert len(set(r["average_mAP"] for r in rows)) == len(rows)  # strictly improving
    # The selection stops only when no remaining member improves.
    chosen = rows[-1]["members"].split(",")
    for n in set(members) - set(chosen):
        assert score(chosen + [n])["average_mAP"] <= rows[-1]["average_mAP"] + 1e-12


def test_greedy_on_half_a_never_looks_at_half_b(tmp_path):
    gt_path, db, members = make_study(tmp_path, seed=2, n_members=4)
    gt = load_ground_truth(gt_path)
    dets = {n: from_dict(r, n) for n, r in members.items()}
    split = split_halves(db)
    subset = {"a": "validation", "b": "training"}
    only_a = {v: {**info, "subset": subset[split[v]]} for v, info in db.items()}

    def on_a(names):  # upstream's evaluator on half a's videos alone
        pooled_a = {v: e for v, e in pooled(members, names).items() if split[v] == "a"}
        return ref.evaluate(only_a, ref.post_process(pooled_a, SETTING))["average_mAP"]

    memo = {}
    rows = greedy(gt, dets, NMSSetting.from_dict(SETTING), basis="a", memo=memo)
    singles = {n: on_a([n]) for n in members}
    assert rows[0]["members"] == max(singles, key=singles.get)
    for r in rows:
        assert r["selected_on"] == "a"
        assert r["a:average_mAP"] == pytest.approx(on_a(r["members"].split(",")), abs=1e-9)
    assert [r["a:average_mAP"] for r in rows] == sorted({r["a:average_mAP"] for r in rows})
    chosen = rows[-1]["members"].split(",")
    for n in set(members) - set(chosen):
        assert on_a(chosen + [n]) <= rows[-1]["a:average_mAP"] + 1e-12
    # The swap and the all-videos selection reuse every combination already evaluated.
    before = len(memo)
    paths = {"a": rows}
    for basis in ("b", "all"):
        paths[basis] = greedy(gt, dets, NMSSetting.from_dict(SETTING), basis=basis, memo=memo)
    assert len(memo) < before + 2 * sum(len(members) - k for k in range(len(members)))
    cf = crossfit_summary(paths, "a")
    assert cf["decisions"] == "half a" and cf["chosen_on_a"]["members"] == chosen
    assert cf["chosen_on_a"]["b"] == rows[-1]["b:average_mAP"]
    assert cf["honest"] == pytest.approx((cf["chosen_on_a"]["b"] + cf["chosen_on_b"]["a"]) / 2)
    assert cf["optimistic"] == max(r["average_mAP"] for r in paths["all"])


def test_ensemble_cli(tmp_path):
    gt_path, _, members = make_study(tmp_path, seed=1)
    paths = []
    for n, r in members.items():
        p = tmp_path / f"{n}.json.gz"
        dump(r, p)
        paths.append(str(p))
    setting = tmp_path / "setting.json"
    setting.write_text(json.dumps({"setting": "s0", **SETTING}))
    out = tmp_path / "ens.tsv"
    cmd = [
        sys.executable,
        "-m",
        "tadsweep.detections.ensemble",
        "--gt",
        str(gt_path),
        "--candidates",
        *paths,
        "--names",
        *members,
        "--setting",
        str(setting),
        "--out",
        str(out),
        "--greedy",
    ]
    cf_path = tmp_path / "crossfit.json"
    subprocess.run(
        [*cmd, "--crossfit", "--crossfit-out", str(cf_path)], check=True, capture_output=True
    )
    rows = list(csv.DictReader(out.open(), delimiter="\t"))
    metrics = ["average_mAP", "mAP@0.3", "mAP@0.4", "mAP@0.5", "mAP@0.6", "mAP@0.7"]
    assert list(rows[0]) == [
        "step",
        "members",
        "selected_on",
        *metrics,
        *[f"{h}:{m}" for h in "ab" for m in metrics],
        "best_single_average_mAP",
    ]
    assert rows[0]["step"] == "0" and {r["selected_on"] for r in rows} == {"a"}
    cf = json.loads(cf_path.read_text())
    assert cf["chosen_on_a"]["members"] == rows[-1]["members"].split(",")
    assert cf["chosen_on_a"]["b"] == pytest.approx(float(rows[-1]["b:average_mAP"]))
    assert set(cf) == {"decisions", "chosen_on_a", "chosen_on_b", "chosen_on_all", "honest",
                       "optimistic"}  # fmt: skip
    assert ensemble.main(cmd[3:]) == 0  # without --crossfit: today's selection (in-process)
    assert {r["selected_on"] for r in csv.DictReader(out.open(), delimiter="\t")} == {"all"}
    # --top-k per basis: each selection's candidates are the k best on its own videos
    order = {"average_mAP": (0.5, 0.4, 0.3), "a:average_mAP": (0.3, 0.4, 0.5),
             "b:average_mAP": (0.4, 0.5, 0.3)}  # fmt: skip
    sweeps = []
    for k, n in enumerate(members):
        sweeps.append(tmp_path / f"{n}.tsv")
        row = {"setting": "default", **{m: v[k] for m, v in order.items()}}
        sweeps[-1].write_text("\t".join(row) + "\n" + "\t".join(map(str, row.values())) + "\n")
    top = ["--top-k", "2", "--sweeps", *map(str, sweeps), "--crossfit-out", str(cf_path)]
    assert ensemble.main([*cmd[3:], "--crossfit", *top]) == 0
    cf = json.loads(cf_path.read_text())
    pools = {"a": {"m2", "m1"}, "b": {"m1", "m0"}, "all": {"m0", "m1"}}
    for basis, pool in pools.items():
        assert set(cf[f"chosen_on_{basis}"]["members"]) <= pool, basis
    bad = subprocess.run(cmd[:-1] + ["--weights", "1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--weights: 1 weights for 3 members" in bad.stderr


def test_bad_combine_arguments():
    d = from_dict({"v": []})
    with pytest.raises(InputError, match="weights must be >= 0"):
        combine([d], [-1.0])
    with pytest.raises(InputError, match='combine must be "pool" or "average"'):
        combine([d], mode="vote")
