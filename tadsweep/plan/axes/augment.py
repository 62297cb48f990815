"""Train-pipeline augmentation: upstream's ImgAug (already a RandAugment), none, or pytorchvideo's
RandAugment in its place. Clip-level Mixup/CutMix are refused: they cannot blend per-segment
detection targets."""

from __future__ import annotations

from tadsweep.errors import ConfigError
from tadsweep.plan.axes import Axis, register_axis


@register_axis
class Augment(Axis):
    name = "augment"
    description = "Train-pipeline augmentation."
    knobs = {
        "imgaug": {
            "type": "string",
            "enum": ["default", "none"],
            "default": "default",
            "description": "mmaction ImgAug(transforms='default'): already a RandAugment "
            "(SomeOf(2) of 15 ops, magnitude 9).",
        },
        "randaugment": {
            "type": ["object", "null"],
            "default": None,
            "additionalProperties": False,
            "description": "PytorchVideoWrapper(op='RandAugment') in place of ImgAug.",
            "properties": {
                "num_ops": {"type": "integer", "minimum": 1, "default": 2},
                "magnitude": {"type": "integer", "minimum": 0, "default": 9},
            },
        },
        "mixup": {
            "type": ["number", "null"],
            "default": None,
            "description": "Clip-level Mixup alpha: refused, it cannot blend per-segment "
            "detection targets.",
        },
        "cutmix": {
            "type": ["number", "null"],
            "default": None,
            "description": "Clip-level CutMix alpha: refused, it cannot blend per-segment "
            "detection targets.",
        },
    }

    def check(self, name, variant, cfg, source):
        key = f"variants.augment.{name}"
        for blend in ("mixup", "cutmix"):
            if variant.get(blend) is not None:
                raise ConfigError(
                    f"{source}: {key}.{blend}: clip-level {blend} blends clip class labels and "
                    f"cannot blend per-segment detection targets (OpenTAD runs it with blending "
                    f"off); remove it"
                )
        ra = variant["randaugment"]
        if ra is not None and variant["imgaug"] == "default":
            raise ConfigError(
                f"{source}: {key}.randaugment: ImgAug(transforms='default') already is a "
                f"RandAugment (2 of 15 ops, magnitude 9); set imgaug: none to replace it instead "
                f"of stacking two"
            )
        if ra is not None and ra == {"num_ops": 2, "magnitude": 9}:
            return [f"{key}: RandAugment(2, 9) reproduces the default ImgAug policy; expect no "
                    f"difference"]  # fmt: skip
        return []

    def params(self, variant, cfg):
        return {"imgaug": variant["imgaug"], "randaugment": variant["randaugment"]}

    def for_opentad(self, block, out, params, base):
        # the base config's own train pipeline, its mmaction.ImgAug step replaced or removed
        from tadsweep.backends.opentad import render

        step = render.augment_step(block, base)
        if step is not render.KEEP:
            train = out.setdefault("dataset", {}).setdefault("train", {})
            train["pipeline"] = render.train_pipeline(base, step)
