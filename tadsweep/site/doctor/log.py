"""A baseline's training log (OpenTAD's `log.json`, plain text): the world size it ran on, the
config it dumped, the learning rates over time, the epochs reached, non-finite losses, the
in-training mAP curve's shape and the tIoUs it was evaluated at."""

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tadsweep.errors import InputError
from tadsweep.report.curves import parse_log
from tadsweep.site.doctor import Finding, finding
from tadsweep.site.doctor.config import RECIPE_GPUS, from_text

_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ [A-Z]+: (.*)$")
_WORLD = re.compile(r"Using DDP with total (\d+) GPUS")
_PARAM = re.compile(r"Backbone parameter: (\S+)")
UPSTREAM_TIOUS = [0.3, 0.4, 0.5, 0.6, 0.7]


@dataclass
class Log:
    path: Path
    world_size: int | None = None
    config: dict | None = None  # the merged config the run dumped
    trained: list[str] = field(default_factory=list)  # backbone parameters in the optimizer


def scan(path) -> Log:
    """What the run printed about its setup (the per-epoch lines go through report.curves)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the log ({exc.strerror or exc})") from None
    log, dump, in_dump = Log(path), [], False
    for line in text.splitlines():
        record = _RECORD.match(line)
        if record is None:
            if in_dump:
                dump.append(line)
            continue
        message, in_dump = record.group(1), False
        if message.startswith("Config:"):
            in_dump, dump = True, []
        elif m := _WORLD.search(message):
            log.world_size = int(m.group(1))
        elif m := _PARAM.match(message):
            log.trained.append(m.group(1))
    if dump:
        log.config = from_text("\n".join(dump))
    return log


def _expected_lr(base: float, epoch_end: float, warmup: float, cosine: float) -> float:
    """LinearWarmupCosineAnnealingLR's closed form (opentad/cores/scheduler.py, eta_min 1e-8)."""
    if epoch_end < warmup:
        return base * epoch_end / warmup
    return 1e-8 + 0.5 * (base - 1e-8) * (
        1 + math.cos(math.pi * (epoch_end - warmup) / (cosine - warmup))
    )


def _schedule(cfg: dict | None):
    cfg = cfg or {}
    sched, wf = cfg.get("scheduler", {}), cfg.get("workflow", {})
    return sched.get("warmup_epoch"), sched.get("max_epoch"), wf.get("end_epoch")


def check(log: Log, reference: dict | None = None) -> list[Finding]:
    """Findings of one scanned training log, against the reference config's schedule."""
    curves = parse_log(log.path)
    name, out = str(log.path), []
    if log.world_size is not None and log.world_size != RECIPE_GPUS:
        out.append(finding("log-world-size", f"{name}: world size", log.world_size, RECIPE_GPUS))
    cfg = log.config or {}
    batch = cfg.get("solver", {}).get("train", {}).get("batch_size")
    if log.world_size and isinstance(batch, int):
        per_gpu = f"{batch} global = {batch / log.world_size:g} per GPU x {log.world_size} GPU(s)"
        recipe = "2 global = 1 per GPU x 2 GPUs"
        out.append(finding("log-batch", f"{name}: batch", per_gpu, recipe))
    if len(curves) == 0:
        return out + [finding("log-no-epoch", name, "no completed epoch", "60 epochs")]
    end = _schedule(cfg)[2] or _schedule(reference)[2]
    reached = int(curves["epoch"].max()) + 1
    kind = "log-stopped-early" if end and reached < end else "log-epochs"
    out += [finding(kind, f"{name}: epochs", reached, end or "?")] + _losses(name, curves)
    out += _lrs(name, curves, reference) + _map_curve(name, curves)
    lora = any("lora" in str(k).lower() for k in _keys(cfg.get("model", {})))
    if lora and log.trained and not any("lora" in p.lower() for p in log.trained):
        found = f"{len(log.trained)} backbone parameters trained, none of them LoRA"
        out.append(finding("lora-not-trained", f"{name}: optimizer groups", found, "LoRA too"))
    return out


def _keys(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _keys(v)
    elif isinstance(value, str):
        yield value


def _losses(name, curves) -> list[Finding]:
    cols = [c for c in ("loss", "cls_loss", "reg_loss") if c in curves]
    bad = curves[~np.isfinite(curves[cols].to_numpy(dtype=float)).all(axis=1)]
    if len(bad) == 0:
        return []
    first = int(bad["epoch"].iloc[0])
    found = f"non-finite loss in {len(bad)} epoch(s) from epoch {first}"
    return [finding("loss-not-finite", f"{name}: epoch {first}", found, "finite losses")]


def _lrs(name, curves, reference) -> list[Finding]:
    """Each logged group's LR over the epochs, against the reference schedule."""
    warmup, cosine, _ = _schedule(reference)
    opt = (reference or {}).get("optimizer", {})
    custom = opt.get("backbone", {}).get("custom") or [{}]
    bases = {"lr_backbone": custom[0].get("lr"), "lr_det": opt.get("lr")}  # as train_engine logs
    out = []
    for column, base in bases.items():
        if column not in curves or not curves[column].notna().any():
            continue
        epochs, lrs = curves["epoch"].to_numpy(), curves[column].to_numpy()
        picks = sorted({0, len(epochs) // 2, len(epochs) - 1})
        found = ", ".join(f"epoch {epochs[i]}: {lrs[i]:.1e}" for i in picks)
        if not (base and warmup and cosine):
            out.append(finding("log-lr", f"{name}: {column}", found, "?"))
            continue
        want = [_expected_lr(base, epochs[i] + 1, warmup, cosine) for i in picks]
        expected = ", ".join(f"epoch {epochs[i]}: {w:.1e}" for i, w in zip(picks, want))
        # the log prints 2 significant digits: 10% apart is another schedule or base
        off = any(abs(lrs[i] - w) > 0.1 * max(w, 1e-12) for i, w in zip(picks, want))
        kind = "log-lr-differs" if off else "log-lr"
        out.append(finding(kind, f"{name}: {column}", found, expected))
    return out


def _map_curve(name, curves) -> list[Finding]:
    evals = curves.dropna(subset=["average_mAP"]) if "average_mAP" in curves else curves[:0]
    if len(evals) == 0:
        return [finding("log-no-eval", name, "no in-training evaluation", "every 2 epochs")]
    pts, epochs = evals["average_mAP"].to_numpy() * 100, evals["epoch"].to_numpy()
    best, last = int(pts.argmax()), len(pts) - 1
    shape = f"best {pts[best]:.2f} at epoch {epochs[best]}, final {pts[last]:.2f} at {epochs[last]}"
    flat = "a curve that flattens by the last epoch"
    if best < last and pts[best] - pts[last] > 1.0:  # twice the run-to-run noise
        out = [finding("map-peaked-early", f"{name}: mAP curve", shape, flat)]
    elif best == last and last >= 2 and pts[last] - pts[last - 2] > 1.0:
        out = [finding("map-still-rising", f"{name}: mAP curve", shape, flat)]
    else:
        out = [finding("map-curve", f"{name}: mAP curve", shape, "69.03 (upstream)")]
    tious = sorted(float(c.split("@")[1]) for c in curves.columns if c.startswith("mAP@"))
    if tious and tious != UPSTREAM_TIOUS:
        out.append(finding("log-tious", f"{name}: evaluation tIoUs", tious, UPSTREAM_TIOUS))
    return out
