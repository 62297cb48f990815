"""params.json -> an mmengine config for OpenTAD's tools/train.py and tools/test.py: the base config
(upstream's AdaTAD config, or an overlay) as `_base_`, plus only what the run changes."""

import contextlib
import copy
import json
import keyword
import os
from pathlib import Path

from tadsweep import readers
from tadsweep.atomic import atomic_write_bytes
from tadsweep.detections.knobs import KNOBS
from tadsweep.errors import InputError
from tadsweep.plan.axes import AXES
from tadsweep.plan.axes.opentad import Base, backbone, get
from tadsweep.plan.runs import params_tious

BASE_CONFIG = "configs/adatad/thumos/e2e_thumos_videomae_s_768x1_160_adapter.py"
ENV_ROOT = "{{$OPENTAD_ROOT:}}"  # mmengine substitutes $OPENTAD_ROOT when loading
# post_processing.nms.<knob> and post_processing.<knob> (per window, inside the model): the
# knobs that declare those keys (tadsweep/detections/knobs.py)
NMS_KEYS = tuple(k.name for k in KNOBS.values() if k.opentad == f"nms.{k.name}")
DETECTOR_KEYS = tuple(k.name for k in KNOBS.values() if k.opentad == k.name)


@contextlib.contextmanager
def opentad_root_env(root: str):
    """$OPENTAD_ROOT set to `root` while a config loads (overlays name their base through it)."""
    old = os.environ.get("OPENTAD_ROOT")
    os.environ["OPENTAD_ROOT"] = str(root)
    try:
        yield
    finally:
        if old is None:
            del os.environ["OPENTAD_ROOT"]
        else:
            os.environ["OPENTAD_ROOT"] = old


def load_config(path, root, what: str = "config"):
    """An mmengine Config loaded with $OPENTAD_ROOT set to `root` (if any); failures: one line."""
    from mmengine.config import Config

    try:
        with opentad_root_env(root) if root else contextlib.nullcontext():
            return Config.fromfile(str(path), import_custom_modules=False)
    except Exception as e:  # mmengine raises many kinds; the first line is what matters
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"{path}: cannot load {what} ({first})") from None


def load_base(opentad_root: str, base_config: str = BASE_CONFIG, *, portable=False) -> Base:
    """Load the base config (relative to the checkout, or absolute). portable: name the base
    through $OPENTAD_ROOT in `_base_` (the reference configs), not through this checkout."""
    root = str(opentad_root)
    if not Path(root).is_absolute():
        raise InputError(f"OpenTAD root must be an absolute path, got {root!r}")
    relative = not Path(base_config).is_absolute()
    path = Path(root, base_config) if relative else Path(base_config)
    cfg = load_config(path, root, "base config").to_dict()
    try:
        depth = cfg["model"]["backbone"]["backbone"]["depth"]
        pipeline = cfg["dataset"]["train"]["pipeline"]
    except KeyError as e:
        raise InputError(f"{path}: base config has no {e.args[0]!r} where AdaTAD has it") from None
    include = f"{ENV_ROOT}/{base_config}" if portable and relative else str(path)
    return Base(include, int(depth), tuple(dict(step) for step in pipeline))


# Top-level entries in the order the rendered file lists them.
ORDER = ("custom_imports", "model", "optimizer", "scheduler", "workflow", "solver")
ORDER += ("post_processing", "evaluation", "dataset", "work_dir")


