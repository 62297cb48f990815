"""The pretrained checkpoint, loaded the way upstream loads it (mmengine's `_load_checkpoint`, the
`state_dict` entry, the `module.` prefix stripped), against the keys, shapes and dtypes of the
backbone upstream builds from the config (`model.backbone`: mmaction's Recognizer3D around
OpenTAD's VisionTransformerAdapter, on the CPU, without OpenTAD's CUDA extensions)."""

import copy
import hashlib
import importlib.util
import re
import sys
from collections import Counter
from pathlib import Path

from tadsweep.errors import InputError
from tadsweep.site.doctor import Finding, finding

VIT = "opentad/models/backbones/vit_adapter.py"
NEW_MODULES = ("adapter",)  # trained from scratch by design: missing from any VideoMAE checkpoint
HEAD = "cls_head."  # Kinetics-400 classifier: in the checkpoint, not in the backbone


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict(path) -> dict:
    """The tensors upstream's BackboneWrapper hands to the model (mmengine's loader)."""
    from mmengine.runner.checkpoint import _load_checkpoint

    try:
        ckpt = _load_checkpoint(str(path), map_location="cpu")
    except Exception as exc:  # a truncated or foreign file: pickle, zip and torch errors
        raise InputError(
            f"{path}: cannot load the checkpoint ({' '.join(str(exc).split())[:160]})"
        ) from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{path}: holds no state_dict")
    return {re.sub(r"^module\.", "", k): v for k, v in state.items() if k != "_metadata"}


def backbone_state(cfg: dict, opentad_root) -> dict:
    """Key -> tensor of the backbone upstream builds (LoRA plugins reduced to upstream's ViT,
    whose keys their load hook maps onto)."""
    from mmengine.registry import MODELS

    model = copy.deepcopy(cfg["model"]["backbone"])
    model.pop("custom", None)
    vit = {k: v for k, v in model["backbone"].items() if not k.startswith("lora")}
    model["backbone"] = vit | {"type": "VisionTransformerAdapter"}
    if "VisionTransformerAdapter" not in MODELS.module_dict:
        root = str(opentad_root)
        sys.path.insert(0, root)  # vit_adapter.py's own imports are absolute (mmaction, mmcv)
        try:
            spec = importlib.util.spec_from_file_location("_opentad_vit_adapter", Path(root, VIT))
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        finally:
            sys.path.remove(root)
    import mmaction.models  # noqa: F401 -- registers Recognizer3D and the data preprocessor

    return MODELS.build(model).state_dict()


def compare(ckpt: dict, model: dict, where: str) -> list[Finding]:
    missing = [k for k in model if k not in ckpt]
    unexpected = [k for k in ckpt if k not in model and not k.startswith(HEAD)]
    lost = [k for k in missing if not any(n in k for n in NEW_MODULES)]
    out = []
    if lost:
        found = f"{len(lost)} of {len(model)} backbone tensors absent, e.g. {lost[0]}"
        found += _prefix_hint(lost, unexpected)
        out.append(finding("checkpoint-missing-keys", where, found, "every VideoMAE tensor"))
    if unexpected:
        found = f"{len(unexpected)} tensors the model has no place for, e.g. {unexpected[0]}"
        severity = "error" if lost else "warning"  # with missing ones: renamed, not extra
        kind = "checkpoint-unexpected-keys"
        out.append(finding(kind, where, found, "backbone.*, cls_head.*", severity=severity))
    shapes = [k for k in model if k in ckpt and tuple(ckpt[k].shape) != tuple(model[k].shape)]
    if shapes:
        k = shapes[0]
        found = f"{len(shapes)} tensors, e.g. {k} {tuple(ckpt[k].shape)}"
        out.append(finding("checkpoint-shape-mismatch", where, found, tuple(model[k].shape)))
    cast = [str(ckpt[k].dtype) for k in model if k in ckpt and ckpt[k].dtype != model[k].dtype]
    if cast:
        out.append(finding("checkpoint-dtype", where, dict(Counter(cast)), "float32"))
    new = len(missing) - len(lost)
    found = f"{len(model) - len(missing)} of {len(model)} backbone tensors filled, {new} new"
    return out + [finding("checkpoint-loaded", where, found, "all but the adapters")]


def _prefix_hint(lost: list[str], unexpected: list[str]) -> str:
    """`; keys start with 'encoder.' where the model expects 'backbone.'` for a renamed prefix."""

    def tails(keys, head):
        return {k.split(".", 1)[1] for k in keys if k.startswith(head + ".")}

    for ours in {k.split(".", 1)[0] for k in lost}:
        for theirs in {k.split(".", 1)[0] for k in unexpected if "." in k}:
            if tails(unexpected, theirs) & tails(lost, ours):
                return f"; keys start with '{theirs}.' where the model expects '{ours}.'"
    return ""


def check(path, cfg: dict, opentad_root, expected_sha256: str | None = None) -> list[Finding]:
    if not Path(path).is_file():
        raise InputError(f"{path}: no such checkpoint file")
    digest = sha256(path)
    if expected_sha256 and digest != expected_sha256:
        out = [finding("checkpoint-not-recorded", path, digest, expected_sha256)]
    else:
        out = [finding("checkpoint-sha256", path, digest, expected_sha256 or "none published")]
    return out + compare(state_dict(path), backbone_state(cfg, opentad_root), str(path))
