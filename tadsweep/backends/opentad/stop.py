"""Stop OpenTAD's tools/train.py at an epoch boundary, with that epoch's checkpoint, on SIGTERM or
the launcher's stop file: upstream resumes only from a whole epoch's checkpoint, saved every
checkpoint_interval epochs. The launch config imports it into each training process."""

import atexit
import inspect
import multiprocessing.util  # its exit handler registered now: atexit runs install()'s first
import os
import signal
import sys
import time
from pathlib import Path

WORK_ENV = "TADSWEEP_TRAIN_WORK"  # the run's work dir: checkpoint/ and the stop file
FINAL_ENV = "TADSWEEP_FINAL_EPOCH"
STOP_FILE = ".opentad/stop-requested"
STOPPED = 143  # 128 + SIGTERM, as a process the signal ended
WORKER_GRACE_S = 5.0  # torch waits as long (MP_STATUS_CHECK_INTERVAL) before it ends a worker


def requested(work: Path) -> bool:
    """SIGTERM is pending (the launcher starts torchrun with it blocked), or the stop file is
    there."""
    return signal.SIGTERM in signal.sigpending() or (work / STOP_FILE).exists()


def _agreed(flag: bool, model) -> bool:
    """Whether any rank asks to stop (the ranks must leave the loop at the same epoch)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    device = next(model.parameters()).device
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _stop(main, bound: dict, epoch: int, work: Path) -> None:
    """Save `epoch` (when one was trained) with upstream's save_checkpoint, then exit."""
    import torch.distributed as dist

    logger = bound["logger"]
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    if epoch >= 0 and rank == 0:
        # upstream's torch.save writes in place: save beside it, then rename (a kill mid-save
        # must not leave a truncated checkpoint where resume looks)
        tmp = work / ".opentad" / "stopping"
        tmp.mkdir(parents=True, exist_ok=True)
        args = (bound["model"], bound.get("model_ema"), bound["optimizer"], bound["scheduler"])
        main.save_checkpoint(*args, epoch, work_dir=str(tmp))
        (work / "checkpoint").mkdir(exist_ok=True)
        name = f"epoch_{epoch}.pth"
        os.replace(tmp / "checkpoint" / name, work / "checkpoint" / name)
    if distributed:
        dist.barrier()  # no rank exits before the checkpoint is complete
    saved = f"saved epoch_{epoch}.pth" if epoch >= 0 else "no epoch trained yet"
    logger.info(f"Stop requested (SIGTERM): {saved}, exiting to resume from it\n")
    sys.exit(STOPPED)


def end_hung_workers() -> None:
    """At exit, kill a daemon child (a DataLoader worker) still alive after WORKER_GRACE_S. It
    inherits the blocked SIGTERM, so the SIGTERM that torch and multiprocessing end it with stays
    pending, and multiprocessing's join at exit would wait for a hung one until the time limit."""
    deadline = time.monotonic() + WORKER_GRACE_S
    for child in multiprocessing.active_children():
        if child.daemon:
            child.join(max(deadline - time.monotonic(), 0.0))
            if child.is_alive():
                child.kill()


def install() -> bool:
    """In a process that runs upstream's tools/train.py as __main__ under the launcher: wrap
    its epoch loop. Anywhere else (config checks, tests) it does nothing."""
    main = sys.modules.get("__main__")
    work, final = os.environ.get(WORK_ENV), os.environ.get(FINAL_ENV, "")
    upstream = all(hasattr(main, f) for f in ("train_one_epoch", "save_checkpoint"))
    if not (work and final.isdigit() and upstream):
        return False
    work, final = Path(work), int(final)
    original = main.train_one_epoch
    signature = inspect.signature(original)

    def train_one_epoch(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        b = bound.arguments
        epoch = int(b["curr_epoch"])  # upstream train_engine.train_one_epoch's name
        if _agreed(requested(work), b["model"]):  # asked while evaluating the epoch before
            _stop(main, b, epoch - 1, work)
        out = original(*args, **kwargs)
        # the final epoch: train.py saves it itself
        if epoch < final and _agreed(requested(work), b["model"]):
            _stop(main, b, epoch, work)
        return out

    main.train_one_epoch = train_one_epoch
    atexit.register(end_hung_workers)
    return True


install()