def overrides(params: dict, base: Base, *, work_dir=None, data: dict | None = None) -> dict:
    """The top-level config entries the rendered file sets (plain dicts and lists): each axis's
    own (its `for_opentad`, tadsweep/plan/axes), then what every run shares. mmengine replaces
    lists wholesale when it merges configs, so every list here is complete."""
    out: dict = {}
    backbone(out)
    for name, axis in AXES.items():
        axis.for_opentad(get(params, name, dict), out, params, base)
    depth = params.get("model", {}).get("depth", base.depth)
    if depth != base.depth:
        raise InputError(
            f"params: model.depth {depth}, but the base config's ViT has {base.depth} blocks"
        )
    if data and data.get("pretrain"):
        out["model"]["backbone"]["custom"] = dict(pretrain=str(data["pretrain"]))
    batch = get(params, "batch_size", int)
    if batch < 1:
        raise InputError("params: batch_size must be >= 1")
    out["solver"] = dict(
        train=dict(batch_size=batch), ema=get(params, "ema", bool), amp=get(params, "amp", bool)
    )
    pp = get(params, "postprocess_default", dict)
    nms = {key: v for key, v in pp.items() if key in NMS_KEYS and v is not None}  # in its order
    out["post_processing"] = dict(nms=nms)
    for key in DETECTOR_KEYS:
        value = pp.get(key)
        if value is None:  # upstream's own default, per window; a None there would crash it
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise InputError(f"params: postprocess_default.{key} must be a number or null")
        out["post_processing"][key] = value
    # evaluation.tious: the in-training evaluation's too
    out["evaluation"] = dict(tiou_thresholds=params_tious(params, "params"))
    if data:
        keys = {"ann_file": "annotation_path", "class_map": "class_map", "data_path": "data_path"}
        if paths := {k: str(data[v]) for k, v in keys.items() if data.get(v)}:
            for split in ("train", "val", "test"):
                out.setdefault("dataset", {}).setdefault(split, {}).update(paths)
        if data.get("annotation_path"):
            out["evaluation"]["ground_truth_filename"] = str(data["annotation_path"])
    if work_dir is not None:
        out["work_dir"] = str(work_dir)
    return {key: out[key] for key in (*ORDER, *sorted(set(out) - set(ORDER))) if key in out}


def _py(value, indent=0, col=0, tail=0) -> str:
    """Python source for plain data: dicts as dict(...) as in OpenTAD's configs, laid out the way
    `ruff format` would (inline when the line fits in 100 columns), so the files stay stable."""
    flat = _py_flat(value)
    if col + len(flat) + tail <= 100 or not isinstance(value, (dict, list)) or not value:
        return flat
    pad = " " * (indent + 4)
    if isinstance(value, list):
        items = [f"{pad}{_py(v, indent + 4, indent + 4, 1)},\n" for v in value]
        return "[\n" + "".join(items) + " " * indent + "]"
    named = all(_identifier(k) for k in value)
    items = []
    for k, v in value.items():
        key = f"{k}=" if named else f"{_py_flat(k)}: "
        items.append(f"{pad}{key}{_py(v, indent + 4, indent + 4 + len(key), 1)},\n")
    opening, closing = ("dict(", ")") if named else ("{", "}")
    return f"{opening}\n" + "".join(items) + " " * indent + closing


def _identifier(key) -> bool:
    return isinstance(key, str) and key.isidentifier() and not keyword.iskeyword(key)


