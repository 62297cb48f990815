"""Loaded by every Python process that has this folder on PYTHONPATH (tests only): in a torchrun
worker (LOCAL_RANK is set) it makes upstream OpenTAD's GPU-only tools run on the CPU."""

import os

if "LOCAL_RANK" in os.environ:
    import cuda_on_cpu

    cuda_on_cpu.install()
