"""Measure AdaTAD VideoMAE-S + LoRA training on this machine, per LoRA variant of the study.

For the first machine with a GPU and the upstream stack, inside the container, from the
repository root (`make gpu-check` runs this; `--tiny` is the seconds-long CPU version):

    apptainer exec --nv containers/opentad.sif /usr/bin/python3 benchmarks/gpu_check.py

Each LoRA variant of the study (`variants.lora`) is put on the baseline run's settings, rendered by
the project's own renderer (tadsweep.backends.opentad.render) as a child of the base config, and
built by upstream's `build_detector`; optimizer, scheduler, DDP (one process), EMA and GradScaler
are set up as upstream's tools/train.py does, and the timed iterations are upstream's own
`train_one_epoch` on synthetic batches of the real input size (the base config's train pipeline: 768
frames at 160x160, the study's global batch). Printed and written as JSON (--out): iterations per
second, peak GPU memory, peak host memory (RSS) and the projected minutes per epoch -- the figures
`resources.minutes_per_epoch` and `resources.train.mem_mb` of the study config need.

Data loading: the baseline variant then trains --data-iters more iterations on upstream's real
train loader -- the rendered config's pipeline (decord decoding, 768 frames, augmentation) over
synthetic mp4 videos of THUMOS's size (320x180, 30 fps), with the DataLoader workers and decord
threads a job gets on this machine's CPUs (tadsweep.backends.opentad.run.loader_threads, written
into the launch config as a job's) -- and reports the share of each iteration spent waiting for
the next batch. Not measured: evaluation; minutes per epoch is training compute of one GPU holding
the whole global batch.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import hashlib
import json
import logging
import math
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the working tree's tadsweep
    sys.path.insert(0, str(ROOT))

from tadsweep import cli  # noqa: E402
from tadsweep.atomic import write_json  # noqa: E402
from tadsweep.errors import InputError  # noqa: E402

TINY_BASE = ROOT / "configs" / "smoke" / "adatad_tiny.py"
# THUMOS-14's validation set (200 videos) is what OpenTAD trains on (subset "training").
DEFAULT_TRAIN_VIDEOS = 200
MEM_MARGIN = 1.5  # on top of the measured peak RSS plus the data-loader allowance
PREFETCH_FACTOR = 2  # torch DataLoader default: batches each loader worker keeps ready
SEGMENTS_PER_WINDOW = 6  # THUMOS-14: about 15 actions per video, a 768-snippet window holds ~6
SYNTHETIC_VIDEO = (320, 180, 30.0)  # THUMOS-14's videos: width, height, fps
TINY_VIDEO = (64, 48, 30.0)  # tests/opentad_site.py's


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="benchmarks/gpu_check.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Projected minutes per epoch = iterations per epoch x seconds per iteration, where\n"
            "iterations per epoch = floor(training videos / global batch) (upstream's train\n"
            "loader drops the last partial batch) and training videos = the videos of subset\n"
            "'training' with an action in --annotation, else "
            f"{DEFAULT_TRAIN_VIDEOS}: THUMOS-14's validation set,\n"
            "which OpenTAD trains on."
        ),
    )
    ap.add_argument(
        "--config",
        default=str(ROOT / "config.yaml"),
        help="study config (default: this repository's config.yaml)",
    )
    ap.add_argument(
        "--opentad-root",
        default=os.environ.get("OPENTAD_ROOT"),
        help="OpenTAD checkout (default: $OPENTAD_ROOT)",
    )
    ap.add_argument(
        "--base-config",
        help="base config, relative to the checkout or absolute (default: the study's "
        "paths.base_config; with --tiny configs/smoke/adatad_tiny.py)",
    )
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="the smoke overlay (64 frames, 32x32 px, embed 32): runs on a CPU in seconds",
    )
    ap.add_argument("--iters", type=int, help="timed iterations per variant (default 30; tiny 4)")
    ap.add_argument("--warmup", type=int, help="untimed iterations first (default 5; tiny 1)")
    ap.add_argument("--variants", nargs="+", metavar="NAME", help="LoRA variants (default: all)")
    ap.add_argument("--device", help="cuda or cpu (default: cuda if available)")
    ap.add_argument(
        "--annotation",
        help="OpenTAD annotation JSON: count its training videos (default: "
        f"{DEFAULT_TRAIN_VIDEOS}, THUMOS-14's validation videos used for training)",
    )
    ap.add_argument(
        "--pretrained",
        help="VideoMAE checkpoint to load (default: the study's paths.pretrained if it exists; "
        "none with --tiny). Without one the backbone is random: same cost",
    )
    ap.add_argument("--seed", type=int, help="seed (default: the baseline run's)")
    ap.add_argument(
        "--data-iters",
        type=int,
        help="iterations on the real train loader, baseline variant (default 12; tiny 3; 0: none)",
    )
    ap.add_argument("--out", default="results/gpu_check.json", help="JSON to write (%(default)s)")
    args = ap.parse_args(argv)
    if args.iters is None:
        args.iters = 4 if args.tiny else 30
    if args.warmup is None:
        args.warmup = 1 if args.tiny else 5
    if args.data_iters is None:
        args.data_iters = 3 if args.tiny else 12
    if args.iters < 1 or args.warmup < 0 or args.data_iters not in (0, *range(2, 10**6)):
        ap.error("--iters must be >= 1, --warmup >= 0 and --data-iters 0 or >= 2")
    return args


# --- inputs ----------------------------------------------------------------------------------


def checkout(root: str | None) -> Path:
    if not root:
        raise InputError("no OpenTAD checkout: pass --opentad-root or set $OPENTAD_ROOT")
    path = Path(root).resolve()
    if not (path / "tools" / "train.py").is_file():
        raise InputError(f"--opentad-root {root}: not an OpenTAD checkout (no tools/train.py)")
    return path


def training_videos(annotation: str | Path) -> int:
    """Videos upstream's THUMOS train set keeps: subset "training", at least one action that is
    not "Ambiguous" (ThumosPaddingDataset drops videos without ground truth)."""
    try:
        database = json.loads(Path(annotation).read_text())["database"]
        count = 0
        for info in database.values():
            labels = [a["label"] for a in info.get("annotations", [])]
            if info["subset"] == "training" and any(x != "Ambiguous" for x in labels):
                count += 1
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{annotation}: not an OpenTAD annotation file ({e!r})") from None
    if count == 0:
        raise InputError(f"{annotation}: no annotated video in subset 'training'")
    return count


def iterations_per_epoch(videos: int, batch: int) -> int:
    """tools/train.py: DistributedSampler + DataLoader, both drop_last=True (one process)."""
    its = videos // batch
    if its < 1:
        raise InputError(f"{videos} training videos < global batch {batch}: an epoch is empty")
    return its


def study_variants(config: str, names: list[str] | None):
    """The baseline run's params and the LoRA variants (name -> spec) to measure."""
    from tadsweep.plan import runs
    from tadsweep.plan.config import load_study

    cfg, _ = load_study(config)
    base_id = runs.baseline_config_id(cfg)
    run = next(r for r in runs.expand(cfg) if r.config_id == base_id)
    params = runs.resolve_params(cfg, run, None)
    loras = cfg["variants"]["lora"]
    unknown = [n for n in names or [] if n not in loras]
    if unknown:
        raise InputError(
            f"{config}: variants.lora has no {unknown[0]!r} (it has: {', '.join(loras)})"
        )
    chosen = {n: loras[n] for n in (names or loras)}
    return cfg, params, chosen


