"""Configs against upstream's: every key of a resolved OpenTAD config (mmengine, `_base_`
inherited) that differs from upstream's reference config for the same backbone, grouped by what
it changes, with the launch (GPUs, batch per GPU) beside the config's own keys."""

import dataclasses
import re
from fnmatch import fnmatchcase
from pathlib import Path

from tadsweep.errors import InputError
from tadsweep.site.doctor import ISSUE_1GPU, ISSUE_DATA, ONE_GPU, ZOO, Finding, finding

# upstream's AdaTAD THUMOS-14 configs by the ViT's width (all trained on 2 GPUs, the zoo's table)
REFERENCES = {
    384: "configs/adatad/thumos/e2e_thumos_videomae_s_768x1_160_adapter.py",
    768: "configs/adatad/thumos/e2e_thumos_videomae_b_768x1_160_adapter.py",
    1024: "configs/adatad/thumos/e2e_thumos_videomae_l_768x1_160_adapter.py",
    1280: "configs/adatad/thumos/e2e_thumos_videomae_h_768x1_160_adapter.py",
    1408: "configs/adatad/thumos/e2e_thumos_videomaev2_g_768x1_160_adapter.py",
}
RECIPE_GPUS = 2

# Where a key is absent, upstream's code uses these (batched_nms' signature; the detector's
# getattr defaults in opentad/models/detectors/single_stage.py): absent equals the default.
IMPLICIT = {
    "post_processing.nms.iou_threshold": 0.0,
    "post_processing.nms.min_score": 0.0,
    "post_processing.nms.method": 2,
    "post_processing.nms.t1": 0,
    "post_processing.nms.t2": 0,
    "post_processing.pre_nms_topk": 2000,
    "post_processing.pre_nms_thresh": 0.001,
}

# Site paths and speed-only settings: differences here say nothing about the result.
IGNORED = (
    "work_dir", "custom_imports*", "annotation_path", "class_map", "data_path", "block_list",
    "dataset.*.ann_file", "dataset.*.class_map", "dataset.*.data_path", "dataset.*.block_list",
    "evaluation.ground_truth_filename", "solver.*.num_workers", "*DecordInit*.num_threads",
)  # fmt: skip

