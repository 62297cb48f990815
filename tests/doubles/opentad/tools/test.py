"""TEST DOUBLE of OpenTAD's tools/test.py (same arguments and outputs; fake detections derived from
the config and the checkpoint's epoch, no model). Launch it with torchrun. See _double.py.

Like upstream, its work_dir suffix uses torch.cuda.device_count() (gpu0_id0 on a CPU machine), not
the world size, and `post_processing.save_dict=True` writes result_detection.json; with
`post_processing.nms=None` that file holds every window's candidates.
"""

import argparse
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _double as double  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description="Test a Temporal Action Detector (test double)")
    double.add_common_args(parser)
    parser.add_argument("--checkpoint", type=str, default="none", help="the checkpoint path")
    return parser.parse_args()


def main():
    import torch

    args = parse_args()
    cfg = double.load_config(args)
    local_rank, world_size, rank = double.dist_env()
    cfg = double.setup_work_dir(cfg, args.id, torch.cuda.device_count())
    if rank != 0:
        return
    logger = double.setup_logger("Test", cfg.work_dir)
    double.log_header(logger, cfg)
    batch = cfg.solver.test.batch_size
    assert batch % world_size == 0, (
        f"batch size {batch} should be divided by world size {world_size}"
    )
    logger.info(f"Using DDP with total {world_size} GPUS...")

    if args.checkpoint != "none":
        checkpoint_path = args.checkpoint
    elif "test_epoch" in cfg.inference:
        checkpoint_path = os.path.join(
            cfg.work_dir, f"checkpoint/epoch_{cfg.inference.test_epoch}.pth"
        )
    else:
        checkpoint_path = os.path.join(cfg.work_dir, "checkpoint/best.pth")
    logger.info(f"Loading checkpoint from: {checkpoint_path}")
    checkpoint = torch.load(checkpoint_path, map_location="cpu")
    epoch = checkpoint["epoch"]
    logger.info(f"Checkpoint is epoch {epoch}.")
    if cfg.solver.get("ema", False):
        _ = checkpoint["state_dict_ema"]
        logger.info("Using Model EMA...")
    if cfg.solver.get("amp", False):
        logger.info("Using Automatic Mixed Precision...")

    logger.info("Testing Starts...\n")
    raw = cfg.post_processing.nms is None
    result, num_gt, num_pred = double.detections(cfg, args.seed, epoch, raw=raw)
    if cfg.post_processing.get("save_dict", False):
        with open(os.path.join(cfg.work_dir, "result_detection.json"), "w") as out:
            json.dump(result, out)
    if not args.not_eval:
        double.log_evaluation(logger, num_gt, num_pred, double.quality(cfg, args.seed, epoch))
    logger.info("Testing Over...\n")


if __name__ == "__main__":
    main()