def variant_params(params: dict, name: str, spec: dict) -> dict:
    """The baseline run with its LoRA block replaced (cost_factor is an estimate, not a knob)."""
    out = copy.deepcopy(params)
    out["variants"]["lora"] = name
    out["lora"] = {k: copy.deepcopy(spec[k]) for k in ("r", "alpha", "dropout", "targets")}
    out["run_id"] = f"gpu_check/lora={name}"
    return out


def site_file(cfg: dict, key: str, root: Path) -> Path | None:
    """A site path of the study that exists: relative ones inside the study's checkout
    (paths.opentad_root), else inside the one in use (the container's /opt/OpenTAD)."""
    value = Path(cfg["paths"][key])
    places = [value] if value.is_absolute() else [Path(cfg["paths"]["opentad_root"]), root]
    return next((p / value for p in places if (p / value).is_file()), None)


def input_geometry(cfg) -> dict:
    """What one training batch looks like, from the rendered config's train pipeline."""
    steps = list(cfg.dataset.train.pipeline)
    load = next((s for s in steps if s["type"] == "LoadFrames"), None)
    resize = [s for s in steps if s["type"] == "mmaction.Resize" and not s.get("keep_ratio", True)]
    if load is None or not load.get("trunc_len") or not resize:
        raise InputError(
            "base config: dataset.train.pipeline needs LoadFrames(trunc_len=...) and a final "
            "mmaction.Resize(keep_ratio=False), as AdaTAD's has"
        )
    width, height = resize[-1]["scale"]
    window = int(load["trunc_len"])
    return dict(
        batch=int(cfg.solver.train.batch_size),
        clips=int(load.get("num_clips", 1)),
        frames=window * int(load.get("scale_factor", 1)),
        window=window,
        height=int(height),
        width=int(width),
        num_classes=int(cfg.model.rpn_head.num_classes),
        num_workers=int(cfg.solver.train.get("num_workers", 0)),
    )


