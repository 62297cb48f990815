"""Measure AdaTAD VideoMAE-S + LoRA training per LoRA variant of the study, as a job trains it
(`make gpu-check`, docs/testing.md): minutes per epoch (floor(training videos / global batch) x
seconds per iteration, one GPU holding the global batch), peak memory and data-wait share."""

import argparse
import contextlib
import copy
import functools
import gc
import hashlib
import itertools
import json
import logging
import logging.handlers
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

from tadsweep import cli
from tadsweep.atomic import write_json
from tadsweep.errors import InputError, StepFailed

ROOT = Path(__file__).resolve().parents[2]
TINY_BASE = ROOT / "configs" / "smoke" / "adatad_tiny.py"
DEFAULT_TRAIN_VIDEOS = 200  # THUMOS-14's validation set: what OpenTAD trains on
MEM_MARGIN = 1.5  # on top of the measured peak RSS plus the data-loader allowance
PREFETCH_FACTOR = 2  # torch DataLoader default: batches each loader worker keeps ready
SEGMENTS_PER_WINDOW = 6  # THUMOS-14: about 15 actions per video, a 768-snippet window holds ~6
SYNTHETIC_VIDEO = (320, 180, 30.0)  # THUMOS-14's videos: width, height, fps
TINY_VIDEO = (64, 48, 30.0)  # tests/opentad_site.py's

# flag, type, default (a pair: without and with --tiny), help
OPTIONS = (
    ("--config", str, str(ROOT / "config.yaml"), "study config"),
    ("--opentad-root", str, None, "OpenTAD checkout (default: $OPENTAD_ROOT)"),
    ("--base-config", str, None, "base config, relative to the checkout or absolute (default: "
     "the study's paths.base_config; with --tiny configs/smoke/adatad_tiny.py)"),
    ("--iters", int, (30, 4), "timed iterations per variant"),
    ("--warmup", int, (5, 1), "untimed iterations first"),
    ("--data-iters", int, (12, 3), "iterations of the baseline variant on the real train "
     "loader (0: none)"),
    ("--device", str, None, "cpu, cuda or cuda:N (default: cuda if available)"),
    ("--annotation", str, None, "OpenTAD annotation JSON: count its training videos (default: "
     f"{DEFAULT_TRAIN_VIDEOS}, THUMOS-14's validation videos, which OpenTAD trains on)"),
    ("--pretrained", str, None, "VideoMAE checkpoint (default: the study's paths.pretrained if it "
     "exists; none with --tiny). Without one the backbone is random: same cost"),
    ("--seed", int, None, "seed (default: the baseline run's)"),
    ("--out", str, "results/gpu_check.json", "JSON to write"),
)  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tiny", action="store_true", help="the smoke overlay: seconds on a CPU")
    ap.add_argument("--variants", nargs="+", metavar="NAME", help="LoRA variants (default: all)")
    for flag, kind, default, text in OPTIONS:
        pair = isinstance(default, tuple)
        shown = f"{default[0]}; --tiny {default[1]}" if pair else default
        text += f" (default: {shown})" if shown is not None else ""
        ap.add_argument(flag, type=kind, default=None if pair else default, help=text)
    args = ap.parse_args(argv)
    for flag, _, default, _ in OPTIONS:
        key = flag[2:].replace("-", "_")
        if isinstance(default, tuple) and getattr(args, key) is None:
            setattr(args, key, default[args.tiny])
    if args.iters < 1 or args.warmup < 0 or args.data_iters not in (0, *range(2, 10**6)):
        raise InputError("--iters must be >= 1, --warmup >= 0 and --data-iters 0 or >= 2")
    return args


def checkout(root: str | None) -> Path:
    if not root:
        raise InputError("no OpenTAD checkout: pass --opentad-root or set $OPENTAD_ROOT")
    if not Path(root, "tools", "train.py").is_file():
        raise InputError(f"--opentad-root {root}: not an OpenTAD checkout (no tools/train.py)")
    return Path(root).resolve()


