"""The axes of a study, each declared once as a class registered with `@register_axis`; every
other part of tadsweep derives from `AXES` (docs/architecture.md, "Adding an axis"). Built-in
axes live in this folder, in `BUILTIN` order; modules in $TADSWEEP_EXTRA_AXES load after them.
"""

from __future__ import annotations

import copy
import importlib
import os

from tadsweep.errors import ConfigError

AXES: dict[str, Axis] = {}


class Axis:
    """Base class of an axis; subclasses set the class attributes and override what they need."""

    name: str = ""
    description: str = ""
    knobs: dict[str, dict] = {}  # knob -> JSON Schema (type, bounds, "default", "description")
    required: tuple[str, ...] = ()  # knobs every variant must set
    training: bool = True  # its block changes the trained weights (a resume refuses a change)
    columns: dict[str, str] = {}  # summary.tsv column -> key of the params block

    def variant_schema(self) -> dict:
        return {
            "type": "object",
            "additionalProperties": False,
            "description": self.description,
            "properties": copy.deepcopy(self.knobs),
            **({"required": list(self.required)} if self.required else {}),
        }

    def check(self, name: str, variant: dict, cfg: dict, source: str) -> list[str]:
        """Checks across a variant's knobs (after schema defaults): raise ConfigError, return
        one-line warnings. May complete the variant."""
        return []

    def params(self, variant: dict, cfg: dict) -> dict:
        """The run's params.json block for this axis (backend-neutral)."""
        return {k: copy.deepcopy(variant[k]) for k in self.knobs if k in variant}

    def cost(self, variant: dict) -> float:
        """Factor of a run's GPU-hours (the schedule gives epochs, LoRA its relative cost)."""
        return 1.0

    def summary(self, block: dict) -> dict:
        """summary.tsv columns of a run, from its params block."""
        return {column: block[key] for column, key in self.columns.items()}

    def for_opentad(self, block: dict, out: dict, params: dict, base) -> None:
        """Apply the block to the rendered OpenTAD config entries `out` (render.overrides)."""
        raise ConfigError(f"axis {self.name!r} has no mapping for the opentad backend")

    def for_demo(self, block: dict, settings: dict) -> None:
        """Apply the block to the demo's settings (a copy of params.json): for built-in axes,
        the block itself."""


def register_axis(cls):
    """Class decorator: register an axis under `cls.name` (once)."""
    if not cls.name or cls.name in AXES:
        raise ConfigError(f"axis {cls.name!r} is unnamed or declared twice")
    AXES[cls.name] = cls()
    return cls


def training_keys() -> tuple[str, ...]:
    """params.json keys that fix what a work dir trains (a resume with others is refused)."""
    axes = [name for name, axis in AXES.items() if axis.training]
    return ("seed", *axes, "batch_size", "ema", "amp", "model")


def schema_defs() -> dict:
    """The config schema's axis sections ($defs of schemas/config.schema.yaml)."""
    names = list(AXES)
    choice = {a: {"$ref": "#/definitions/name"} for a in names}
    return {
        "baseline": {
            "type": "object",
            "additionalProperties": False,
            "description": "The user's current configuration, one variant per axis; the "
            "reference of every comparison.",
            "properties": choice,
            "required": names,
        },
        "variants": {
            "type": "object",
            "additionalProperties": False,
            "description": "Named bundles of settings per axis; phases combine them by name.",
            "properties": {
                a: {
                    "type": "object",
                    "minProperties": 1,
                    "propertyNames": {"$ref": "#/definitions/name"},
                    "additionalProperties": AXES[a].variant_schema(),
                }
                for a in names
            },
            "required": names,
        },
        "arm": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": copy.deepcopy(choice),
        },
        "grid": {
            "type": "object",
            "additionalProperties": False,
            "description": "Cross product of variant lists per axis, on top of the base (added "
            "to arms).",
            "properties": {
                a: {
                    "type": "array",
                    "items": {"$ref": "#/definitions/name"},
                    "minItems": 1,
                    "uniqueItems": True,
                }
                for a in names
            },
        },
        "claim_axis": {"type": "string", "enum": [*names, "postprocess", "ensemble"]},
    }


BUILTIN = ("lora", "schedule", "augment", "structure")  # registry order = order in run ids
_EXTRA = [m.strip() for m in os.environ.get("TADSWEEP_EXTRA_AXES", "").split(",") if m]
for _module in [f"tadsweep.plan.axes.{name}" for name in BUILTIN] + _EXTRA:
    importlib.import_module(_module)