def input_shape(geom: dict) -> list[int]:
    # FormatShape NCTHW per video -> [clips, 3, T, H, W]; collate stacks the batch
    return [geom["batch"], geom["clips"], 3, geom["frames"], geom["height"], geom["width"]]


def synthetic_batch(geom: dict, seed: int, pin: bool) -> dict:
    """A collated batch as upstream's train loader yields it: float32 pixels in 0..255 (after
    ColorJitter), masks [B, window] bool, per video gt_segments [N, 2] float32 in feature-grid
    units and gt_labels [N] int32, metas dicts."""
    import torch

    g = torch.Generator().manual_seed(seed)
    inputs = torch.rand(input_shape(geom), generator=g).mul_(255.0)
    window, segments, labels, metas = geom["window"], [], [], []
    for i in range(geom["batch"]):
        n = SEGMENTS_PER_WINDOW
        start = torch.rand(n, generator=g) * window * 0.85
        length = (0.02 + torch.rand(n, generator=g) * 0.13) * window
        seg = torch.stack([start, (start + length).clamp(max=window - 1)], dim=1)
        segments.append(seg[seg[:, 0].argsort()].float())
        labels.append(torch.randint(0, geom["num_classes"], (n,), generator=g, dtype=torch.int32))
        metas.append(dict(video_name=f"synthetic_{i}", fps=30.0, snippet_stride=4, offset_frames=0))
    masks = torch.ones(geom["batch"], window, dtype=torch.bool)
    if pin:  # the train loader pins its batches (pin_memory=True)
        inputs, masks = inputs.pin_memory(), masks.pin_memory()
    return dict(inputs=inputs, masks=masks, metas=metas, gt_segments=segments, gt_labels=labels)


