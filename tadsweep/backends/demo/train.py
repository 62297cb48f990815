"""Resumable training of the demo detector, logging exactly like OpenTAD's tools/train.py. Each
epoch reseeds from (seed, epoch) and checkpoints carry optimizer, scheduler, EMA and RNG states, so
a resumed run ends bit-identical to an uninterrupted one."""

import json
import logging
import math
import random
import resource
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tadsweep.backends.demo import augment, data
from tadsweep.backends.demo.detect import candidate_limits, candidates, load_checkpoint
from tadsweep.backends.demo.io import derive_seed, setup_torch, torch_save, write_json
from tadsweep.backends.demo.loss import detection_loss
from tadsweep.backends.demo.model import (
    build_detector,
    load_trainable_state,
    param_groups,
    trainable_state,
)
from tadsweep.backends.demo.params import load_params, training_fingerprint
from tadsweep.errors import InputError
from tadsweep.plan.rundir import checkpoints

LOGGING_INTERVAL = 10  # iterations between log lines (plus the last iteration of each epoch)
# OpenTAD's ModelEma uses 0.999 over thousands of iterations; the demo has ~100-200, so it uses
# a shorter horizon with timm-style warmup, min(decay, (1+n)/(10+n)).
EMA_DECAY = 0.99
WARMUP_START_LR = 0.0  # OpenTAD LinearWarmupCosineAnnealingLR defaults
ETA_MIN = 1e-8
STOPPED = 128 + signal.SIGTERM  # the exit status of a stop on SIGTERM, as if the signal ended it
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def is_eval_epoch(epoch: int, schedule: dict) -> bool:
    """OpenTAD tools/train.py's rule for evaluating after 0-based `epoch`."""
    interval = int(schedule["val_interval"])
    return (
        epoch >= int(schedule["val_start_epoch"]) and interval > 0 and (epoch + 1) % interval == 0
    )


def is_checkpoint_epoch(epoch: int, schedule: dict) -> bool:
    """OpenTAD tools/train.py: every checkpoint_interval epochs, and always after the last one."""
    last = epoch == int(schedule["epochs"]) - 1
    return last or (epoch + 1) % int(schedule["checkpoint_interval"]) == 0


class WarmupCosine:
    """Closed form of OpenTAD's per-iteration LinearWarmupCosineAnnealingLR."""

    def __init__(self, optimizer, warmup: int, total: int):
        self.optimizer = optimizer
        self.warmup, self.total = warmup, total
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.step_count = 0
        self._apply()

    def lr_at(self, base: float, n: int) -> float:
        if n < self.warmup:
            return WARMUP_START_LR + n * (base - WARMUP_START_LR) / max(self.warmup - 1, 1)
        span = max(self.total - self.warmup, 1)
        return ETA_MIN + 0.5 * (base - ETA_MIN) * (1 + math.cos(math.pi * (n - self.warmup) / span))

    def _apply(self):
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = self.lr_at(base, self.step_count)

    def step(self):
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict):
        self.step_count = state["step_count"]
        self.base_lrs = list(state["base_lrs"])
        self._apply()


class Ema:
    """Exponential moving average of the trainable parameters (frozen ones never change)."""

    def __init__(self, model):
        self.shadow = trainable_state(model)
        self.updates = 0

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        decay = min(EMA_DECAY, (1 + self.updates) / (10 + self.updates))
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].mul_(decay).add_(p.detach(), alpha=1 - decay)

    def state_dict(self) -> dict:
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict):
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}
        self.updates = state["updates"]


def setup_logger(work_dir: Path) -> logging.Logger:
    """OpenTAD's setup_logger("Train", ...): stdout plus log.json, appended, same format."""
    logger = logging.getLogger("Train")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    formatter = logging.Formatter(LOG_FORMAT, "%Y-%m-%d %H:%M:%S")
    for handler in (
        logging.StreamHandler(stream=sys.stdout),
        logging.FileHandler(work_dir / "log.json", mode="a"),
    ):
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger


def latest_checkpoint(ckpt_dir: Path, epochs: int) -> Path | None:
    found = {e: path for e, path in checkpoints(ckpt_dir).items() if e < epochs}
    return found[max(found)] if found else None


