"""Atomic writers of the demo's file types (outputs appear only once complete), and seeding."""

import os
import random

import numpy as np
import torch

# the demo's writers, in one place
from tadsweep.atomic import atomic_path, atomic_write_bytes, write_json  # noqa: F401


def save_npy(array: np.ndarray, path: str | os.PathLike) -> None:
    # np.save appends ".npy" to a bare path name, so hand it an open file instead.
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def torch_save(obj, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def setup_torch(seed: int) -> None:
    """Seed every generator; one thread: trainings share few cores, and a fixed thread count
    keeps reductions in the same order from run to run."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (seed, epoch, ...), independent of PYTHONHASHSEED."""
    ss = np.random.SeedSequence([int(p) % 2**32 for p in parts])
    hi, lo = (int(x) for x in ss.generate_state(2))
    return (hi << 31) ^ lo