# (key pattern, group, severity, expected effect, source): first match wins (a table: one entry a
# line). Keys known to matter are warnings; anything else that differs is info under "other".
KNOWN = (
    ("launch.gpus", "effective batch", "warning", ONE_GPU, ISSUE_1GPU),
    ("launch.batch_per_gpu", "effective batch", "info",
     "clips per GPU per step (global batch / GPUs): 1 in the recipe", ZOO),
    ("solver.train.batch_size", "effective batch", "warning",
     "the global batch (OpenTAD divides it by the GPUs; no gradient accumulation); OpenTAD does "
     "not scale learning rates with it", ZOO),
    ("optimizer.backbone.custom[*].lr", "learning rates", "warning",
     "learning rate of a trained backbone group (the adapters: 2e-4 in the recipe)", ZOO),
    ("optimizer.lr", "learning rates", "warning", "learning rate of the detector head", ZOO),
    ("optimizer.*", "learning rates", "warning",
     "which parameters train and how fast (upstream trains only names containing 'adapter' in "
     "the backbone)", ZOO),
    ("workflow.end_epoch", "epochs and schedule", "warning",
     "epochs trained: upstream stops at 60 of a 100-epoch cosine (the LR ends at 0.38x)", ZOO),
    ("scheduler.*", "epochs and schedule", "warning",
     "warmup and cosine length of the LR schedule", ZOO),
    ("solver.ema", "epochs and schedule", "warning",
     "upstream evaluates EMA weights (decay 0.999)", ZOO),
    ("solver.amp", "epochs and schedule", "info", "mixed precision (speed and memory)", ZOO),
    ("workflow.val_*", "epochs and schedule", "info", "when the in-training evaluation runs", ZOO),
    ("model.backbone.custom.pretrain", "pretrained and drop_path", "warning",
     "the backbone's starting weights: other videos, annotations or checkpoint gave 5.12",
     ISSUE_DATA),
    ("*.drop_path_rate", "pretrained and drop_path", "warning", "stochastic depth", ZOO),
    ("*.adapter_index", "pretrained and drop_path", "warning", "blocks that get adapters", ZOO),
    ("*lora*", "pretrained and drop_path", "info",
     "LoRA (tadsweep's plugin; upstream has none)", ""),
    ("model.backbone.backbone.*", "pretrained and drop_path", "warning", "the backbone", ZOO),
    ("window_size", "frames, window and resolution", "warning", "frames per window (768)", ZOO),
    ("*.trunc_len", "frames, window and resolution", "warning", "frames per training clip", ZOO),
    ("*total_frames", "frames, window and resolution", "warning", "frames per window", ZOO),
    ("*.max_seq_len", "frames, window and resolution", "warning", "frames per window", ZOO),
    ("*.window_size", "frames, window and resolution", "warning", "frames per window", ZOO),
    ("*.window_overlap_ratio", "frames, window and resolution", "info", "window overlap", ZOO),
    ("*Resize*.scale", "frames, window and resolution", "warning", "resolution (160 px)", ZOO),
    ("*.crop_size", "frames, window and resolution", "warning", "resolution (160 px)", ZOO),
    ("post_processing.nms.voting_thresh", "post-processing", "info",
     "inert while multiclass is true (score voting runs only class-agnostic)", ""),
    ("post_processing.*", "post-processing", "warning",
     "soft-NMS settings move average mAP by about 0.5-1.5 points (seed plan)", ""),
    ("evaluation.tiou_thresholds", "evaluation", "warning",
     "average mAP over other tIoUs is not comparable with 69.03", ZOO),
    ("*.subset_name", "evaluation", "warning",
     "'training' trains on THUMOS validation videos, 'validation' tests on its test videos", ZOO),
    ("dataset.train.pipeline*", "augmentation", "info", "training augmentation", ZOO),
)  # fmt: skip
UNKNOWN = ("other", "info", "not known to matter", "")


def load(path, opentad_root=None) -> dict:
    """A config resolved as tools/train.py resolves it (mmengine, `_base_` inherited)."""
    import logging

    from mmengine.logging import MMLogger

    from tadsweep.backends.opentad.render import load_config

    MMLogger.get_current_instance().setLevel(logging.WARNING)  # its note on $OPENTAD_ROOT
    if not Path(path).is_file():
        raise InputError(f"{path}: no such config file")
    return load_config(path, opentad_root, "the config").to_dict()


def from_text(text: str) -> dict | None:
    """A config dumped into a training log (`Config: ...`), or None when it does not parse."""
    from mmengine.config import Config

    try:
        return Config.fromstring(text, ".py").to_dict()
    except Exception:
        return None


def reference_path(cfg: dict, opentad_root) -> Path:
    """Upstream's config for the same backbone (by the ViT's width)."""
    vit = cfg.get("model", {}).get("backbone", {}).get("backbone", {})
    width = vit.get("embed_dims", 384)  # nothing known: the study's VideoMAE-S
    if width not in REFERENCES:
        raise InputError(
            f"model.backbone.backbone.embed_dims: {width!r} matches no upstream AdaTAD THUMOS "
            "config; name one with --reference"
        )
    return Path(opentad_root, REFERENCES[width])


