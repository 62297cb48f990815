"""Read a run's params.json (schema in the contract) and check what the demo backend uses."""

import copy
import hashlib
import json
from pathlib import Path

from tadsweep import readers
from tadsweep.backends.demo import augment
from tadsweep.errors import InputError
from tadsweep.plan.axes import AXES, training_keys
from tadsweep.plan.runs import params_tious

# Schedule keys that do not change the weights: a checkpoint stays valid if only they change
# (e.g. training further by raising `epochs`, as OpenTAD's workflow.end_epoch allows).
NON_TRAINING_SCHEDULE = ("epochs", "val_start_epoch", "val_interval", "checkpoint_interval")

REQUIRED = {
    "seed": (),
    "lora": ("r", "alpha", "dropout", "targets"),
    "schedule": ("lr", "head_lr", "warmup_epoch", "cosine_epochs", *NON_TRAINING_SCHEDULE),
    "augment": ("imgaug",),
    "structure": ("adapter_index", "drop_path_rate"),
    "batch_size": (),
    "postprocess_default": ("pre_nms_topk", "pre_nms_thresh"),
}


def load_params(path: str | Path) -> dict:
    path = Path(path)
    params = readers.read_json(path)
    if not isinstance(params, dict):
        raise InputError(f"{path}: not a params.json (expected a JSON object)")
    for key, subkeys in REQUIRED.items():
        if key not in params:
            raise InputError(f"{path}: missing key '{key}'")
        for sub in subkeys:
            if sub not in params[key]:
                raise InputError(f"{path}: missing key '{key}.{sub}'")
    sched = params["schedule"]
    if int(sched["epochs"]) < 1 or int(sched["checkpoint_interval"]) < 1:
        raise InputError(f"{path}: schedule.epochs and schedule.checkpoint_interval must be >= 1")
    params_tious(params, str(path))
    if int(params["batch_size"]) < 1:
        raise InputError(f"{path}: batch_size must be >= 1")
    try:
        augment.check(params["augment"])
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
    return settings(params)


def settings(params: dict) -> dict:
    """What the demo trains with: params.json with each axis's demo mapper applied (the built-in
    axes' blocks are read as they are; an added axis says what it changes, tadsweep/plan/axes)."""
    out = copy.deepcopy(params)
    for name, axis in AXES.items():
        if name not in params:
            raise InputError(f"params: missing key '{name}'")
        axis.for_demo(params[name], out)
    return out


def training_fingerprint(params: dict) -> str:
    """Hash of everything that determines the trained weights (seed included)."""
    relevant = {k: params.get(k) for k in training_keys() if k != "amp"}  # amp: ignored here
    relevant["schedule"] = {
        k: v for k, v in params["schedule"].items() if k not in NON_TRAINING_SCHEDULE
    }
    text = json.dumps(relevant, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