def make_batches(ds, params, epoch: int):
    """The epoch's shuffled, augmented batches (drop_last, like OpenTAD's train loader)."""
    g = torch.Generator().manual_seed(derive_seed(params["seed"], epoch, 1))
    batch_size = int(params["batch_size"])
    order = torch.randperm(len(ds.train), generator=g).tolist()
    for i in range(len(order) // batch_size):
        feats, targets = [], []
        for idx in order[i * batch_size : (i + 1) * batch_size]:
            v = ds.train[idx]
            x, segs, labels = augment.apply(v.feats, v.segments, v.labels, params["augment"], g)
            feats.append(x)
            targets.append((segs, labels))
        yield torch.stack(feats), targets


def train_one_epoch(model, ds, params, optimizer, scheduler, ema, epoch, num_iters, logger):
    logger.info(f"[Train]: Epoch {epoch:d} started")
    torch.manual_seed(derive_seed(params["seed"], epoch, 2))  # drop-path and LoRA dropout
    model.train()
    sums: dict[str, float] = {}
    has_backbone_group = optimizer.param_groups[0]["tag"] == "backbone"
    for it, (x, targets) in enumerate(make_batches(ds, params, epoch)):
        optimizer.zero_grad()
        lrs = [g["lr"] for g in optimizer.param_groups]
        logits, dist = model(x)
        losses = detection_loss(logits, dist, targets)
        losses["cost"].backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(model)
        for key, value in losses.items():
            sums[key] = sums.get(key, 0.0) + value.item()
        if (it != 0 and it % LOGGING_INTERVAL == 0) or it + 1 == num_iters:
            avg = {k: v / (it + 1) for k, v in sums.items()}
            lr_block = f"lr_det={lrs[-1]:.1e}"
            if has_backbone_group:
                lr_block = f"lr_backbone={lrs[0]:.1e}  {lr_block}"
            # mem=: OpenTAD's max_memory_allocated in MB; Linux reports ru_maxrss in kilobytes
            mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            logger.info(
                f"[Train]: [{epoch:03d}][{it:05d}/{num_iters - 1:05d}]  "
                f"Loss={avg['cost']:.4f}  cls_loss={avg['cls_loss']:.4f}  "
                f"reg_loss={avg['reg_loss']:.4f}  {lr_block}  mem={mem:.0f}MB"
            )


def evaluate_model(model, ema, ds, gt, params, logger) -> dict:
    """OpenTAD's eval_one_epoch: EMA weights, default post-processing, mAP, logged."""
    from tadsweep.detections import evaluate, postprocess

    if ema is not None:
        current = trainable_state(model)
        load_trainable_state(model, ema.shadow)
    raw = candidates(model, ds.val, ds.classes, *candidate_limits(params))
    if ema is not None:
        load_trainable_state(model, current)
    # pre_nms_* already acted in candidates() (OpenTAD: per window, inside the model); the sweep's
    # per-video cut (video_*) is not part of OpenTAD's in-training evaluation.
    nms_keys = set(postprocess.PARAM_NAMES) - {"video_topk", "video_thresh"}
    post = {k: v for k, v in params["postprocess_default"].items() if k in nms_keys}
    setting = postprocess.NMSSetting.from_dict(post, source="params.postprocess_default")
    results = postprocess.apply(raw, setting)
    tious = params["tious"]  # evaluation.tious
    metrics = evaluate.evaluate(gt, results, tious=tious)
    logger.info("Evaluation starts...")
    logger.info("Loaded annotations from validation subset.")
    logger.info(f"Number of ground truth instances: {sum(len(v.labels) for v in ds.val)}")
    logger.info(f"Number of predictions: {len(results)}")
    logger.info(f"Fixed threshold for tiou score: {np.array(tious)}")
    logger.info(f"Average-mAP: {metrics['average_mAP'] * 100:>4.2f} (%)")
    for t in tious:
        logger.info(f"mAP at tIoU {t:.2f} is {metrics[f'mAP@{t}'] * 100:>4.2f}%")
    return metrics


def train(params_path, data_dir, backbone_path, work_dir, done_path) -> dict:
    """Train (or resume) one run; returns the done record (plus the last evaluation)."""
    start = time.time()
    params = load_params(params_path)
    sched = params["schedule"]
    epochs = int(sched["epochs"])
    seed = int(params["seed"])
    work_dir = Path(work_dir)
    (work_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
    for stale in (work_dir / "checkpoint").glob(".epoch_*.tmp"):
        stale.unlink()  # a checkpoint write cut short by a kill

    setup_torch(seed)
    ds = data.load(data_dir)
    pretrained = load_checkpoint(backbone_path)
    torch.manual_seed(derive_seed(seed, 0, 0))  # adapter and LoRA initialisation
    model = build_detector(pretrained, params, len(ds.classes))
    optimizer = torch.optim.AdamW(param_groups(model, sched))
    num_iters = len(ds.train) // int(params["batch_size"])
    if num_iters == 0:
        raise InputError(f"{params_path}: batch_size exceeds the {len(ds.train)} training videos")
    scheduler = WarmupCosine(
        optimizer, int(sched["warmup_epoch"]) * num_iters, int(sched["cosine_epochs"]) * num_iters
    )
    ema = Ema(model) if params.get("ema") else None
    fingerprint = training_fingerprint(params)
    gt = None

    logger = setup_logger(work_dir)
    try:
        logger.info(f"Using torch version: {torch.__version__}, CUDA version: None (demo backend)")
        logger.info(f"Config: \n{json.dumps(params, indent=4, sort_keys=True)}")
        if ema is not None:
            logger.info("Using Model EMA...")
        if params.get("amp"):
            logger.info("amp requested: ignored, the demo backend trains in float32 on CPU")
        resume_epoch, seconds_before = -1, 0.0
        ckpt_path = latest_checkpoint(work_dir / "checkpoint", epochs)
        if ckpt_path is not None:
            logger.info(f"Resume training from: {ckpt_path}")
            ckpt = load_checkpoint(ckpt_path)
            if ckpt.get("fingerprint") != fingerprint:
                raise InputError(
                    f"{ckpt_path}: trained with other parameters than {params_path}; "
                    f"delete {work_dir} to start over"
                )
            resume_epoch = int(ckpt["epoch"])
            logger.info(f"Resume epoch is {resume_epoch}")
            load_trainable_state(model, ckpt["state_dict"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            if ema is not None:
                ema.load_state_dict(ckpt["ema"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            np.random.set_state(ckpt["rng"]["numpy"])
            random.setstate(ckpt["rng"]["python"])
            seconds_before = float(ckpt.get("seconds", 0.0))
        n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info(f"Trainable parameters: {n_trainable}")
        logger.info("Training Starts...\n")

        last_metrics = None
        stop = []  # SIGTERM: SLURM's warning before the time limit, or preemption
        signal.signal(signal.SIGTERM, lambda num, _frame: stop.append(num))
        for epoch in range(resume_epoch + 1, epochs):
            train_one_epoch(model, ds, params, optimizer, scheduler, ema, epoch, num_iters, logger)
            if is_eval_epoch(epoch, sched):
                if gt is None:
                    from tadsweep.detections import evaluate

                    gt = evaluate.load_ground_truth(ds.annotation_path, subset="validation")
                last_metrics = evaluate_model(model, ema, ds, gt, params, logger)
            # Saved after the evaluation (OpenTAD saves before it), so that a run killed during
            # an evaluation repeats it on resume instead of leaving the log without it.
            if is_checkpoint_epoch(epoch, sched) or stop:
                torch_save(
                    {
                        "epoch": epoch,
                        "state_dict": trainable_state(model),
                        "ema": ema.state_dict() if ema is not None else None,
                        "state_dict_ema": dict(ema.shadow) if ema is not None else None,
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": {
                            "torch": torch.get_rng_state(),
                            "numpy": np.random.get_state(),
                            "python": random.getstate(),
                        },
                        "fingerprint": fingerprint,
                        "seconds": seconds_before + time.time() - start,
                    },
                    work_dir / "checkpoint" / f"epoch_{epoch}.pth",
                )
            if stop and epoch < epochs - 1:  # as OpenTAD runs do (backends/opentad/stop.py)
                logger.info(f"Stop requested (SIGTERM): saved epoch_{epoch}.pth, exiting\n")
                raise SystemExit(STOPPED)
        logger.info("Training Over...\n")
    finally:
        for handler in list(logger.handlers):
            handler.close()
            logger.removeHandler(handler)

    done = {
        "epochs": epochs,
        "final_epoch": epochs - 1,
        "seconds": round(seconds_before + time.time() - start, 3),
        "resumed_from": resume_epoch if resume_epoch >= 0 else None,
    }
    write_json(done, done_path)
    return dict(done, metrics=last_metrics)
