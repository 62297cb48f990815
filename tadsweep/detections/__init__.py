"""Detections: their files (the workflow's .npz, OpenTAD's JSON at the edges), OpenTAD's mAP
evaluation and post-processing (soft-NMS, score voting) reproduced exactly, the post-processing
knobs (knobs.py, declared once), the sweep and ensembles.

The kernels are C++ (``_*.cpp`` here), compiled at install (setup.py: ``make setup`` or
``pip install -e .``) into this folder, one module per source."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def missing_kernels() -> list[str]:
    """The compiled modules not built for this Python (each ``_*.cpp`` source is one)."""
    names = sorted(p.stem for p in Path(__file__).parent.glob("_*.cpp"))
    return [n for n in names if importlib.util.find_spec(f"{__name__}.{n}") is None]


def n_threads() -> int:
    """Threads for the compiled kernels and the gzip writer: ``TADSWEEP_THREADS``, else the CPUs
    this process may use."""
    env = os.environ.get("TADSWEEP_THREADS", "").strip()
    if env:
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