def synthetic_site(dest: Path, geom: dict, n_videos: int, size: tuple, sample_stride: int) -> dict:
    """mp4 videos (OpenCV's mp4v, which decord reads) long enough for one training window each,
    a moving texture with two actions, an OpenTAD annotation (subset "training") and class map;
    the `data` paths of render_config."""
    import cv2
    import numpy as np

    width, height, fps = size
    frames = int(geom["frames"] * sample_stride * 1.25) + 16
    rng = np.random.default_rng(0)
    texture = (rng.random((height, width * 2, 3)) * 200).astype(np.uint8)
    videos = dest / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    classes = [f"class_{c:02d}" for c in range(geom["num_classes"])]
    database = {}
    for v in range(n_videos):
        name = f"video_synthetic_{v:04d}"
        writer = cv2.VideoWriter(
            str(videos / f"{name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height)
        )
        for f in range(frames):
            x = (f * 2 + v * 7) % width
            writer.write(np.ascontiguousarray(texture[:, x : x + width]))
        writer.release()
        duration = frames / fps
        database[name] = dict(
            subset="training",
            duration=round(duration, 3),
            frame=frames,
            annotations=[
                dict(segment=[round(duration * a, 2), round(duration * b, 2)], label=classes[c])
                for a, b, c in ((0.2, 0.35, v % len(classes)), (0.6, 0.8, (v + 1) % len(classes)))
            ],
        )
    annotation = dest / "annotation.json"
    annotation.write_text(json.dumps({"database": database}))
    class_map = dest / "category_idx.txt"
    class_map.write_text("\n".join(classes) + "\n")
    return dict(annotation_path=annotation, class_map=class_map, data_path=videos)


class TimedLoader:
    """Upstream's real train loader, `n` batches, timing how long the training loop waits for
    each one (after the device has finished the previous iteration)."""

    def __init__(self, loader, n: int, sync):
        self.loader, self.n, self.sync = loader, n, sync
        self.stamps, self.waits = [], []

    def __len__(self):
        return self.n

    def __iter__(self):
        batches = iter(self.loader)
        for _ in range(self.n):
            self.sync()
            start = time.perf_counter()
            batch = next(batches)
            self.stamps.append(start)
            self.waits.append(time.perf_counter() - start)
            yield batch
        self.sync()
        self.stamps.append(time.perf_counter())


def loader_figures(fed: TimedLoader, launch_cfg, cpus: int) -> dict:
    """Data-wait share of the steady iterations (the first batch waits for the workers to
    start: reported apart), and what the launch config gave the loader."""
    steady = fed.stamps[-1] - fed.stamps[1]
    decord = [
        step["num_threads"]
        for step in launch_cfg.dataset.train.pipeline
        if step["type"] == "mmaction.DecordInit"
    ]
    return dict(
        cpus=cpus,
        num_workers=int(launch_cfg.solver.train.num_workers),
        decord_threads=decord,
        iterations=fed.n,
        first_batch_seconds=fed.waits[0],
        wait_seconds=fed.waits[1:],
        seconds_per_iteration=steady / (fed.n - 1),
        data_wait_share=sum(fed.waits[1:]) / steady,
    )


# --- measuring -------------------------------------------------------------------------------


class TimedBatches:
    """The train loader's stand-in: the same batch `n` times, stamping the clock (after the
    device has finished) each time the loop asks for the next one and when it is done."""

    def __init__(self, batch: dict, n: int, sync):
        self.batch, self.n, self.sync, self.stamps = batch, n, sync, []

    def __len__(self):
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            self.sync()
            self.stamps.append(time.perf_counter())
            yield self.batch
        self.sync()
        self.stamps.append(time.perf_counter())


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def quiet_logger(name: str) -> tuple[logging.Logger, _Lines]:
    """Upstream logs through a logger it is given; keep its lines, print none."""
    logger = logging.getLogger(f"gpu_check.{name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    lines = _Lines()
    logger.handlers[:] = [lines]
    return logger, lines


def reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets this process's peak RSS (VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mb(field: str = "VmHWM") -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # lifetime peak, KiB


def digest(named) -> str | None:
    """sha256 over names and exact values: equal digests mean unchanged weights."""
    named = list(named)
    if not named:
        return None
    h = hashlib.sha256()
    for name, p in named:
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy())
    return h.hexdigest()


def parameter_groups(model) -> dict[str, list]:
    """The detector's parameters by role, by name: LoRA, TIA adapters, the rest of the backbone
    (VideoMAE's weights, which must stay frozen) and the detector head."""
    from tadsweep.backends.opentad.lora import OPTIMIZER_NAME

    groups = {"lora": [], "adapter": [], "frozen_backbone": [], "head": []}
    for name, p in model.named_parameters():
        if not name.startswith("backbone."):
            groups["head"].append((name, p))
        elif OPTIMIZER_NAME in name:
            groups["lora"].append((name, p))
        elif "adapter" in name:
            groups["adapter"].append((name, p))
        else:
            groups["frozen_backbone"].append((name, p))
    return groups


def count(named) -> int:
    return sum(p.numel() for _, p in named)


def last_train_line(lines: list[str]) -> dict:
    out = {}
    for line in reversed(lines):
        if line.startswith("[Train]: ["):
            for key, pattern in (("loss", r"Loss=(\S+)"), ("logged_mem_mb", r"mem=(\d+)MB")):
                m = re.search(pattern, line)
                out[key] = float(m.group(1)) if m else None
            break
    return out


def measure(cfg, device, args, geom, its_per_epoch, seed, feed=None) -> dict:
    """Build the variant's detector as tools/train.py does and time train_one_epoch; with
    `feed` (the launch config and a function building upstream's train loader from it), go on
    training on real batches and time the waits for data."""
    import torch
    from opentad.cores import build_optimizer, build_scheduler, train_one_epoch
    from opentad.models import build_detector
    from opentad.utils import ModelEma, set_seed
    from torch.distributed.algorithms.ddp_comm_hooks import default as comm_hooks
    from torch.nn.parallel import DistributedDataParallel

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    rss_reset = reset_peak_rss()
    set_seed(seed)  # deterministic, as the study's jobs run (no --disable_deterministic)

    with contextlib.redirect_stdout(sys.stderr):  # upstream prints while building
        model = build_detector(cfg.model)
    static = getattr(cfg.solver, "static_graph", False)
    model = model.to(device)
    ddp_dev = dict(device_ids=[device.index], output_device=device.index) if cuda else {}
    model = DistributedDataParallel(
        model, find_unused_parameters=not static, static_graph=static, **ddp_dev
    )
    # fp16 gradient compression is an NCCL setting of the GPU jobs
    if cuda and getattr(cfg.solver, "fp16_compress", False):
        model.register_comm_hook(state=None, hook=comm_hooks.fp16_compress_hook)
    model_ema = ModelEma(model) if getattr(cfg.solver, "ema", False) else None
    amp = cuda and bool(getattr(cfg.solver, "amp", False))
    scaler = torch.cuda.amp.GradScaler() if amp else None
    opt_logger, _ = quiet_logger("optimizer")
    optimizer = build_optimizer(copy.deepcopy(cfg.optimizer), model, opt_logger)
    # the schedule of a real epoch, so the LR at iteration k is the run's
    scheduler, _ = build_scheduler(copy.deepcopy(cfg.scheduler), optimizer, its_per_epoch)

    batch = synthetic_batch(geom, seed, pin=cuda)
    logger, lines = quiet_logger("train")
    run = dict(
        model_ema=model_ema,
        clip_grad_l2norm=cfg.solver.clip_grad_norm,
        logging_interval=cfg.workflow.logging_interval,
        scaler=scaler,
    )
    if args.warmup:
        warm = TimedBatches(batch, args.warmup, sync)
        train_one_epoch(warm, model, optimizer, scheduler, 0, logger, **run)
    groups = parameter_groups(model.module)
    in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
    before = {k: digest(v) for k, v in groups.items()}
    timed = TimedBatches(batch, args.iters, sync)
    train_one_epoch(timed, model, optimizer, scheduler, 1, logger, **run)
    train_line = last_train_line(lines.lines)  # the timed epoch's
    data = None
    if feed is not None:
        launch_cfg, build_loader, cpus = feed
        fed = TimedLoader(build_loader(), args.data_iters, sync)
        train_one_epoch(fed, model, optimizer, scheduler, 2, logger, **run)
        data = loader_figures(fed, launch_cfg, cpus)
    peak_rss = rss_mb("VmHWM") if rss_reset else rss_mb("lifetime")
    gpu = {}
    if cuda:
        gpu = dict(
            peak_gpu_allocated_mb=torch.cuda.max_memory_allocated(device) / 2**20,
            peak_gpu_reserved_mb=torch.cuda.max_memory_reserved(device) / 2**20,
        )
    after = {k: digest(v) for k, v in groups.items()}

    steps = [b - a for a, b in zip(timed.stamps, timed.stamps[1:])]
    total = timed.stamps[-1] - timed.stamps[0]
    sec = total / args.iters
    backbone = cfg.model.backbone.backbone
    params = {k: count(v) for k, v in groups.items()}
    params["total"] = count(model.module.named_parameters())
    params["trainable"] = sum(p.numel() for p in model.module.parameters() if id(p) in in_opt)
    # what upstream's optimizer updates of each group (LoRA all of it, frozen weights none)
    for key in ("lora", "adapter", "frozen_backbone"):
        params[f"{key}_in_optimizer"] = sum(
            p.numel() for _, p in groups[key] if id(p) in in_opt and p.requires_grad
        )
    changed = {k: (None if before[k] is None else before[k] != after[k]) for k in before}
    result = dict(
        backbone=backbone.type,
        lora=dict(
            r=backbone.get("lora_r", 0),
            alpha=backbone.get("lora_alpha"),
            dropout=backbone.get("lora_dropout"),
            targets=list(backbone.get("lora_targets", [])),
        ),
        warmup=args.warmup,
        iterations=args.iters,
        timed_seconds=total,
        iteration_seconds=steps,
        seconds_per_iteration=sec,
        median_seconds_per_iteration=statistics.median(steps),
        iterations_per_second=1.0 / sec,
        minutes_per_epoch=its_per_epoch * sec / 60.0,
        peak_gpu_allocated_mb=gpu.get("peak_gpu_allocated_mb"),
        peak_gpu_reserved_mb=gpu.get("peak_gpu_reserved_mb"),
        peak_host_rss_mb=peak_rss,
        peak_host_rss_scope="this variant" if rss_reset else "process lifetime",
        parameters=params,
        weights=dict(
            frozen_backbone_unchanged=not changed["frozen_backbone"],
            lora_changed=changed["lora"],
            adapter_changed=changed["adapter"],
            head_changed=changed["head"],
            sha256={k: [before[k], after[k]] for k in before},
        ),
        data_loading=data,
        **train_line,
    )
    del model, model_ema, optimizer, scheduler, scaler, batch, groups
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


@contextlib.contextmanager
def process_group(device):
    """One-process DDP group, as torchrun gives a 1-GPU job (nccl on a GPU, gloo on a CPU)."""
    import torch.distributed as dist

    fd, store = tempfile.mkstemp(prefix="gpu_check_pg_")
    os.close(fd)
    os.unlink(store)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{store}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()
        with contextlib.suppress(OSError):
            os.unlink(store)


# --- report ----------------------------------------------------------------------------------


def suggest(report: dict, cfg: dict) -> dict:
    """Values for the study config: v1's projected minutes per epoch; mem_mb = margin x (peak RSS
    of the training process + an allowance for the data-loader workers of a job)."""
    geom, variants = report["input"], report["variants"]
    base = report["baseline_variant"]
    out = {}
    if base in variants:
        out["minutes_per_epoch"] = math.ceil(variants[base]["minutes_per_epoch"] * 100) / 100
        for v in variants.values():  # measured cost_factor
            v["relative_to_baseline"] = (
                v["seconds_per_iteration"] / variants[base]["seconds_per_iteration"]
            )
    from tadsweep.backends.opentad.run import loader_threads

    batch_mb = math.prod(input_shape(geom)) * 4 / 2**20  # float32 pixels
    # the workers a job of the study gets (per GPU process; this check's one holds the batch)
    workers = loader_threads(cfg["resources"]["train"]["cpus_per_gpu"], 1)[0]
    # each worker: a process (about this one after its imports) holding the batches it
    # prefetches plus the one it is decoding
    loader_mb = workers * (report["import_rss_mb"] + (PREFETCH_FACTOR + 1) * batch_mb)
    peak = max(v["peak_host_rss_mb"] for v in variants.values())
    out["mem_mb"] = int(math.ceil(MEM_MARGIN * (peak + loader_mb) / 1000.0) * 1000)
    out["mem_mb_basis"] = dict(
        peak_training_rss_mb=peak,
        loader_allowance_mb=loader_mb,
        loader_workers=workers,
        batch_mb=batch_mb,
        margin=MEM_MARGIN,
    )
    out["config_now"] = dict(
        minutes_per_epoch=cfg["resources"]["minutes_per_epoch"],
        mem_mb=cfg["resources"]["train"]["mem_mb"],
        gpus=cfg["resources"]["train"]["gpus"],
    )
    return out


def _f(value, fmt):
    return "-" if value is None else format(value, fmt)


def _gb(mb):
    return "-" if mb is None else f"{mb / 1024:.2f}GB"


def check_weights(variants: dict) -> list[str]:
    """What the timed steps must have done to the weights, as lines for the user."""
    out = []
    for name, v in variants.items():
        w = v["weights"]
        if not w["frozen_backbone_unchanged"]:
            out.append(f"{name}: the frozen VideoMAE weights changed during the timed iterations")
        if w["lora_changed"] is False:
            out.append(f"{name}: the LoRA weights did not change (skipped AMP steps? more --iters)")
        if w["adapter_changed"] is False:
            out.append(f"{name}: the adapter weights did not change")
    return out


def print_report(report: dict) -> None:
    variants, sug = report["variants"], report["suggested"]
    geom = report["input"]
    print()
    print(
        f"AdaTAD + LoRA training on {report['device_name']} ({report['device']}), "
        f"input {'x'.join(map(str, report['input_shape']))} (global batch {geom['batch']}), "
        f"AMP {'on' if report['amp'] else 'off'}"
    )
    if report["amp_note"]:
        print(f"  {report['amp_note']}")
    print(
        f"  {report['iterations']} timed iterations per variant after {report['warmup']} "
        f"warm-up; {report['iterations_per_epoch']} iterations per epoch "
        f"({report['train_videos']} training videos: {report['train_videos_source']})"
    )
    print(f"  backbone weights: {report['pretrained'] or 'random (no pretrained file): same cost'}")
    head = (
        f"{'variant':<8} {'r':>3} {'alpha':>5} {'LoRA params':>11} {'trainable':>10} "
        f"{'it/s':>7} {'s/it':>7} {'min/epoch':>9} {'GPU alloc':>9} {'GPU rsrv':>9} "
        f"{'host RSS':>9} {'vs base':>7} {'cost_factor':>11}"
    )
    print()
    print(head)
    print("-" * len(head))
    for name, v in variants.items():
        print(
            f"{name:<8} {v['lora']['r']:>3} {_f(v['lora']['alpha'], '>5g')} "
            f"{v['parameters']['lora']:>11,} {v['parameters']['trainable']:>10,} "
            f"{v['iterations_per_second']:>7.3f} {v['seconds_per_iteration']:>7.3f} "
            f"{v['minutes_per_epoch']:>9.3f} {_gb(v['peak_gpu_allocated_mb']):>9} "
            f"{_gb(v['peak_gpu_reserved_mb']):>9} {_gb(v['peak_host_rss_mb']):>9} "
            f"{_f(v.get('relative_to_baseline'), '>7.2f')} {_f(v['cost_factor_config'], '>11g')}"
        )
    print("  GPU alloc = torch's peak allocated (upstream logs it as mem=); GPU rsrv = its peak")
    print("  reserved (the CUDA context comes on top); host RSS = peak of the training process.")
    if report["device"] == "cpu":
        print("  On a CPU: no GPU memory figures; every figure is host RSS and CPU time.")
    print()
    basis = sug["mem_mb_basis"]
    base = report["baseline_variant"]
    print("Suggested config values (resources.*):")
    if "minutes_per_epoch" in sug:
        print(
            f"  minutes_per_epoch: {sug['minutes_per_epoch']}  # {base} (baseline.lora), training "
            f"compute only; data waits and evaluation are what runtime_margin covers "
            f"(now {sug['config_now']['minutes_per_epoch']})"
        )
    else:
        print(f"  minutes_per_epoch: not measured (the baseline variant {base} was not run)")
    print(
        f"  train: {{mem_mb: {sug['mem_mb']}}}  # margin {basis['margin']}x on peak RSS "
        f"{basis['peak_training_rss_mb']:.0f} MB + {basis['loader_allowance_mb']:.0f} MB for "
        f"{basis['loader_workers']} loader workers (process + {PREFETCH_FACTOR + 1} batches of "
        f"{basis['batch_mb']:.0f} MB each) (now {sug['config_now']['mem_mb']})"
    )
    if base in variants:
        factors = ", ".join(
            f"{n}: {v['relative_to_baseline']:.2f}" for n, v in variants.items() if n != base
        )
        if factors:
            print(f"  variants.lora.*.cost_factor measured: {factors}")
    if sug["config_now"]["gpus"] != 1:
        print(
            f"  note: resources.train.gpus is {sug['config_now']['gpus']}; these figures are for "
            "1 GPU holding the whole global batch"
        )
    data = report["data_loading"]
    if data:
        print(
            f"Data loading ({data['variant']}, real train loader on synthetic videos): "
            f"{100 * data['data_wait_share']:.0f}% of each iteration waiting for data "
            f"({data['seconds_per_iteration']:.3f} s/it over {data['iterations'] - 1} iterations; "
            f"first batch {data['first_batch_seconds']:.1f} s); {data['num_workers']} DataLoader "
            f"workers x {max(data['decord_threads'], default=0)} decord thread(s) for "
            f"{data['cpus']} CPUs"
        )
    else:
        print("Data loading: not measured (--data-iters 0)")
    for name, why in report["failed"].items():
        print(f"warning: {name} not measured: {why}")
    for line in check_weights(variants):
        print(f"warning: {line}")


def data_feed(config: Path, launch: Path, root: Path):
    """(launch config, a builder of upstream's train loader from it, the job's CPUs): the
    launch config is a job's (tadsweep.backends.opentad.run.write_launch_config, one GPU)."""
    from mmengine.config import Config
    from opentad.datasets import build_dataloader, build_dataset

    from tadsweep.backends.opentad.render import opentad_root_env
    from tadsweep.backends.opentad.run import job_cpus, write_launch_config

    with opentad_root_env(str(root)):
        cfg = Config.fromfile(str(config))
        cpus = job_cpus()
        write_launch_config(launch, config, launch.parent, cfg, gpus=1, cpus=cpus)
        launch_cfg = Config.fromfile(str(launch))

    def build_loader():
        logger, _ = quiet_logger("data")
        with contextlib.redirect_stdout(sys.stderr):
            dataset = build_dataset(launch_cfg.dataset.train, default_args=dict(logger=logger))
        train = dict(launch_cfg.solver.train)
        return build_dataloader(
            dataset, rank=0, world_size=1, shuffle=True, drop_last=True, **train
        )

    return launch_cfg, build_loader, cpus


def main(argv=None) -> int:
    args = parse_args(argv)
    root = checkout(args.opentad_root)
    cfg, baseline, chosen = study_variants(args.config, args.variants)
    if args.annotation:
        videos, source = training_videos(args.annotation), str(Path(args.annotation).resolve())
    else:
        videos = DEFAULT_TRAIN_VIDEOS
        source = "default: THUMOS-14's validation set, which OpenTAD trains on (no --annotation)"
    base_config = args.base_config or (str(TINY_BASE) if args.tiny else cfg["paths"]["base_config"])
    pretrained = args.pretrained
    if pretrained is None and not args.tiny:  # the study's VideoMAE-S weights fit only full size
        found = site_file(cfg, "pretrained", root)
        pretrained = str(found) if found else None
    if pretrained and not Path(pretrained).is_file():
        raise InputError(f"--pretrained {pretrained}: no such file")

    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is visible")
        device = torch.device("cuda", device.index or 0)
        torch.cuda.set_device(device)  # as tools/train.py, before the process group
    elif device.type != "cpu":
        raise InputError(f"--device {args.device}: use cuda or cpu")
    # as tools/train.py: the checkout's packages, then upstream's detector registry
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        import opentad.models  # noqa: F401

        import tadsweep.backends.opentad.lora  # noqa: F401  (registers VisionTransformerAdapterLoRA)
    except ImportError as e:
        raise InputError(
            f"cannot import OpenTAD from {root} ({e}); run inside containers/opentad.sif"
        ) from None
    from mmengine.config import Config

    from tadsweep.backends.opentad.render import load_base, opentad_root_env, render_config

    import_rss = rss_mb("VmRSS")
    base = load_base(str(root), base_config)
    seed = args.seed if args.seed is not None else int(baseline["seed"])
    report = dict(
        tool="benchmarks/gpu_check.py",
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        config=str(Path(args.config).resolve()),
        study=cfg["study"]["name"],
        opentad_root=str(root),
        base_config=base.include,
        tiny=args.tiny,
        pretrained=pretrained,
        device=str(device),
        device_name=(
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"CPU, {torch.get_num_threads()} threads ({platform.machine()})"
        ),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        seed=seed,
        deterministic=True,
        baseline_variant=cfg["baseline"]["lora"],
        baseline_run=baseline["run_id"],
        iterations=args.iters,
        warmup=args.warmup,
        train_videos=videos,
        train_videos_source=source,
        import_rss_mb=import_rss,
        data_loading=None,
        variant_names=list(chosen),  # config order (the JSON's keys are sorted)
        variants={},
        failed={},
    )
    fed_variant = (
        base_name if (base_name := cfg["baseline"]["lora"]) in chosen else next(iter(chosen))
    )
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp, process_group(device):
        site = {}
        for name, spec in chosen.items():
            params = variant_params(baseline, name, spec)
            data = {**site, **({"pretrain": pretrained} if pretrained else {})} or None
            path = Path(tmp, f"{name}.py")
            path.write_text(render_config(params, base, work_dir=Path(tmp, name), data=data))
            with opentad_root_env(str(root)):
                run_cfg = Config.fromfile(str(path))
            feed = None
            if name == fed_variant and args.data_iters:
                geom = input_geometry(run_cfg)
                size = TINY_VIDEO if args.tiny else SYNTHETIC_VIDEO
                stride = int(run_cfg.dataset.train.get("sample_stride", 1))
                n = geom["batch"] * args.data_iters
                print(f"{name}: {n} synthetic {size[0]}x{size[1]} videos ...", flush=True)
                site = synthetic_site(Path(tmp, "site"), geom, n, size, stride)
                data = {**site, **({"pretrain": pretrained} if pretrained else {})}
                path.write_text(render_config(params, base, work_dir=Path(tmp, name), data=data))
                feed = data_feed(path, Path(tmp, f"{name}.launch.py"), root)
                with opentad_root_env(str(root)):
                    run_cfg = Config.fromfile(str(path))
            if not pretrained:  # the base names upstream's file, relative to a checkout's cwd
                run_cfg.model.backbone.custom.pretrain = None
            geom = input_geometry(run_cfg)
            its = iterations_per_epoch(videos, geom["batch"])
            amp_cfg = bool(run_cfg.solver.get("amp", False))
            report.update(
                input=geom,
                input_shape=input_shape(geom),
                iterations_per_epoch=its,
                amp=amp_cfg and device.type == "cuda",
                amp_config=amp_cfg,
                amp_note=(
                    "AMP is off: the config asks for it, but fp16 autocast needs CUDA"
                    if amp_cfg and device.type != "cuda"
                    else ""
                ),
            )
            print(f"{name}: r={spec['r']}, {args.warmup} + {args.iters} iterations ...", flush=True)
            try:
                result = measure(run_cfg, device, args, geom, its, seed, feed)
            except torch.cuda.OutOfMemoryError as e:  # a finding too: the next variant may fit
                report["failed"][name] = f"out of GPU memory: {str(e).splitlines()[0]}"
                print(f"{name}: {report['failed'][name]}", flush=True)
                continue
            result["cost_factor_config"] = spec.get("cost_factor")
            if result["data_loading"]:
                report["data_loading"] = dict(variant=name, **result["data_loading"])
            report["variants"][name] = result
            print(
                f"{name}: {result['iterations_per_second']:.3f} it/s, "
                f"{result['minutes_per_epoch']:.2f} min/epoch",
                flush=True,
            )
    if not report["variants"]:
        write_json(report, args.out)
        print(f"error: no variant could be measured (see {args.out})", file=sys.stderr)
        return 1
    report["suggested"] = suggest(report, cfg)
    write_json(report, args.out)
    print_report(report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    cli.run(main)
