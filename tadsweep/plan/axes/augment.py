"""Train-pipeline augmentation: upstream's ImgAug (already a RandAugment), none, or pytorchvideo's
RandAugment in its place. Clip-level Mixup/CutMix are refused: they cannot blend per-segment
detection targets."""

from tadsweep.errors import ConfigError, InputError
from tadsweep.plan.axes import Axis, opentad, register_axis

# pytorchvideo 0.1.5's RandAugment: the ops it draws from (_TRANSFORM_RANDAUG_MAX_PARAMS) and
# its maximum level (_AUGMENTATION_MAX_LEVEL); tests/test_opentad_render.py checks both against
# the installed package.
RANDAUGMENT_OPS = ("AdjustBrightness", "AdjustContrast", "AdjustSaturation", "AdjustSharpness",
                   "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
                   "ShearX", "ShearY", "TranslateX", "TranslateY")  # fmt: skip
RANDAUGMENT_MAX_LEVEL = 10


def policy(block: dict) -> str:
    """The augmentation a variant really runs, in words (the report states it per variant)."""
    ra = block.get("randaugment")
    if ra is not None:
        n, m, p = ra.get("num_ops", 2), ra.get("magnitude", 9), ra.get("prob", 0.5)
        return (
            f"RandAugment: {n} of {len(RANDAUGMENT_OPS)} ops, each acting with p={p:g} "
            f"(mean {n * p:g} per clip), magnitude {m}/{RANDAUGMENT_MAX_LEVEL}"
        )
    if block.get("imgaug") == "default":
        return "ImgAug default: 2 of 15 ops (SomeOf), both acting, magnitude 9/10"
    return "none"


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
                "num_ops": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": len(RANDAUGMENT_OPS),
                    "default": 2,
                    "description": f"Ops drawn per clip, of pytorchvideo's {len(RANDAUGMENT_OPS)}.",
                },
                "magnitude": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": RANDAUGMENT_MAX_LEVEL,
                    "default": 9,
                    "description": "Mean magnitude; pytorchvideo clamps every draw to "
                    f"0..{RANDAUGMENT_MAX_LEVEL}, so a larger value would not act.",
                },
                "prob": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1,
                    "default": 0.5,
                    "description": "Probability that each drawn op acts (pytorchvideo's "
                    "default 0.5: RandAugment(3) applies 1.5 ops on average).",
                },
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
        if ra is not None and ra.get("prob") == 1.0 and (ra["num_ops"], ra["magnitude"]) == (2, 9):
            return [f"{key}: RandAugment(2, 9) reproduces the default ImgAug policy; expect no "
                    f"difference"]  # fmt: skip
        return []

    def summary(self, block):
        return {"augment_policy": policy(block)}

    def params(self, variant, cfg):
        return {"imgaug": variant["imgaug"], "randaugment": variant["randaugment"]}

    def for_opentad(self, block, out, params, base):
        # the base config's own train pipeline, its mmaction.ImgAug step replaced or removed
        if unknown := sorted(set(block) - {"imgaug", "randaugment"}):
            raise InputError(
                f"params: augment.{unknown[0]} is not an augmentation this backend has"
            )
        imgaug, randaugment = block.get("imgaug", "default"), block.get("randaugment")
        if imgaug not in ("default", "none"):
            raise InputError(f"params: augment.imgaug must be 'default' or 'none', got {imgaug!r}")
        step = None  # ImgAug removed
        if randaugment is None:
            if imgaug == "default" or base.augment_slot() is None:
                return  # the base's own step
        elif not isinstance(randaugment, dict):
            raise InputError("params: augment.randaugment must be a mapping or null")
        else:
            # mmaction2 1.1.0 has no RandAugment; pytorchvideo's goes through PytorchVideoWrapper
            # and takes the ImgAug slot (ImgAug "default" already is a RandAugment-like SomeOf(2))
            step = dict(type="mmaction.PytorchVideoWrapper", op="RandAugment")
            for key, value in randaugment.items():
                arg = {"num_ops": "num_layers"}.get(key, key)
                if arg not in ("magnitude", "num_layers", "prob", "sampling_type"):
                    raise InputError(
                        f"params: augment.randaugment.{key} is not a pytorchvideo argument"
                    )
                step[arg] = value
            step.setdefault("magnitude", 9)
            step.setdefault("num_layers", 2)
        train = out.setdefault("dataset", {}).setdefault("train", {})
        train["pipeline"] = opentad.train_pipeline(base, step)
