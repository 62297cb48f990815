"""TEST DOUBLE of OpenTAD's tools/train.py (same arguments, outputs and resume behaviour; fake
numbers, no model). Launch it with torchrun exactly like the real one. See _double.py.

Test hooks (environment): TADSWEEP_DOUBLE_CRASH_EPOCH=e -- die halfway through 0-based epoch e,
leaving a log line cut mid-write; TADSWEEP_DOUBLE_EPOCH_SECONDS=s -- sleep s per epoch.
"""

import argparse
import math
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _double as double  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description="Train a Temporal Action Detector (test double)")
    double.add_common_args(parser)
    parser.add_argument("--resume", type=str, default=None, help="resume from a checkpoint")
    parser.add_argument("--disable_deterministic", action="store_true")
    return parser.parse_args()


def lr_at(base, step, warmup, total, start=0.0, eta_min=1e-8):
    """LinearWarmupCosineAnnealingLR (stepped per iteration), closed form."""
    if step < warmup:
        return start + step * (base - start) / max(1, warmup - 1)
    return eta_min + 0.5 * (base - eta_min) * (
        1 + math.cos(math.pi * (step - warmup) / (total - warmup))
    )


def main():
    import torch
    from mmengine.registry import MODELS

    args = parse_args()
    cfg = double.load_config(args)
    local_rank, world_size, rank = double.dist_env()
    cfg = double.setup_work_dir(cfg, args.id, world_size)
    if rank != 0:
        return  # only rank 0 writes anything in OpenTAD
    double.copy_config(args.config, cfg.work_dir)
    logger = double.setup_logger("Train", cfg.work_dir)
    double.log_header(logger, cfg)

    batch = cfg.solver.train.batch_size
    assert batch % world_size == 0, (
        f"batch size {batch} should be divided by world size {world_size}"
    )
    backbone_type = cfg.model.backbone.backbone.type
    if backbone_type != "VisionTransformerAdapter" and MODELS.get(backbone_type) is None:
        raise KeyError(f"{backbone_type} is not in the mmengine::model registry")
    num_iters = max(1, 200 // batch)  # 200 training windows, drop_last
    logger.info(f"Using DDP with total {world_size} GPUS...")
    if cfg.solver.get("ema", False):
        logger.info("Using Model EMA...")
    if cfg.solver.get("amp", False):
        logger.info("Using Automatic Mixed Precision...")

    wf = cfg.workflow
    max_epoch = wf.get("end_epoch", cfg.scheduler.max_epoch)
    warmup = cfg.scheduler.warmup_epoch * num_iters
    total = cfg.scheduler.max_epoch * num_iters
    lr_bb = cfg.optimizer.backbone.custom[0].lr
    lr_det = cfg.optimizer.lr
    r = cfg.model.backbone.backbone.get("lora_r", 0)
    mem = 9000 + 40 * r + 100 * (batch // world_size)

    if args.resume is not None:
        logger.info(f"Resume training from: {args.resume}")
        checkpoint = torch.load(args.resume, map_location="cpu")
        resume_epoch = checkpoint["epoch"]
        logger.info(f"Resume epoch is {resume_epoch}")
    else:
        resume_epoch = -1

    crash_epoch = int(os.environ.get("TADSWEEP_DOUBLE_CRASH_EPOCH", "-1"))
    epoch_seconds = float(os.environ.get("TADSWEEP_DOUBLE_EPOCH_SECONDS", "0"))
    fp = double.fingerprint(cfg, args.seed)
    logger.info("Training Starts...\n")
    for epoch in range(resume_epoch + 1, max_epoch):
        logger.info(f"[Train]: Epoch {epoch:d} started")
        time.sleep(epoch_seconds)
        level = 0.3 + 0.9 * math.exp(-(epoch + 1) * (0.05 + 0.05 * fp))
        total_loss = 0.0
        for i in range(num_iters):
            total_loss += level * (1.02 - 0.04 * i / num_iters)
            step = epoch * num_iters + i
            if (i != 0 and i % wf.logging_interval == 0) or (i + 1) == num_iters:
                avg = total_loss / (i + 1)
                block1 = f"[Train]: [{epoch:03d}][{i:05d}/{num_iters - 1:05d}]"
                block2 = f"Loss={avg:.4f}"
                block3 = f"cls_loss={0.6 * avg:.4f}  reg_loss={0.4 * avg:.4f}"
                lr_now = lr_at(lr_bb, step, warmup, total), lr_at(lr_det, step, warmup, total)
                block4 = "lr_backbone={:.1e}  lr_det={:.1e}".format(*lr_now)
                block5 = f"mem={mem:.0f}MB"
                logger.info("  ".join([block1, block2, block3, block4, block5]))
                if epoch == crash_epoch:
                    for handler in logger.handlers:
                        handler.flush()
                    with open(os.path.join(cfg.work_dir, "log.json"), "a") as f:
                        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                        f.write(f"{stamp} Train INFO: [Train]: [{epoch:03d}]")
                    os._exit(1)

        if (epoch == max_epoch - 1) or ((epoch + 1) % wf.checkpoint_interval == 0):
            save_dir = os.path.join(cfg.work_dir, "checkpoint")
            os.makedirs(save_dir, exist_ok=True)
            state = {"w": torch.tensor([fp, float(epoch)])}
            states = {
                "epoch": epoch,
                "state_dict": state,
                "optimizer": {"state": {}, "param_groups": []},
                "scheduler": {"last_epoch": (epoch + 1) * num_iters},
            }
            if cfg.solver.get("ema", False):
                states["state_dict_ema"] = state
            torch.save(states, os.path.join(save_dir, f"epoch_{epoch}.pth"))

        if epoch >= wf.get("val_start_epoch", 0) and (
            wf.val_eval_interval > 0 and (epoch + 1) % wf.val_eval_interval == 0
        ):
            result, num_gt, num_pred = double.detections(cfg, args.seed, epoch, raw=False)
            if cfg.post_processing.get("save_dict", False):
                with open(os.path.join(cfg.work_dir, "result_detection.json"), "w") as out:
                    double.json.dump(result, out)
            if not args.not_eval:
                avg = double.quality(cfg, args.seed, epoch)
                double.log_evaluation(logger, num_gt, num_pred, avg)
    logger.info("Training Over...\n")


if __name__ == "__main__":
    main()
