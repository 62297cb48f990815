"""Test double of a CUDA GPU for upstream OpenTAD's unedited tools/train.py and tools/test.py.

Upstream hard-codes a GPU: nccl, torch.cuda.set_device, model.to(local_rank), DDP device_ids, CUDA
map_location, torch.cuda.device_count() in the work dir name. `install()` redirects exactly those
calls to the CPU, nothing else:

- dist.init_process_group("nccl") -> gloo
- torch.cuda.set_device -> no-op; torch.cuda.device_count() -> the world size (one "GPU" per
  process, as on the node torchrun was started on)
- Module.to(<int> | "cuda[:n]" | cuda device) -> cpu
- DistributedDataParallel(device_ids=..., output_device=...) -> without them (CPU modules)
- torch.load(map_location="cuda:n") -> cpu
- AMP: torch.cuda.amp.autocast/GradScaler already disable themselves without CUDA (with a
  warning); the shim silences nothing and enables nothing, so training runs in float32.

Upstream's image stack was pinned to numpy 1.23.5 (the container has it); this machine's numpy
is 2.x, so `install()` also restores the two numpy-1 behaviours that stack relies on:
- the aliases imgaug 0.4.0 uses (np.bool, np.complex, np.sctypes), removed in numpy 2;
- mmaction2's ColorJitter.adjust_hue adds a negative Python int to a uint8 array: numpy 1 widened
  the result, numpy 2 raises OverflowError. Same arithmetic, widened explicitly.
"""

from __future__ import annotations

import functools
import os

_installed = False


def _cpu(device):
    import torch

    if isinstance(device, int) or (isinstance(device, str) and device.startswith("cuda")):
        return torch.device("cpu")
    if isinstance(device, torch.device) and device.type == "cuda":
        return torch.device("cpu")
    return device


def _numpy_1_compat() -> None:
    import numpy as np

    for name, value in (("bool", bool), ("complex", complex)):
        if name not in np.__dict__:
            setattr(np, name, value)
    if "sctypes" not in np.__dict__:
        np.sctypes = {
            "int": [np.int8, np.int16, np.int32, np.int64],
            "uint": [np.uint8, np.uint16, np.uint32, np.uint64],
            "float": [np.float16, np.float32, np.float64, np.longdouble],
            "complex": [np.complex64, np.complex128, np.clongdouble],
            "others": [bool, object, bytes, str, np.void],
        }


def _mmaction_hue_compat() -> None:
    import cv2
    import numpy as np
    from mmaction.datasets.transforms import processing

    def adjust_hue(img, factor):
        img = np.clip(img, 0, 255).astype(np.uint8)
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        offset = int(factor * 255)
        hsv[..., 0] = (hsv[..., 0].astype(np.int64) + offset) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        return img.astype(np.float32)

    processing.ColorJitter.adjust_hue = staticmethod(adjust_hue)


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.cuda.set_device = lambda device: None
    torch.cuda.device_count = lambda: world

    init = dist.init_process_group

    @functools.wraps(init)
    def init_process_group(backend=None, *args, **kwargs):
        return init("gloo" if backend in (None, "nccl") else backend, *args, **kwargs)

    dist.init_process_group = init_process_group

    to = torch.nn.Module.to

    @functools.wraps(to)
    def module_to(self, *args, **kwargs):
        if args:
            args = (_cpu(args[0]), *args[1:])
        if "device" in kwargs:
            kwargs["device"] = _cpu(kwargs["device"])
        return to(self, *args, **kwargs)

    torch.nn.Module.to = module_to

    ddp_init = DistributedDataParallel.__init__

    @functools.wraps(ddp_init)
    def ddp(self, module, *args, **kwargs):
        kwargs.pop("device_ids", None)
        kwargs.pop("output_device", None)
        return ddp_init(self, module, *args, **kwargs)

    DistributedDataParallel.__init__ = ddp

    load = torch.load

    @functools.wraps(load)
    def torch_load(*args, **kwargs):
        if "map_location" in kwargs:
            kwargs["map_location"] = _cpu(kwargs["map_location"])
        return load(*args, **kwargs)

    torch.load = torch_load

    _numpy_1_compat()
    _mmaction_hue_compat()
