"""Shared parts of the OpenTAD test double (tools/train.py, tools/test.py in this folder).

TEST DOUBLE: no model, no data loading, no GPU. It reproduces what tadsweep depends on -- the
command lines, the work_dir layout (`<work_dir>/gpu{N}_id{id}/`), log.json lines in OpenTAD's
formats, checkpoint names and cadence, resume, `result_detection.json` -- with fake numbers that are
a deterministic function of the config, so that different configs give different curves.
"""

import hashlib
import json
import logging
import math
import os
import random
import shutil
import sys

from mmengine.config import Config, DictAction

TIOUS = [0.3, 0.4, 0.5, 0.6, 0.7]


def add_common_args(parser):
    parser.add_argument("config", metavar="FILE", type=str, help="path to config file")
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    parser.add_argument("--id", type=int, default=0, help="repeat experiment id")
    parser.add_argument("--not_eval", action="store_true", help="only inference")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override settings")


def load_config(args):
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def dist_env():
    # like upstream: only works when launched by torchrun
    return int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])


def setup_work_dir(cfg, exp_id, gpu_num):
    cfg.work_dir = os.path.join(cfg.work_dir, f"gpu{gpu_num}_id{exp_id}/")
    os.makedirs(os.path.expanduser(cfg.work_dir), mode=0o777, exist_ok=True)
    return cfg


def setup_logger(name, save_dir):
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    fmt = logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    for handler in (
        logging.StreamHandler(stream=sys.stdout),
        logging.FileHandler(os.path.join(save_dir, "log.json")),
    ):
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger


def log_header(logger, cfg):
    import torch

    logger.info(f"Using torch version: {torch.__version__}, CUDA version: {torch.version.cuda}")
    logger.info(f"Config: \n{cfg.pretty_text}")


def copy_config(path, work_dir):
    shutil.copy2(path, work_dir)


def fingerprint(cfg, seed):
    """A number in [0, 1) that changes with anything that would change training."""
    parts = {
        "backbone": cfg.model.backbone.backbone.to_dict(),
        "optimizer": cfg.optimizer.to_dict(),
        "scheduler": cfg.scheduler.to_dict(),
        "pipeline": [dict(p) for p in cfg.dataset.train.get("pipeline", [])],
        "end_epoch": cfg.workflow.end_epoch,
        "batch": cfg.solver.train.batch_size,
        "seed": seed,
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return int(digest[:12], 16) / 16**12


def quality(cfg, seed, epoch):
    """Fake detection quality (the average mAP the double reports) after 0-based `epoch`."""
    fp = fingerprint(cfg, seed)
    bb = cfg.model.backbone.backbone
    cap = 0.45 + 0.08 * fp + 0.002 * min(bb.get("lora_r", 0), 32)
    return cap * (1.0 - math.exp(-(epoch + 1) / 6.0))


def map_per_tiou(avg):
    spread = [1.3, 1.15, 1.0, 0.85, 0.7]  # mean 1.0 -> the mean of these is avg
    return [min(1.0, avg * s) for s in spread]


def log_evaluation(logger, num_gt, num_pred, avg):
    logger.info("Evaluation starts...")
    logger.info("Loaded annotations from {} subset.".format("validation"))
    logger.info(f"Number of ground truth instances: {num_gt}")
    logger.info(f"Number of predictions: {num_pred}")
    logger.info(f"Fixed threshold for tiou score: {TIOUS}")
    logger.info(f"Average-mAP: {avg * 100:>4.2f} (%)")
    for tiou, value in zip(TIOUS, map_per_tiou(avg)):
        logger.info(f"mAP at tIoU {tiou:.2f} is {value * 100:>4.2f}%")


def ground_truth(cfg):
    """(videos {name: (duration, [(s, e, label)])}, class names) from the test split's files."""
    test = cfg.dataset.test
    videos, classes = {}, []
    try:
        with open(test.class_map) as f:
            classes = [line.strip() for line in f if line.strip()]
        with open(test.ann_file) as f:
            database = json.load(f)["database"]
        for name, info in sorted(database.items()):
            if info.get("subset") == test.get("subset_name", "validation"):
                segs = [(a["segment"][0], a["segment"][1], a["label"]) for a in info["annotations"]]
                videos[name] = (float(info["duration"]), segs)
    except (OSError, KeyError, ValueError):
        pass
    if not videos:  # no data files: a small fixed set
        classes = classes or ["ClassA", "ClassB"]
        for i in range(3):
            videos[f"video_test_{i:07d}"] = (
                60.0,
                [(10.0 + i, 20.0 + i, classes[i % len(classes)])],
            )
    return videos, classes


def detections(cfg, seed, epoch, raw):
    """Fake `{"results": ...}` in OpenTAD's format; raw=True: every window's candidates (no NMS)."""
    q = quality(cfg, seed, epoch)
    rng = random.Random(f"{fingerprint(cfg, seed)}:{epoch}")
    videos, classes = ground_truth(cfg)
    results, total = {}, 0
    for name, (duration, segments) in videos.items():
        preds = []
        copies = 3 if raw else 1  # overlapping windows each propose the same action
        for s, e, label in segments:
            for _ in range(copies):
                jitter = (1.0 - q) * (e - s) * 0.5
                ps = max(0.0, s + rng.uniform(-jitter, jitter))
                pe = min(duration, max(ps + 0.1, e + rng.uniform(-jitter, jitter)))
                score = min(1.0, max(0.0, q + rng.uniform(-0.2, 0.2)))
                preds.append(
                    dict(segment=[round(ps, 2), round(pe, 2)], label=label, score=round(score, 4))
                )
        for _ in range(10 * copies):  # false positives
            ps = rng.uniform(0, max(0.0, duration - 1.0))
            pe = min(duration, ps + rng.uniform(0.5, 10.0))
            preds.append(
                dict(
                    segment=[round(ps, 2), round(pe, 2)],
                    label=rng.choice(classes),
                    score=round(rng.uniform(0.0, 0.5), 4),
                )
            )
        if not raw:
            preds.sort(key=lambda p: -p["score"])
            preds = preds[: int(cfg.post_processing.nms.get("max_seg_num", 100))]
        results[name] = preds
        total += len(preds)
    num_gt = sum(len(s) for _, s in videos.values())
    return dict(results=results), num_gt, total
