"""The post-processing knobs, each declared once as a `Knob` in KNOBS (registry order is column
order); the schema, NMSSetting, the `apply` options, the OpenTAD keys, the columns and the inert
rules derive from it (docs/architecture.md, "Adding a post-processing knob"). `stage`: "nms", a
`batched_nms` argument; "video", a cut of each video's pooled candidates before NMS; "detector",
inside the detector per sliding window (never swept). More: $TADSWEEP_EXTRA_KNOBS modules."""

import argparse
import importlib
import math
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tadsweep.errors import ConfigError

F32 = np.float32
_BOUNDS = (
    ("minimum", ">=", operator.ge),
    ("exclusiveMinimum", ">", operator.gt),
    ("maximum", "<=", operator.le),
    ("exclusiveMaximum", "<", operator.lt),
)


@dataclass(frozen=True)
class Knob:
    name: str
    schema: dict  # type (a list with "null": may be unset) and bounds, as JSON Schema
    upstream: object  # batched_nms' default; what a setting that omits the knob takes
    default: object  # the study's default (postprocess.default)
    description: str
    stage: str = "nms"  # nms, video or detector (module docstring)
    opentad: str | None = None  # its key under OpenTAD's post_processing
    flag: str = ""  # its option of `postprocess apply` (default: --name, dashes for underscores)
    inert: dict = field(default_factory=dict)  # knob -> values: all matching, it cannot act
    why: str = ""  # why, in a few words (validation names it)
    cut: Callable | None = None  # stage video: (detections, keep mask, value) -> keep mask
    config: bool = True  # a config key (else upstream's default, unless a setting file sets it)

    @property
    def option(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def kind(self) -> str:
        types = self.schema["type"]
        return next(t for t in ([types] if isinstance(types, str) else types) if t != "null")

    def problem(self, value) -> str | None:
        """Why `value` is not one this knob takes (its type and bounds; NaN never), or None."""
        s, kind = self.schema, self.kind
        nullable = "null" in s["type"]
        if value is None and nullable:
            return None
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        typed = {
            "boolean": isinstance(value, bool),
            "integer": number and isinstance(value, int),
            "number": number and math.isfinite(value),
        }[kind]
        bounds = [(op, holds, s[k]) for k, op, holds in _BOUNDS if k in s]
        within = typed and all(holds(value, b) for _, holds, b in bounds)
        if within and value in s.get("enum", [value]):
            return None
        limits = " and ".join(f"{op} {b:g}" for op, _, b in bounds)
        if "enum" in s:
            want = ", ".join(map(str, s["enum"][:-1])) + f" or {s['enum'][-1]}"
        elif kind == "boolean":
            want = "true or false"
        elif kind == "number" and typed:
            want = limits  # a number, out of bounds
        else:
            want = f"{'an integer' if kind == 'integer' else 'a finite number'} {limits}".strip()
        null = "null or " if nullable and not (kind == "number" and typed) else ""
        return f"{self.name} must be {null}{want}, got {value!r}"

    def parse(self, text: str):
        """argparse type of its option: the value, checked as the schema bounds it."""
        try:
            value = int(text) if self.kind == "integer" else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if problem := self.problem(value):
            raise argparse.ArgumentTypeError(problem)
        return value

    def is_inert(self, setting: dict) -> bool:
        return bool(self.inert) and all(setting.get(k) in v for k, v in self.inert.items())


KNOBS: dict[str, Knob] = {}


def register_knob(knob: Knob) -> Knob:
    """Register a knob (once), mmengine-style; returns it."""
    if not knob.name or knob.name in KNOBS:
        raise ConfigError(f"post-processing knob {knob.name!r} is unnamed or declared twice")
    if knob.stage not in ("nms", "video", "detector") or (knob.stage == "video") != bool(knob.cut):
        raise ConfigError(
            f"post-processing knob {knob.name!r}: stage video needs a cut, and only it"
        )
    KNOBS[knob.name] = knob
    return knob


def swept() -> list[Knob]:
    """The knobs of a setting (NMSSetting's fields, the sweep's and summary's columns)."""
    return [k for k in KNOBS.values() if k.stage != "detector"]


def switches() -> tuple[str, ...]:
    """Knobs under whose values another may be inert (the statistics check each), in order."""
    named = {q for k in KNOBS.values() for q in k.inert}
    return tuple(k for k in KNOBS if k in named)


def canonical(setting: dict) -> dict:
    """`setting` with every inert knob at upstream's default: settings that must give equal
    results become equal."""
    return {
        n: KNOBS[n].upstream if n in KNOBS and KNOBS[n].is_inert(setting) else v
        for n, v in setting.items()
    }


def check_config(pp: dict, source: str) -> list[str]:
    """A config's postprocess section: a gridded knob inert in every setting of the sweep is an
    error; a default set, where it cannot act, to other than upstream's value, a warning."""
    default, grid = pp["default"], pp["grid"]
    for name in grid:
        k = KNOBS[name]
        if k.inert and all(set(grid.get(q, [default[q]])) <= set(v) for q, v in k.inert.items()):
            raise ConfigError(
                f"{source}: postprocess.grid.{name}: {k.why}: it acts in no setting of the "
                "sweep, so these settings cannot differ"
            )
    return [
        f"postprocess.default.{k.name}: inert here: {k.why}"
        for k in KNOBS.values()
        if k.config and k.is_inert(default) and default[k.name] != k.upstream
    ]


def schema_defs() -> dict:
    """The config schema's postprocess sections ($defs of schemas/config.schema.yaml)."""
    config = [k for k in KNOBS.values() if k.config]
    return {
        "postprocess_default": {
            "type": "object",
            "additionalProperties": False,
            "description": "The setting used for selection and the headline numbers (upstream "
            "AdaTAD's).",
            "properties": {
                k.name: {**k.schema, "default": k.default, "description": k.description}
                for k in config
            },
        },
        "postprocess_grid": {
            "type": "object",
            "additionalProperties": False,
            "description": "Lists of values per key; the sweep is their cross product over the "
            "default.",
            "properties": {
                k.name: {"type": "array", "items": dict(k.schema), "minItems": 1}
                for k in config
                if k.stage != "detector"
            },
        },
    }


# ----------------------------------------------------------------------------- the cuts


def _video_thresh(det, keep: np.ndarray, value) -> np.ndarray:
    return keep & (det.score.astype(F32) > F32(value))


def _video_topk(det, keep: np.ndarray, value) -> np.ndarray:
    vid, rows = det.video_of_row, np.flatnonzero(keep)
    # stable: best score first, the earlier candidate first among equal scores
    o = rows[np.lexsort((rows, -det.score[rows].astype(F32), vid[rows]))]
    rank = np.arange(len(o)) - np.searchsorted(vid[o], vid[o], side="left")
    out = np.zeros_like(keep)
    out[o[rank < value]] = True
    return out


# ----------------------------------------------------------------------------- the knobs

_UNIT = {"type": "number", "minimum": 0, "maximum": 1}  # scores and IoUs lie in [0, 1]
_MANY = 1_000_000  # segments or candidates of one video: THUMOS has at most about 10^4
_SOFT_GAUSS = {"use_soft_nms": (True,), "method": (2, 3)}
for _knob in (
    Knob("sigma", {"type": "number", "exclusiveMinimum": 0, "maximum": 100}, 0.5, 0.7,
         "Gaussian soft-NMS sigma (score *= exp(-iou^2 / sigma)).", opentad="nms.sigma"),
    Knob("max_seg_num", {"type": "integer", "minimum": 1, "maximum": _MANY}, 100, 2000,
         "Segments kept per video (and per class with soft-NMS).", opentad="nms.max_seg_num"),
    Knob("multiclass", {"type": "boolean"}, True, True,
         "NMS per class (true) or class-agnostic.", opentad="nms.multiclass"),
    Knob("method", {"type": "integer", "enum": [0, 1, 2, 3]}, 2, 2,
         "0 hard, 1 linear, 2 Gaussian, 3 improved Gaussian.", opentad="nms.method"),
    Knob("voting_thresh", _UNIT, 0.0, 0.7,
         "Score voting IoU threshold; inert when multiclass is true.", opentad="nms.voting_thresh",
         inert={"multiclass": (True,)},
         why="score voting runs only in class-agnostic NMS (multiclass: false)"),
    Knob("min_score", _UNIT, 0.0, 0.0,
         "Drop segments whose score decays to this or below; 0.0 = batched_nms default "
         "(upstream AdaTAD sets none).", opentad="nms.min_score"),
    Knob("use_soft_nms", {"type": "boolean"}, True, True,
         "Soft-NMS (true) or vanilla NMS.", opentad="nms.use_soft_nms", flag="--soft-nms"),
    Knob("iou_threshold", _UNIT, 0.0, 0.0,
         "Hard/linear NMS threshold; inert with Gaussian soft-NMS.", opentad="nms.iou_threshold",
         inert=_SOFT_GAUSS, why="inert with Gaussian soft-NMS (method 2 or 3)"),
    Knob("video_topk", {"type": ["integer", "null"], "minimum": 1, "maximum": _MANY}, None, None,
         "Sweep-only cut: candidates kept per video (pooled over windows) before NMS; null "
         "keeps all, as OpenTAD.", stage="video", cut=_video_topk),
    Knob("video_thresh", {"type": ["number", "null"], "minimum": 0, "maximum": 1}, None, None,
         "Sweep-only cut: pooled candidates scoring at most this are dropped before NMS; null "
         "keeps all, as OpenTAD.", stage="video", cut=_video_thresh),
    Knob("t1", {"type": "number"}, 0.0, 0.0, "Improved Gaussian soft-NMS (method 3): decay "
         "only where IoU >= t1 + t2 x area.", opentad="nms.t1", config=False),
    Knob("t2", {"type": "number"}, 0.0, 0.0, "See t1.", opentad="nms.t2", config=False),
    Knob("pre_nms_topk", {"type": ["integer", "null"], "minimum": 1, "maximum": _MANY}, 2000,
         None,
         "OpenTAD's post_processing.pre_nms_topk: candidates kept per sliding window, inside the "
         "detector, before they are saved; null = upstream's 2000. Acts at detection, so it "
         "cannot be swept.", stage="detector", opentad="pre_nms_topk"),
    Knob("pre_nms_thresh", {"type": ["number", "null"], "minimum": 0, "maximum": 1}, 0.001,
         None,
         "OpenTAD's post_processing.pre_nms_thresh: per-window score floor inside the detector; "
         "null = upstream's 0.001. Acts at detection, so it cannot be swept.", stage="detector",
         opentad="pre_nms_thresh"),
):  # fmt: skip
    register_knob(_knob)


for _module in filter(None, os.environ.get("TADSWEEP_EXTRA_KNOBS", "").split(",")):
    importlib.import_module(_module.strip())