def flatten(value, key: str = "", out: dict | None = None) -> dict:
    """Dotted keys; a list of dicts (pipelines, optimizer groups) keyed by each item's type or
    name, so that removing one step does not shift the others."""
    out = {} if out is None else out
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(v, f"{key}.{k}" if key else str(k), out)
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, dict) for v in value):
        seen: dict = {}
        for i, item in enumerate(value):
            name = str(item.get("type", item.get("name", i)))
            seen[name] = seen.get(name, 0) + 1
            tag = f"{key}[{name}]" if seen[name] == 1 else f"{key}[{name}#{seen[name]}]"
            flatten({k: v for k, v in item.items() if k not in ("type", "name")}, tag, out)
            out.setdefault(tag, "(step)")
    else:
        out[key] = _plain(value)
    return out


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _same(key, a, b) -> bool:
    if key.endswith("pretrain") and isinstance(a, str) and isinstance(b, str):
        return Path(a).name == Path(b).name  # site folders differ; the file is what counts
    return a == b


def launch(cfg: dict, gpus: int | None) -> dict:
    """The launch's keys: GPUs and clips per GPU (OpenTAD divides the global batch)."""
    batch = cfg.get("solver", {}).get("train", {}).get("batch_size")
    out = {"launch.gpus": gpus}
    if gpus and isinstance(batch, int):
        out["launch.batch_per_gpu"] = batch / gpus
    return out


def diff(label: str, cfg: dict, ref: dict, gpus: int | None) -> list[Finding]:
    """Every key of `cfg` that differs from `ref`, as findings (subject `label: key`)."""
    ours = flatten(cfg) | (launch(cfg, gpus) if gpus else {})
    theirs = flatten(ref) | launch(ref, RECIPE_GPUS)
    out = []
    for key in sorted(set(ours) | set(theirs)):
        if any(fnmatchcase(key, p) for p in IGNORED) or key.startswith("launch.") and not gpus:
            continue
        a, b = (x.get(key, IMPLICIT.get(key, "(absent)")) for x in (ours, theirs))
        if not _same(key, a, b):
            known = (k[1:] for k in KNOWN if fnmatchcase(key, k[0]))
            group, severity, effect, source = next(known, UNKNOWN)
            subject = f"{label}: {key}"
            out.append(Finding("config-differs", severity, subject, a, b, effect, source, group))
    return out + _lr_scaling(label, cfg, ref)


def _lr_scaling(label: str, cfg: dict, ref: dict) -> list[Finding]:
    batch, ref_batch = (c.get("solver", {}).get("train", {}).get("batch_size") for c in (cfg, ref))
    if not (isinstance(batch, int) and isinstance(ref_batch, int)) or batch == ref_batch:
        return []
    lrs = flatten(cfg.get("optimizer", {}), "optimizer").items()
    scaled = ", ".join(
        f"{k} {v * batch / ref_batch:.1e}"
        for k, v in lrs
        if re.search(r"(^|\.)lr$", k) and isinstance(v, (int, float)) and v
    )
    why = f"OpenTAD keeps the learning rates as written; linear scaling would give {scaled}"
    subject = f"{label}: solver.train.batch_size"
    return [finding("lr-not-scaled", subject, batch, ref_batch, why=why)]


def merge(findings: list[Finding], n_configs: int) -> list[Finding]:
    """One finding per key and values. A key every config changes is the setup's and keeps its
    severity; a key only some arms change is what those arms try, so it is listed as info."""
    groups: dict = {}
    per_key: dict = {}
    for f in findings:
        label, key = f.subject.split(": ", 1)
        groups.setdefault((f.id, key, repr(f.found), repr(f.expected)), []).append((label, f))
        per_key.setdefault(key, set()).add(label)
    out = []
    for (_, key, _, _), items in groups.items():
        labels, f = [label for label, _ in items], items[0][1]
        if n_configs > 1:
            where = "all configs" if len(labels) == n_configs else ", ".join(labels)
            severity = f.severity if len(per_key[key]) == n_configs else "info"
            f = dataclasses.replace(f, severity=severity, subject=f"{key} ({where})")
        out.append(f)
    return out


def check(configs: dict, ref: dict, gpus: int | None) -> list[Finding]:
    """configs: label -> resolved config, all launched on `gpus` GPUs (None: unknown)."""
    found = [f for label, cfg in configs.items() for f in diff(label, cfg, ref, gpus)]
    return merge(found, len(configs))
