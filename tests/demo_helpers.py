"""Shared set-up of the demo backend tests: one small dataset and backbone per test process."""

from __future__ import annotations

import atexit
import copy
import functools
import json
import re
import shutil
import tempfile
from pathlib import Path

from cases import set_dotted

from tadsweep.backends.demo import data, pretrain

SMALL = {"videos_train": 16, "videos_val": 10, "num_classes": 5}

BASE_PARAMS = {
    "study": "demo",
    "run_id": "p1/base/seed=1",
    "phase": "p1",
    "arm": "base",
    "config_id": "p1/base",
    "seed": 1,
    "backend": "demo",
    "variants": {"lora": "v1", "schedule": "v1", "augment": "default", "structure": "all"},
    "lora": {"r": 8, "alpha": 16, "dropout": 0.1, "targets": ["qkv", "proj", "fc1", "fc2"]},
    "schedule": {
        "lr": 3e-3,
        "head_lr": 3e-3,
        "weight_decay": 0.05,
        "warmup_epoch": 1,
        "epochs": 4,
        "cosine_epochs": 5,
        "val_start_epoch": 1,
        "val_interval": 2,
        "checkpoint_interval": 2,
    },
    "augment": {"imgaug": "default", "randaugment": None},
    "structure": {"adapter_index": [0, 1, 2, 3], "drop_path_rate": 0.1},
    "batch_size": 2,
    "ema": True,
    "amp": True,
    "postprocess_default": {
        "sigma": 0.7,
        "max_seg_num": 2000,
        "multiclass": True,
        "method": 2,
        "voting_thresh": 0.7,
        "min_score": 0.001,
        "use_soft_nms": True,
        "iou_threshold": 0.0,
        "pre_nms_topk": 2000,
        "pre_nms_thresh": 0.001,
    },
    "tious": [0.3, 0.4, 0.5, 0.6, 0.7],
    "model": {"depth": 4},
}


@functools.cache
def small_env() -> tuple[Path, Path]:
    """(data dir, backbone.pt) built once per test process, removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="tadsweep-demo-test-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    data.generate(root / "data", seed=3, **SMALL)
    pretrain.pretrain(root / "data", root / "backbone.pt", seed=0, epochs=6)
    return root / "data", root / "backbone.pt"


def make_params(**overrides) -> dict:
    """BASE_PARAMS with dotted-path overrides, e.g. make_params(**{"lora.r": 0})."""
    return set_dotted(copy.deepcopy(BASE_PARAMS), overrides)


def write_params(params: dict, run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "params.json"
    path.write_text(json.dumps(params))
    return path


def run_train(params: dict, run_dir: Path) -> dict:
    from tadsweep.backends.demo.train import train

    data_dir, backbone = small_env()
    return train(
        write_params(params, run_dir), data_dir, backbone, run_dir / "work", run_dir / "train.json"
    )


TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


def numeric_log_lines(log_path: Path) -> list[str]:
    """Training and evaluation lines without timestamps and the machine-dependent mem field."""
    keep = []
    for line in log_path.read_text().splitlines():
        if "[Train]: [" in line or "mAP" in line:
            keep.append(re.sub(r"mem=\d+MB", "mem=?", TIMESTAMP.sub("", line)))
    return keep
