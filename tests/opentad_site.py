"""Upstream OpenTAD on CPU for the tests: the checkout, its compiled NMS, tiny THUMOS-format data.

- The checkout is $OPENTAD_ROOT (in CI: ../shared/third_party/OpenTAD, the pinned commit). It is
  read-only here: `nms_1d_cpu` is compiled from a copy of its source into build/opentad-cpu/.
- Subprocesses that run upstream code get `environment()`: PYTHONPATH with this checkout's package,
  the compiled NMS and tests/doubles/cuda (the CPU stand-in for a GPU and for OpenTAD's two
  CUDA-only extensions), and OPENTAD_ROOT.
- `make_site()` writes what a user's site has, tiny: mp4 clips with action segments that decord
  reads, OpenTAD's THUMOS annotation JSON, the 20-class `category_idx.txt`, and a VideoMAE-style
  pretrained checkpoint (random weights, upstream's key layout) for configs/smoke/adatad_tiny.py.
"""

from __future__ import annotations

import colorsys
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CUDA_DOUBLE = REPO / "tests" / "doubles" / "cuda"
BIN_DOUBLES = REPO / "tests" / "doubles" / "bin"
SMOKE = REPO / "configs" / "smoke" / "adatad_tiny.py"
BUILD = REPO / "build" / "opentad-cpu"
NMS_SRC = Path("opentad", "models", "utils", "post_processing", "nms")
HINT = (
    "OPENTAD_ROOT is not set to an OpenTAD checkout (commit 3dd7b03): export "
    "OPENTAD_ROOT=/path/to/OpenTAD, or use `make test-opentad` (`make opentad` clones one)"
)

# OpenTAD's THUMOS-14 classes: category_idx.txt must list all 20 (the AdaTAD head has 20 outputs).
THUMOS_CLASSES = [
    "BaseballPitch",
    "BasketballDunk",
    "Billiards",
    "CleanAndJerk",
    "CliffDiving",
    "CricketBowling",
    "CricketShot",
    "Diving",
    "FrisbeeCatch",
    "GolfSwing",
    "HammerThrow",
    "HighJump",
    "JavelinThrow",
    "LongJump",
    "PoleVault",
    "Shotput",
    "SoccerPenalty",
    "TennisSwing",
    "ThrowDiscus",
    "VolleyballSpiking",
]


