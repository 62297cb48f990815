"""Detections: their files, OpenTAD's mAP evaluation and post-processing reproduced exactly, the
post-processing knobs, the sweep and ensembles. The C++ kernels (``_*.cpp``, one module each) are
compiled at install (setup.py: ``make setup`` or ``pip install -e .``)."""

import importlib.util
import os
from pathlib import Path


def missing_kernels() -> list[str]:
    """The compiled modules not built for this Python (each ``_*.cpp`` source is one)."""
    names = sorted(p.stem for p in Path(__file__).parent.glob("_*.cpp"))
    return [n for n in names if importlib.util.find_spec(f"{__name__}.{n}") is None]


def n_threads() -> int:
    """Threads for the compiled kernels: ``TADSWEEP_THREADS``, else the CPUs this process may
    use."""
    env = os.environ.get("TADSWEEP_THREADS", "").strip()
    if env:
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