def _py_flat(value) -> str:
    if isinstance(value, dict):
        if all(_identifier(k) for k in value):
            return "dict(" + ", ".join(f"{k}={_py_flat(v)}" for k, v in value.items()) + ")"
        return "{" + ", ".join(f"{_py_flat(k)}: {_py_flat(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_py_flat(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(_py_flat(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, str):
        return json.dumps(value)  # double quotes, as ruff format writes them
    if isinstance(value, (int, float, bool)) or value is None:
        return repr(value)
    raise TypeError(f"cannot render {type(value).__name__}")


def render_config(
    params: dict, base: Base, *, work_dir=None, data: dict | None = None, header=""
) -> str:
    """Config source text: `_base_` = the base config, then the run's entries."""
    entries = overrides(params, base, work_dir=work_dir, data=data)
    lines = [header.rstrip() + "\n" if header else ""]
    lines.append(f"_base_ = [{json.dumps(base.include)}]\n")
    for key, value in entries.items():
        lines.append(f"{key} = {_py(value, 0, len(key) + 3)}\n")
    return "\n".join(lines)


def write_config(params: dict, out, base: Base, **kwargs) -> None:
    run = params.get("run_id", "?")
    header = (
        f"# OpenTAD config for run {run} (seed {params.get('seed')}), rendered from params.json\n"
        "# by tadsweep.backends.opentad.render; the run's settings live in params.json: edit\n"
        "# that, not this."
    )
    atomic_write_bytes(out, render_config(params, base, header=header, **kwargs).encode())


# The user's two adapter+LoRA configurations and the upstream adapter-only control, as params.
_COMMON = {
    "lora": {"r": 16, "alpha": 32, "dropout": 0.1, "targets": ["qkv", "proj", "fc1", "fc2"]},
    "schedule": {
        "lr": 2e-4,
        "head_lr": 1e-4,
        "weight_decay": 0.05,
        "warmup_epoch": 5,
        "epochs": 60,
        "cosine_epochs": 100,
        "val_start_epoch": 40,
        "val_interval": 2,
        "checkpoint_interval": 2,
    },
    "augment": {"imgaug": "default", "randaugment": None},
    "structure": {"adapter_index": list(range(12)), "drop_path_rate": 0.1},
    "batch_size": 2,
    "ema": True,
    "amp": True,
    "postprocess_default": {
        "use_soft_nms": True,
        "sigma": 0.7,
        "max_seg_num": 2000,
        "multiclass": True,
        "voting_thresh": 0.7,
    },
    "tious": [0.3, 0.4, 0.5, 0.6, 0.7],  # upstream's THUMOS evaluation
    "model": {"depth": 12},
}


def reference_params(name: str) -> dict:
    params = copy.deepcopy(_COMMON)
    if name == "adatad_adapter_control":
        params["lora"]["r"] = 0
    elif name == "adatad_lora_v2":
        params["lora"].update(r=32, alpha=64, dropout=0.05)
        params["schedule"].update(
            lr=3e-4, warmup_epoch=10, epochs=120, cosine_epochs=120, val_start_epoch=100
        )
    elif name != "adatad_lora_v1":
        raise KeyError(name)
    return params


REFERENCE_CONFIGS = {
    "adatad_lora_v1": "v1: adapter + LoRA r16/a32/d0.1 on qkv,proj,fc1,fc2; lr 2e-4,\n"
    "#     warmup 5, 60 of 100 cosine epochs (upstream schedule)",
    "adatad_lora_v2": "v2: adapter + LoRA r32/a64/d0.05; lr 3e-4, warmup 10,\n"
    "#     120 epochs with the cosine over all 120, evaluation from epoch 100",
    "adatad_adapter_control": "control: upstream AdaTAD-S adapter only (no LoRA), upstream\n"
    "#     settings",
}


def reference_config_text(name: str, opentad_root: str) -> str:
    header = (
        f"# {REFERENCE_CONFIGS[name]}\n"
        "# Generated by `python -m tadsweep.backends.opentad render --reference DIR\n"
        "# --opentad-root R`; the workflow renders one such file per run from params.json.\n"
        "# Standalone use in an OpenTAD checkout:\n"
        "#   OPENTAD_ROOT=$PWD torchrun --nnodes=1 --nproc_per_node=1 --rdzv_backend=c10d \\\n"
        f"#     --rdzv_endpoint=localhost:0 tools/train.py /path/to/tadsweep/configs/{name}.py\n"
        "# (tadsweep must be importable for the LoRA backbone)."
    )
    base = load_base(opentad_root, portable=True)
    return render_config(reference_params(name), base, header=header)


def add_arguments(parser) -> None:
    """The `render` subcommand's arguments (python -m tadsweep.backends.opentad render)."""
    parser.add_argument("--params", help="params.json of the run")
    parser.add_argument("--opentad-root", required=True, help="absolute path of the checkout")
    parser.add_argument("--out", help="config.py to write")
    parser.add_argument(
        "--base-config", default=BASE_CONFIG, help="relative to the root, or absolute"
    )
    # dests: the keys of overrides()'s `data`
    parser.add_argument("--annotation", "--annotation-path", dest="annotation_path")
    parser.add_argument("--class-map")
    parser.add_argument("--video-dir", "--data-path", dest="data_path", help="folder of videos")
    parser.add_argument("--pretrained", "--pretrain", dest="pretrain", help="VideoMAE-S weights")
    parser.add_argument("--reference", metavar="DIR", help="write the three reference configs")


def command(args) -> int:
    if args.reference:
        for name in REFERENCE_CONFIGS:
            text = reference_config_text(name, args.opentad_root)
            atomic_write_bytes(Path(args.reference) / f"{name}.py", text.encode())
        return 0
    if not (args.params and args.out):
        raise InputError("render: --params and --out are required (or --reference DIR)")
    params = readers.read_json(args.params)
    data = {k: getattr(args, k) for k in ("annotation_path", "class_map", "data_path", "pretrain")}
    base = load_base(args.opentad_root, args.base_config)
    write_config(params, args.out, base, data=data)
    return 0