def opentad_root() -> Path:
    """The checkout named by $OPENTAD_ROOT; a missing one fails the test loudly, never skips."""
    import pytest

    root = os.environ.get("OPENTAD_ROOT")
    if not root or not (Path(root) / "tools" / "train.py").is_file():
        pytest.fail(HINT if not root else f"OPENTAD_ROOT={root}: no tools/train.py. {HINT}")
    return Path(root).resolve()


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def nms_extension(root: Path) -> Path:
    """Folder holding upstream's `nms_1d_cpu`, compiled once per source and torch version."""
    import torch

    src = root / NMS_SRC
    digest = hashlib.sha256(torch.__version__.encode())
    for name in ("nms_cpu.cpp", "setup.py"):
        digest.update((src / name).read_bytes())
    out = BUILD / f"nms-{digest.hexdigest()[:12]}"
    with _lock(BUILD / "nms.lock"):
        if not list(out.glob("nms_1d_cpu*.so")):
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(src, out)
            log = out / "build.log"
            with open(log, "w") as fh:
                res = subprocess.run(
                    [sys.executable, "setup.py", "build_ext", "--inplace"],
                    cwd=out,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            if res.returncode != 0:
                raise RuntimeError(f"building nms_1d_cpu failed: see {log}")
    return out


def python_path(root: Path) -> list[str]:
    return [str(REPO), str(CUDA_DOUBLE), str(nms_extension(root)), str(root)]


def environment(root: Path, **extra) -> dict:
    """Environment for subprocesses that run upstream code (torchrun, Snakemake, the CLIs)."""
    env = dict(os.environ, OPENTAD_ROOT=str(root), **extra)
    env["PYTHONPATH"] = os.pathsep.join(python_path(root) + [env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    # the venv's torchrun, and the test doubles of `apptainer` (tests/doubles/bin)
    env["PATH"] = os.pathsep.join([str(BIN_DOUBLES), str(Path(sys.executable).parent), env["PATH"]])
    return env


@contextlib.contextmanager
def importable(root: Path):
    """Upstream importable in this process (the CUDA-only extensions as their stand-ins)."""
    added = [p for p in python_path(root) if p not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            sys.path.remove(p)


def upstream_nms(root: Path):
    """Upstream's `opentad/models/utils/post_processing/nms/nms.py` (batched_nms, seg_voting) on
    its compiled `nms_1d_cpu`, loaded by path: the rest of the opentad package is not needed."""
    import importlib.util

    ext = str(nms_extension(root))
    if ext not in sys.path:
        sys.path.insert(0, ext)
    spec = importlib.util.spec_from_file_location("upstream_nms", root / NMS_SRC / "nms.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _InlineProcess:
    """multiprocessing.Process's interface, running its target in this process."""

    def __init__(self, target, args):
        self.target, self.args = target, args

    def start(self):
        self.target(*self.args)

    def join(self):
        pass


def upstream_map(root: Path):
    """Upstream's evaluator module (`opentad/evaluations/mAP.py`, its `mAP` class) importable in
    this process, its per-class worker processes run inline: one process, as the tests compare it
    and the benchmark times it."""
    import types

    with importable(root):
        from opentad.evaluations import mAP  # noqa: F401 (the package exports the class)
    module = sys.modules["opentad.evaluations.mAP"]
    module.mp = types.SimpleNamespace(
        Manager=lambda: types.SimpleNamespace(dict=dict), Process=_InlineProcess
    )
    return module


# --- tiny THUMOS-format data -------------------------------------------------------------------

FPS = 30.0
SIZE = (64, 48)  # width, height: the smoke overlay resizes to 36 then crops 32
# one colour per class, round the hue wheel, so every class has its own look
COLORS = [
    tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / len(THUMOS_CLASSES), 0.9, 0.9))
    for i in range(len(THUMOS_CLASSES))
]


def _video(path: Path, frames: int, segments: list[tuple[int, int, int]], rng) -> None:
    """An mp4 (OpenCV's mp4v, which decord reads): a textured background and, during each action
    segment, a class-coloured block sweeping across the frame."""
    import cv2
    import numpy as np

    w, h = SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
    background = (rng.random((h, w, 3)) * 80).astype(np.uint8)
    for f in range(frames):
        img = background.copy()
        for start, end, label in segments:
            if start <= f < end:
                x = int(4 + (w - 22) * (f - start) / (end - start))
                cv2.rectangle(img, (x, 10), (x + 16, 36), COLORS[label], -1)
        writer.write(img)
    writer.release()


def make_data(dest: Path, seed: int = 0, train: int = 4, test: int = 3) -> dict:
    """THUMOS-14 as OpenTAD reads it: subset "training" (THUMOS validation videos) and
    "validation" (THUMOS test videos); segments in seconds. Labels go round the 20 classes, so
    each is annotated somewhere, as in the real database (the detector predicts all 20)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    videos = dest / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    database, labelled = {}, []
    for i in range(train + test):
        subset, kind = ("training", "validation") if i < train else ("validation", "test")
        name = f"video_{kind}_{i:07d}"
        frames = int(rng.integers(320, 480))
        segments, t = [], int(rng.integers(10, 40))
        while True:
            length = int(rng.integers(30, 90))
            if t + length >= frames:
                break
            segments.append((t, t + length, len(labelled) % len(THUMOS_CLASSES)))
            labelled.append(segments[-1])
            t += length + int(rng.integers(20, 80))
        _video(videos / f"{name}.mp4", frames, segments, rng)
        database[name] = {
            "subset": subset,
            "duration": round(frames / FPS, 3),
            "frame": frames,
            "annotations": [
                {"segment": [round(s / FPS, 2), round(e / FPS, 2)], "label": THUMOS_CLASSES[c]}
                for s, e, c in segments
            ],
        }
    if len(labelled) < len(THUMOS_CLASSES):
        raise RuntimeError(f"only {len(labelled)} segments: not every class is annotated")
    annotation = dest / "thumos_14_anno.json"
    annotation.write_text(json.dumps({"database": database}, indent=1))
    class_map = dest / "category_idx.txt"
    class_map.write_text("\n".join(THUMOS_CLASSES) + "\n")
    return {"annotation": annotation, "class_map": class_map, "video_dir": videos}


def make_pretrained(path: Path, root: Path, base_config: Path = SMOKE, seed: int = 0) -> Path:
    """A VideoMAE checkpoint for the base config's ViT: random weights in the layout of upstream's
    `vit-small-p16_videomae-k400-pre_16x4x1_kinetics-400_my.pth` (an mmaction Recognizer3D:
    `backbone.*` without adapters, a Kinetics-400 `cls_head`), so mmengine's real load path runs."""
    import torch
    from mmengine.config import Config

    from tadsweep.backends.opentad.render import opentad_root_env

    with opentad_root_env(root):
        vit = Config.fromfile(str(base_config)).to_dict()["model"]["backbone"]["backbone"]
    vit = {k: v for k, v in vit.items() if k != "type"} | {"adapter_index": []}
    with importable(root):
        from opentad.models.backbones.vit_adapter import VisionTransformerAdapter

        torch.manual_seed(seed)
        model = VisionTransformerAdapter(**vit)
        model.init_weights()
    state = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    state["cls_head.fc_cls.weight"] = torch.randn(400, vit["embed_dims"]) * 0.02
    state["cls_head.fc_cls.bias"] = torch.zeros(400)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": {"note": "random weights, upstream key layout"}, "state_dict": state}, path)
    return path


def make_site(dest: Path, root: Path) -> dict:
    """Data and weights of a tiny site; paths as `paths.*` of a study config (absolute)."""
    site = make_data(dest / "thumos")
    site["pretrained"] = make_pretrained(dest / "pretrained" / "vit-tiny.pth", root)
    site["base_config"] = SMOKE
    return {k: Path(v) for k, v in site.items()}


# --- the user's study, shrunk ------------------------------------------------------------------


def smoke_study(site: dict, root: Path, image: Path, name: str = "smoke") -> dict:
    """config.yaml -- every phase, arm, variant, post-processing grid and ensemble as the user
    wrote them -- with only sizes shrunk: one seed; 60 epochs -> 3 and 120 -> 4, a cosine that is
    still longer than training where the user's is (100 -> 5), warmup 1; an evaluation window of 2
    epochs (in-training evaluation happens); and the tiny site."""
    import yaml

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["study"].update(name=name, seeds=[1])
    cfg["paths"] = {"opentad_root": str(root), **{k: str(v) for k, v in site.items()}}
    cfg["container"]["image"] = str(image)
    for variant in cfg["variants"]["schedule"].values():
        epochs = variant["epochs"]
        variant["epochs"] = 2 + round(epochs / 60)
        if "cosine_epochs" in variant:
            extra = round((variant["cosine_epochs"] - epochs) / 20)
            variant["cosine_epochs"] = variant["epochs"] + extra
        variant["warmup_epoch"] = 1
    cfg["model"]["eval_window"] = 2
    res = cfg["resources"]
    res["minutes_per_epoch"] = 0.05
    # the tiny training's process tree (jobstep, backend, torchrun, worker, 2 forked DataLoader
    # workers) sums to about 7 GB under jobacct_gather/linux, which counts shared pages per process
    res["train"] = {"gpus": 1, "cpus_per_gpu": 1, "mem_mb": 10000}
    res["detect"] = {"gpus": 1, "cpus_per_gpu": 1, "mem_mb": 4000, "runtime_min": 10}
    return cfg