def training_videos(annotation) -> int:
    """Videos ThumosPaddingDataset keeps: subset "training" with a non-"Ambiguous" action."""
    from tadsweep.site.doctor.data import IGNORED_LABEL, read_annotation

    database, _ = read_annotation(annotation)
    try:
        count = sum(
            info["subset"] == "training"
            and any(a["label"] != IGNORED_LABEL for a in info.get("annotations", []))
            for info in database.values()
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{annotation}: not an OpenTAD annotation file ({e!r})") from None
    if count == 0:
        raise InputError(f"{annotation}: no annotated video in subset 'training'")
    return count


def iterations_per_epoch(videos: int, batch: int) -> int:
    """tools/train.py: DistributedSampler and DataLoader both drop the last partial batch."""
    if videos < batch:
        raise InputError(f"{videos} training videos < global batch {batch}: an epoch is empty")
    return videos // batch


def study_variants(config: str, names: list[str] | None):
    """The study, the baseline run's params and the LoRA variants (name -> spec) to measure."""
    from tadsweep.plan import runs
    from tadsweep.plan.config import load_study

    cfg, _ = load_study(config)
    base_id = runs.baseline_config_id(cfg)
    run = next(r for r in runs.expand(cfg) if r.config_id == base_id)
    loras = cfg["variants"]["lora"]
    unknown = [n for n in names or [] if n not in loras]
    if unknown:
        raise InputError(
            f"{config}: variants.lora has no {unknown[0]!r} (it has: {', '.join(loras)})"
        )
    return cfg, runs.resolve_params(cfg, run, None), {n: loras[n] for n in names or loras}


def variant_params(params: dict, name: str, spec: dict) -> dict:
    """The baseline run with its LoRA block replaced, as the study resolves a run's block."""
    from tadsweep.plan.axes import AXES

    out = copy.deepcopy(params)
    out["variants"]["lora"], out["run_id"] = name, f"gpu_check/lora={name}"
    out["lora"] = AXES["lora"].params(spec, None)
    return out


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
    window, (width, height), train = int(load["trunc_len"]), resize[-1]["scale"], cfg.solver.train
    geom = dict(batch=int(train.batch_size), num_workers=int(train.get("num_workers", 0)))
    geom.update(clips=int(load.get("num_clips", 1)), window=window, height=int(height))
    geom.update(frames=window * int(load.get("scale_factor", 1)), width=int(width))
    return dict(geom, num_classes=int(cfg.model.rpn_head.num_classes))


def input_shape(geom: dict) -> list[int]:
    # FormatShape NCTHW per video -> [clips, 3, T, H, W]; collate stacks the batch
    return [geom["batch"], geom["clips"], 3, geom["frames"], geom["height"], geom["width"]]


def synthetic_batch(geom: dict, seed: int, pin: bool) -> dict:
    """A collated batch as upstream's train loader yields it (segments in feature-grid units)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    window, n, batch = geom["window"], SEGMENTS_PER_WINDOW, geom["batch"]
    out = dict(inputs=torch.rand(input_shape(geom), generator=g).mul_(255.0), metas=[])
    out.update(masks=torch.ones(batch, window, dtype=torch.bool), gt_segments=[], gt_labels=[])
    for i in range(batch):
        start = torch.rand(n, generator=g) * window * 0.85
        length = (0.02 + torch.rand(n, generator=g) * 0.13) * window
        seg = torch.stack([start, (start + length).clamp(max=window - 1)], dim=1)
        out["gt_segments"].append(seg[seg[:, 0].argsort()].float())
        labels = torch.randint(0, geom["num_classes"], (n,), generator=g, dtype=torch.int32)
        out["gt_labels"].append(labels)
        meta = dict(video_name=f"synthetic_{i}", fps=30.0, snippet_stride=4, offset_frames=0)
        out["metas"].append(meta)
    if pin:  # the train loader pins its batches
        out["inputs"], out["masks"] = out["inputs"].pin_memory(), out["masks"].pin_memory()
    return out


def synthetic_site(dest: Path, geom: dict, n_videos: int, size: tuple, stride: int) -> dict:
    """mp4v videos (decord reads them) a window long with two actions each, their annotation and
    class map: render_config's `data`."""
    import cv2
    import numpy as np

    (width, height, fps), videos = size, dest / "videos"
    frames = int(geom["frames"] * stride * 1.25) + 16
    duration = frames / fps
    texture = (np.random.default_rng(0).random((height, width * 2, 3)) * 200).astype(np.uint8)
    videos.mkdir(parents=True, exist_ok=True)
    classes = [f"class_{c:02d}" for c in range(geom["num_classes"])]
    database = {}
    for v in range(n_videos):
        name = f"video_synthetic_{v:04d}"
        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
        writer = cv2.VideoWriter(str(videos / f"{name}.mp4"), fourcc, fps, (width, height))
        for f in range(frames):
            x = (f * 2 + v * 7) % width
            writer.write(np.ascontiguousarray(texture[:, x : x + width]))
        writer.release()
        actions = [(0.2, 0.35, v), (0.6, 0.8, v + 1)]
        segments = [[round(duration * a, 2), round(duration * b, 2)] for a, b, _ in actions]
        labels = [classes[c % len(classes)] for _, _, c in actions]
        database[name] = dict(subset="training", duration=round(duration, 3), frame=frames)
        database[name]["annotations"] = [dict(segment=s, label=c) for s, c in zip(segments, labels)]
    annotation, class_map = dest / "annotation.json", dest / "category_idx.txt"
    annotation.write_text(json.dumps({"database": database}))
    class_map.write_text("\n".join(classes) + "\n")
    return dict(annotation_path=annotation, class_map=class_map, data_path=videos)


class Timed:
    """`n` batches of `source` for train_one_epoch: the clock (device synced) at each request and
    at the end, and each wait for a batch."""

    def __init__(self, source, n: int, sync):
        self.source, self.n, self.sync, self.stamps, self.waits = source, n, sync, [], []

    def __len__(self):
        return self.n

    def __iter__(self):
        batches = iter(self.source)
        for _ in range(self.n):
            self.sync()
            self.stamps.append(time.perf_counter())
            batch = next(batches)
            self.waits.append(time.perf_counter() - self.stamps[-1])
            yield batch
        self.sync()
        self.stamps.append(time.perf_counter())


def quiet_logger(name: str):
    """Upstream logs through the logger it is given: keep its records, print none."""
    logger = logging.getLogger(f"gpu_check.{name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    records = logging.handlers.BufferingHandler(capacity=sys.maxsize)
    logger.handlers[:] = [records]
    return logger, records.buffer


def rss_mb(field: str = "VmHWM") -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # lifetime peak, KiB


def digest(named) -> str | None:
    """sha256 over names and exact values: equal digests mean unchanged weights."""
    if not named:
        return None
    h = hashlib.sha256()
    for name, p in named:
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy())
    return h.hexdigest()


def parameter_groups(model) -> dict[str, list]:
    """(name, parameter) pairs by role: LoRA, adapters, frozen VideoMAE weights, head."""
    from tadsweep.plan.axes.lora import OPTIMIZER_NAME

    groups = {"lora": [], "adapter": [], "frozen_backbone": [], "head": []}
    for name, p in model.named_parameters():
        if not name.startswith("backbone."):
            groups["head"].append((name, p))
        elif OPTIMIZER_NAME in name:
            groups["lora"].append((name, p))
        else:
            groups["adapter" if "adapter" in name else "frozen_backbone"].append((name, p))
    return groups


def last_train_line(records) -> dict:
    """Loss and mem= of upstream's last `[Train]: [e][i/n]` line (the timed epoch's)."""
    lines = (r.getMessage() for r in reversed(records))
    line = next((x for x in lines if x.startswith("[Train]: [")), "")
    loss, mem = re.search(r"Loss=(\S+)", line), re.search(r"mem=(\d+)MB", line)
    return dict(loss=loss and float(loss[1]), logged_mem_mb=mem and float(mem[1]))


def trainer(cfg, device, its_per_epoch: int, logger) -> dict:
    """train_one_epoch's arguments but the loader and the epoch, set up as tools/train.py does."""
    import torch
    from opentad.cores import build_optimizer, build_scheduler
    from opentad.models import build_detector
    from opentad.utils import ModelEma
    from torch.distributed.algorithms.ddp_comm_hooks import default as comm_hooks
    from torch.nn.parallel import DistributedDataParallel

    cuda, solver = device.type == "cuda", cfg.solver
    with contextlib.redirect_stdout(sys.stderr):  # upstream prints while building
        model = build_detector(cfg.model).to(device)
    static = getattr(solver, "static_graph", False)
    ddp_dev = dict(device_ids=[device.index], output_device=device.index) if cuda else {}
    model = DistributedDataParallel(
        model, find_unused_parameters=not static, static_graph=static, **ddp_dev
    )
    if cuda and getattr(solver, "fp16_compress", False):  # an NCCL setting
        model.register_comm_hook(state=None, hook=comm_hooks.fp16_compress_hook)
    optimizer = build_optimizer(copy.deepcopy(cfg.optimizer), model, quiet_logger("opt")[0])
    # the schedule of a real epoch, so the LR at iteration k is the run's
    scheduler, _ = build_scheduler(copy.deepcopy(cfg.scheduler), optimizer, its_per_epoch)
    run = dict(model=model, optimizer=optimizer, scheduler=scheduler, logger=logger)
    run.update(
        clip_grad_l2norm=solver.clip_grad_norm, logging_interval=cfg.workflow.logging_interval
    )
    run["model_ema"] = ModelEma(model) if getattr(solver, "ema", False) else None
    run["scaler"] = torch.cuda.amp.GradScaler() if cuda and getattr(solver, "amp", False) else None
    return run


def measure(cfg, device, args, geom, its_per_epoch, seed, feed=None) -> dict:
    """Time upstream's train_one_epoch on the variant; with `feed` (data_feed's) go on training on
    real batches, timing the waits."""
    import torch
    from opentad.cores import train_one_epoch
    from opentad.utils import set_seed

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    gc.collect()  # the previous variant's model, also after an OOM
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    rss_reset = False
    with contextlib.suppress(OSError):  # Linux: writing 5 resets this process's peak RSS (VmHWM)
        rss_reset = Path("/proc/self/clear_refs").write_text("5") == 1
    set_seed(seed)  # deterministic, as the study's jobs run
    logger, records = quiet_logger("train")
    run = trainer(cfg, device, its_per_epoch, logger)
    model, optimizer = run["model"].module, run["optimizer"]
    batch = itertools.repeat(synthetic_batch(geom, seed, pin=cuda))
    if args.warmup:
        train_one_epoch(Timed(batch, args.warmup, sync), curr_epoch=0, **run)
    groups = parameter_groups(model)
    in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
    before = {k: digest(v) for k, v in groups.items()}
    timed = Timed(batch, args.iters, sync)
    train_one_epoch(timed, curr_epoch=1, **run)
    train_line, data = last_train_line(records), None
    if feed is not None:
        launch_cfg, loader, cpus = feed
        fed = Timed(loader, args.data_iters, sync)
        train_one_epoch(fed, curr_epoch=2, **run)
        # the first batch waits for the workers to start: reported apart from the steady share
        steady, waits = fed.stamps[-1] - fed.stamps[1], fed.waits[1:]
        steps = launch_cfg.dataset.train.pipeline
        threads = [s["num_threads"] for s in steps if s["type"] == "mmaction.DecordInit"]
        data = dict(cpus=cpus, num_workers=int(launch_cfg.solver.train.num_workers))
        data.update(decord_threads=threads, iterations=fed.n, first_batch_seconds=fed.waits[0])
        data.update(wait_seconds=waits, seconds_per_iteration=steady / (fed.n - 1))
        data.update(data_wait_share=sum(waits) / steady)
    peak_rss = rss_mb("VmHWM" if rss_reset else "lifetime")
    gpu = (torch.cuda.max_memory_allocated, torch.cuda.max_memory_reserved) if cuda else ()
    gpu_mb = [f(device) / 2**20 for f in gpu] or [None, None]
    after = {k: digest(v) for k, v in groups.items()}

    steps = [b - a for a, b in zip(timed.stamps, timed.stamps[1:])]
    total = timed.stamps[-1] - timed.stamps[0]
    sec = total / args.iters
    params = {k: sum(p.numel() for _, p in v) for k, v in groups.items()}
    params["total"] = sum(p.numel() for p in model.parameters())
    params["trainable"] = sum(p.numel() for p in model.parameters() if id(p) in in_opt)
    # what upstream's optimizer updates of each group (LoRA all of it, frozen weights none)
    for key in ("lora", "adapter", "frozen_backbone"):
        in_group = [p for _, p in groups[key] if id(p) in in_opt and p.requires_grad]
        params[f"{key}_in_optimizer"] = sum(p.numel() for p in in_group)
    changed = {k: (None if before[k] is None else before[k] != after[k]) for k in before}
    backbone = cfg.model.backbone.backbone
    lora = {k: backbone.get(f"lora_{k}") for k in ("r", "alpha", "dropout", "targets")}
    lora.update(r=lora["r"] or 0, targets=list(lora["targets"] or []))
    weights = {f"{k}_changed": changed[k] for k in ("lora", "adapter", "head")}
    weights.update(frozen_backbone_unchanged=not changed["frozen_backbone"])
    weights["sha256"] = {k: [before[k], after[k]] for k in before}
    out = dict(backbone=backbone.type, lora=lora, parameters=params, weights=weights, **train_line)
    out.update(warmup=args.warmup, iterations=args.iters, timed_seconds=total)
    out.update(iteration_seconds=steps, median_seconds_per_iteration=statistics.median(steps))
    out.update(seconds_per_iteration=sec, iterations_per_second=1.0 / sec)
    out.update(minutes_per_epoch=its_per_epoch * sec / 60.0, data_loading=data)
    out.update(peak_gpu_allocated_mb=gpu_mb[0], peak_gpu_reserved_mb=gpu_mb[1])
    scope = "this variant" if rss_reset else "process lifetime"
    out.update(peak_host_rss_mb=peak_rss, peak_host_rss_scope=scope)
    return out


@contextlib.contextmanager
def process_group(device, store: Path):
    """One-process DDP group, as torchrun gives a 1-GPU job (nccl on a GPU, gloo on a CPU)."""
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{store}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def data_feed(config: Path, cfg, root: Path):
    """(launch config a one-GPU job writes, upstream's train loader from it, the job's CPUs)."""
    from opentad.datasets import build_dataloader, build_dataset

    from tadsweep.backends.opentad.render import load_config
    from tadsweep.backends.opentad.run import job_cpus, write_launch_config

    cpus, launch = job_cpus(), config.with_suffix(".launch.py")
    write_launch_config(launch, config, config.parent, cfg, gpus=1, cpus=cpus)
    launch_cfg = load_config(launch, root)

    with contextlib.redirect_stdout(sys.stderr):  # upstream prints while building
        logger = quiet_logger("data")[0]
        dataset = build_dataset(launch_cfg.dataset.train, default_args=dict(logger=logger))
    train = dict(launch_cfg.solver.train)
    loader = build_dataloader(dataset, rank=0, world_size=1, shuffle=True, drop_last=True, **train)
    return launch_cfg, loader, cpus


def suggest(report: dict, cfg: dict) -> dict:
    """Values for the study config; mem_mb = margin x (peak RSS + the loader workers' share)."""
    from tadsweep.backends.opentad.run import loader_threads

    variants, base, out = report["variants"], report["baseline_variant"], {}
    if base in variants:
        out["minutes_per_epoch"] = math.ceil(variants[base]["minutes_per_epoch"] * 100) / 100
        for v in variants.values():  # the measured cost_factor
            v["relative_to_baseline"] = (
                v["seconds_per_iteration"] / variants[base]["seconds_per_iteration"]
            )
    resources = cfg["resources"]
    batch_mb = math.prod(report["input_shape"]) * 4 / 2**20  # float32 pixels
    workers = loader_threads(resources["train"]["cpus_per_gpu"], 1)[0]
    # each worker: a process (about this one after its imports) holding the batches it prefetches
    # and the one it is decoding
    loader_mb = workers * (report["import_rss_mb"] + (PREFETCH_FACTOR + 1) * batch_mb)
    peak = max(v["peak_host_rss_mb"] for v in variants.values())
    out["mem_mb"] = int(math.ceil(MEM_MARGIN * (peak + loader_mb) / 1000.0) * 1000)
    basis = dict(peak_training_rss_mb=peak, loader_allowance_mb=loader_mb, batch_mb=batch_mb)
    out["mem_mb_basis"] = dict(basis, loader_workers=workers, margin=MEM_MARGIN)
    now = {k: resources["train"][k] for k in ("mem_mb", "gpus")}
    out["config_now"] = dict(now, minutes_per_epoch=resources["minutes_per_epoch"])
    return out


def print_report(report: dict) -> None:
    def _f(value, fmt):
        return "-" if value is None else format(value, fmt)

    def _gb(mb):
        return "-" if mb is None else f"{mb / 1024:.2f}GB"

    variants, sug, data = report["variants"], report["suggested"], report["data_loading"]
    base, basis, now = report["baseline_variant"], sug["mem_mb_basis"], sug["config_now"]
    head = (
        f"{'variant':<8} {'r':>3} {'alpha':>5} {'LoRA params':>11} {'trainable':>10} {'it/s':>7} "
        f"{'s/it':>7} {'min/epoch':>9} {'GPU alloc':>9} {'GPU rsrv':>9} {'host RSS':>9} "
        f"{'vs base':>7} {'cost_factor':>11}"
    )
    amp = f"AMP {'on' if report['amp'] else 'off'}"
    out = [
        f"\nAdaTAD + LoRA training on {report['device_name']} ({report['device']}), input "
        f"{'x'.join(map(str, report['input_shape']))} (global batch {report['input']['batch']}), "
        + (f"{amp}\n  {report['amp_note']}" if report["amp_note"] else amp),
        f"  {report['iterations']} timed iterations per variant after {report['warmup']} warm-up; "
        f"{report['iterations_per_epoch']} iterations per epoch ({report['train_videos']} "
        f"training videos: {report['train_videos_source']})",
        f"  backbone weights: {report['pretrained'] or 'random (no pretrained file): same cost'}",
        f"\n{head}\n{'-' * len(head)}",
        *(
            f"{n:<8} {v['lora']['r']:>3} {_f(v['lora']['alpha'], 'g'):>5} "
            f"{v['parameters']['lora']:>11,} {v['parameters']['trainable']:>10,} "
            f"{v['iterations_per_second']:>7.3f} {v['seconds_per_iteration']:>7.3f} "
            f"{v['minutes_per_epoch']:>9.3f} {_gb(v['peak_gpu_allocated_mb']):>9} "
            f"{_gb(v['peak_gpu_reserved_mb']):>9} {_gb(v['peak_host_rss_mb']):>9} "
            f"{_f(v.get('relative_to_baseline'), '.2f'):>7} {_f(v['cost_factor_config'], 'g'):>11}"
            for n, v in variants.items()
        ),
        "  GPU alloc = torch's peak allocated (upstream logs it as mem=); GPU rsrv = its peak\n"
        "  reserved (the CUDA context comes on top); host RSS = peak of the training process.",
    ]
    if report["device"] == "cpu":
        out.append("  On a CPU: no GPU memory figures; every figure is host RSS and CPU time.")
    out.append("\nSuggested config values (resources.*):")
    if "minutes_per_epoch" in sug:
        out.append(
            f"  minutes_per_epoch: {sug['minutes_per_epoch']}  # {base} (baseline.lora), training "
            "compute only; data waits and evaluation are what runtime_margin covers (now "
            f"{now['minutes_per_epoch']})"
        )
    else:
        out.append(f"  minutes_per_epoch: not measured (the baseline variant {base} was not run)")
    out.append(
        f"  train: {{mem_mb: {sug['mem_mb']}}}  # margin {basis['margin']}x on peak RSS "
        f"{basis['peak_training_rss_mb']:.0f} MB + {basis['loader_allowance_mb']:.0f} MB for "
        f"{basis['loader_workers']} loader workers (process + {PREFETCH_FACTOR + 1} batches of "
        f"{basis['batch_mb']:.0f} MB each) (now {now['mem_mb']})"
    )
    if base in variants and len(variants) > 1:
        factors = (
            f"{n}: {v['relative_to_baseline']:.2f}" for n, v in variants.items() if n != base
        )
        out.append(f"  variants.lora.*.cost_factor measured: {', '.join(factors)}")
    if now["gpus"] != 1:
        out.append(
            f"  note: resources.train.gpus is {now['gpus']}; these figures are for 1 GPU holding "
            "the whole global batch"
        )
    if data:
        out.append(
            f"Data loading ({data['variant']}, real train loader on synthetic videos): "
            f"{100 * data['data_wait_share']:.0f}% of each iteration waiting for data "
            f"({data['seconds_per_iteration']:.3f} s/it over {data['iterations'] - 1} iterations; "
            f"first batch {data['first_batch_seconds']:.1f} s); {data['num_workers']} DataLoader "
            f"workers x {max(data['decord_threads'], default=0)} decord thread(s) for "
            f"{data['cpus']} CPUs"
        )
    else:
        out.append("Data loading: not measured (--data-iters 0)")
    out += [f"warning: {name} not measured: {why}" for name, why in report["failed"].items()]
    for name, v in variants.items():  # what the timed steps did to the weights
        w, warn = v["weights"], f"warning: {name}: the"
        if not w["frozen_backbone_unchanged"]:
            out.append(f"{warn} frozen VideoMAE weights changed during the timed iterations")
        if w["lora_changed"] is False:
            out.append(f"{warn} LoRA weights did not change (skipped AMP steps? more --iters)")
        if w["adapter_changed"] is False:
            out.append(f"{warn} adapter weights did not change")
    print("\n".join(out))


def setup(root: Path, name: str | None):
    """The device (set before the process group, as tools/train.py), then upstream's registry."""
    import torch

    name = name or ("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise InputError(f"--device {name}: use cpu, cuda or cuda:N")
    device = torch.device("cuda:0" if name == "cuda" else name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: no CUDA device is visible")
        torch.cuda.set_device(device)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        import opentad.models  # noqa: F401

        import tadsweep.backends.opentad.lora  # noqa: F401
    except ImportError as e:
        raise InputError(f"cannot import OpenTAD from {root} ({e}); run inside the image") from None
    return torch, device


def main(argv=None) -> int:
    args = parse_args(argv)
    say = functools.partial(print, flush=True)  # progress lines show as they come
    root = checkout(args.opentad_root or os.environ.get("OPENTAD_ROOT"))
    cfg, baseline, chosen = study_variants(args.config, args.variants)
    if args.annotation:
        videos, source = training_videos(args.annotation), str(Path(args.annotation).resolve())
    else:
        videos = DEFAULT_TRAIN_VIDEOS
        source = "default: THUMOS-14's validation set, which OpenTAD trains on (no --annotation)"
    pretrained = args.pretrained
    if pretrained is None and not args.tiny:  # the study's VideoMAE-S weights fit only full size
        from tadsweep.site.paths import site_path

        # inside the study's checkout (paths.opentad_root), else the one in use (the image's)
        places = (site_path(cfg, "pretrained"), str(root / cfg["paths"]["pretrained"]))
        pretrained = next((p for p in places if Path(p).is_file()), None)
    if pretrained and not Path(pretrained).is_file():
        raise InputError(f"--pretrained {pretrained}: no such file")
    torch, device = setup(root, args.device)
    from tadsweep.backends.opentad.render import load_base, load_config, write_config

    import_rss, cuda = rss_mb("VmRSS"), device.type == "cuda"
    base = load_base(
        str(root), args.base_config or str(TINY_BASE if args.tiny else cfg["paths"]["base_config"])
    )
    fed = cfg["baseline"]["lora"] if cfg["baseline"]["lora"] in chosen else next(iter(chosen))
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    cpu = f"CPU, {torch.get_num_threads()} threads ({platform.machine()})"
    report = dict(tool="tadsweep.site.gpu_check", created=created, study=cfg["study"]["name"])
    report.update(config=str(Path(args.config).resolve()), opentad_root=str(root))
    report.update(base_config=base.include, pretrained=pretrained, tiny=args.tiny)
    report.update(device=str(device), device_name=torch.cuda.get_device_name() if cuda else cpu)
    report.update(torch=torch.__version__, cuda=torch.version.cuda, deterministic=True)
    report.update(seed=args.seed if args.seed is not None else int(baseline["seed"]))
    report.update(baseline_variant=cfg["baseline"]["lora"], baseline_run=baseline["run_id"])
    report.update(iterations=args.iters, warmup=args.warmup, import_rss_mb=import_rss)
    report.update(train_videos=videos, train_videos_source=source, data_loading=None)
    # config order (the JSON's keys are sorted)
    report.update(variant_names=list(chosen), variants={}, failed={})
    with (
        tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp,
        process_group(device, Path(tmp, "process_group")),
    ):

        def render(name: str, data: dict):
            """The variant's config.py, as a job's; loaded as tools/train.py loads it."""
            path, params = Path(tmp, f"{name}.py"), variant_params(baseline, name, chosen[name])
            data = {**data, **({"pretrain": pretrained} if pretrained else {})}
            write_config(params, path, base, work_dir=Path(tmp, name), data=data or None)
            return path, load_config(path, root)

        first = render(fed, {})[1]
        geom = input_geometry(first)  # LoRA changes no input: the same for every variant
        its, amp = iterations_per_epoch(videos, geom["batch"]), bool(first.solver.get("amp"))
        note = "AMP is off: the config asks for it, but fp16 autocast needs CUDA"
        report.update(amp=amp and cuda, amp_config=amp, amp_note=note if amp and not cuda else "")
        report.update(input=geom, input_shape=input_shape(geom), iterations_per_epoch=its)
        site = {}
        if args.data_iters:
            n, size = geom["batch"] * args.data_iters, TINY_VIDEO if args.tiny else SYNTHETIC_VIDEO
            say(f"{fed}: {n} synthetic {size[0]}x{size[1]} videos ...")
            stride = int(first.dataset.train.get("sample_stride", 1))
            site = synthetic_site(Path(tmp, "site"), geom, n, size, stride)
        for name, spec in chosen.items():
            path, run_cfg = render(name, site)
            feed = data_feed(path, run_cfg, root) if name == fed and args.data_iters else None
            if not pretrained:  # the base names upstream's file, relative to its checkout
                run_cfg.model.backbone.custom.pretrain = None
            say(f"{name}: r={spec['r']}, {args.warmup} + {args.iters} iterations ...")
            try:
                result = measure(run_cfg, device, args, geom, its, report["seed"], feed)
            except torch.cuda.OutOfMemoryError as e:  # a finding too: the next one may fit
                report["failed"][name] = f"out of GPU memory: {str(e).splitlines()[0]}"
                say(f"{name}: {report['failed'][name]}")
                continue
            result["cost_factor_config"] = spec.get("cost_factor")
            if result["data_loading"]:
                report["data_loading"] = dict(variant=name, **result["data_loading"])
            report["variants"][name] = result
            speed, minutes = result["iterations_per_second"], result["minutes_per_epoch"]
            say(f"{name}: {speed:.3f} it/s, {minutes:.2f} min/epoch")
    if not report["variants"]:
        write_json(report, args.out)
        raise StepFailed(f"no variant could be measured (see {args.out})")
    report["suggested"] = suggest(report, cfg)
    write_json(report, args.out)
    print_report(report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    cli.run(main)
