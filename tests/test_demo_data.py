"""Synthetic demo data: OpenTAD's formats, deterministic from the seed, varied instances."""

import hashlib
import json

import numpy as np
import pytest

from tadsweep.backends.demo import data
from tadsweep.errors import InputError


def digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_formats_match_opentad(tmp_path):
    data.generate(tmp_path, seed=5, videos_train=6, videos_val=4, num_classes=3)
    classes = (tmp_path / "category_idx.txt").read_text().splitlines()
    assert len(classes) == 3 and len(set(classes)) == 3
    database = json.loads((tmp_path / "annotations.json").read_text())["database"]
    subsets = [v["subset"] for v in database.values()]
    assert subsets.count("training") == 6 and subsets.count("validation") == 4
    for name, info in database.items():
        assert set(info) == {"subset", "duration", "frame", "annotations"}
        feats = np.load(tmp_path / "features" / f"{name}.npy")
        assert feats.dtype == np.float32
        assert feats.shape == (data.SEQ_LEN, data.FEAT_DIM)
        assert info["duration"] == pytest.approx(data.SEQ_LEN / data.FEATURE_RATE)
        assert info["frame"] == round(info["duration"] * data.FPS)
        assert info["annotations"], name
        for ann in info["annotations"]:
            start, end = ann["segment"]
            assert 0 <= start < end <= info["duration"]
            assert ann["label"] in classes
    # no temp files left behind by the atomic writes
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        data.generate(tmp_path / name, seed=seed, videos_train=3, videos_val=2)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_instances_vary_in_length_and_overlap(tmp_path):
    data.generate(tmp_path, seed=0)
    ds = data.load(tmp_path)
    lengths = np.concatenate([(v.segments[:, 1] - v.segments[:, 0]).numpy() for v in ds.train])
    assert lengths.min() < 10 <= 40 < lengths.max()  # steps
    overlaps = 0
    for v in ds.train + ds.val:
        s = v.segments.numpy()
        overlaps += int((s[1:, 0] < s[:-1, 1]).sum())
    assert overlaps >= 5
    labels = np.concatenate([v.labels.numpy() for v in ds.train])
    assert set(labels.tolist()) == set(range(len(ds.classes)))


def test_load_rejects_missing_dataset(tmp_path):
    with pytest.raises(InputError, match="not a demo dataset"):
        data.load(tmp_path)


def test_cli_data_and_input_errors(tmp_path, capsys):
    from tadsweep.backends.demo.__main__ import main
    from tadsweep.cli import status

    args = ["--videos-train", "3", "--videos-val", "2", "--classes", "4"]
    assert main(["data", "--out", str(tmp_path / "cli"), "--seed", "4", *args]) == 0
    data.generate(tmp_path / "api", seed=4, videos_train=3, videos_val=2, num_classes=4)
    assert digest(tmp_path / "cli") == digest(tmp_path / "api")
    missing = str(tmp_path / "nope.json")
    argv = ["train", "--params", missing, "--data", str(tmp_path / "cli"), "--backbone", "x"]
    argv += ["--work-dir", str(tmp_path / "w"), "--done", str(tmp_path / "d")]
    assert status(main, argv) == 2  # as `python -m tadsweep.backends.demo` runs it
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope.json" in err and len(err.strip().splitlines()) == 1


def test_augmentations_keep_targets_consistent(tmp_path):
    import torch

    from tadsweep.backends.demo import augment

    data.generate(tmp_path, seed=1, videos_train=4, videos_val=1)
    video = data.load(tmp_path).train[0]
    g = torch.Generator().manual_seed(0)
    settings = [
        {"imgaug": "none", "randaugment": None},
        {"imgaug": "default", "randaugment": None},
        {"imgaug": "default", "randaugment": {"num_ops": 3, "magnitude": 12}},
    ]
    for setting in settings:
        length = augment.train_length(setting, video.feats.shape[0])
        outputs = []
        for _ in range(20):
            x, segs, labels = augment.apply(video.feats, video.segments, video.labels, setting, g)
            assert x.shape == (length, video.feats.shape[1])
            assert len(segs) == len(labels) and len(segs) > 0
            assert bool((segs[:, 0] >= 0).all() and (segs[:, 1] <= length).all())
            assert bool((segs[:, 1] > segs[:, 0]).all())
            outputs.append(x)
        if setting["imgaug"] == "none" and setting["randaugment"] is None:
            assert all(torch.equal(x, video.feats) for x in outputs)  # off means untouched
        else:
            assert not torch.equal(outputs[0], outputs[1])
