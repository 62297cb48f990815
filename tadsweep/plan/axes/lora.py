"""LoRA on the frozen ViT blocks (peft, tadsweep's plugin for OpenTAD); r: 0 is upstream's
adapter-only AdaTAD."""

from __future__ import annotations

from tadsweep.errors import InputError
from tadsweep.plan.axes import Axis, register_axis

TARGETS = ["qkv", "proj", "fc1", "fc2"]


@register_axis
class Lora(Axis):
    name = "lora"
    description = (
        "LoRA on the frozen ViT blocks (peft); r: 0 disables LoRA (upstream adapter-only)."
    )
    knobs = {
        "r": {"type": "integer", "minimum": 0, "description": "LoRA rank; 0 = no LoRA."},
        "alpha": {
            "type": "number",
            "minimum": 0,
            "default": 0,
            "description": "LoRA alpha (scaling alpha / r).",
        },
        "dropout": {
            "type": "number",
            "minimum": 0,
            "exclusiveMaximum": 1,
            "default": 0.0,
            "description": "Dropout on the LoRA input.",
        },
        "targets": {
            "type": "array",
            "items": {"type": "string", "enum": TARGETS},
            "minItems": 1,
            "uniqueItems": True,
            "default": TARGETS,
            "description": "Linear layers of each block that get LoRA.",
        },
        "cost_factor": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 1.0,
            "description": "Training time relative to the baseline (r32 about 1.2); used for "
            "GPU-hour estimates.",
        },
    }
    required = ("r",)
    columns = {"lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout"}

    def check(self, name, variant, cfg, source):
        if variant["r"] == 0 and (variant.get("alpha") or variant.get("dropout")):
            return [f"variants.lora.{name}: r is 0 (LoRA off), so alpha and dropout are inert"]
        return []

    def params(self, variant, cfg):
        return {
            "r": variant["r"],
            "alpha": variant["alpha"],
            "dropout": variant["dropout"],
            "targets": list(variant["targets"]),
        }

    def cost(self, variant):
        return variant["cost_factor"]

    def for_opentad(self, block, out, params, base):
        # r > 0: the LoRA backbone (tadsweep.backends.opentad.lora, loaded through
        # custom_imports) and an optimizer group for its weights ("lora_"), which upstream's
        # builder would otherwise leave out; r == 0: upstream's VisionTransformerAdapter.
        from tadsweep.backends.opentad import render
        from tadsweep.backends.opentad.lora import OPTIMIZER_NAME, REGISTERED_NAME, TARGET_ALIASES

        r = render.get(block, "r", int, "lora")
        if r < 0:
            raise InputError("params: lora.r must be >= 0")
        if r == 0:
            return
        targets = list(render.get(block, "targets", list, "lora"))
        if not targets or set(targets) - set(TARGET_ALIASES):
            raise InputError(
                f"params: lora.targets must be a non-empty subset of {sorted(TARGET_ALIASES)}"
            )
        dropout = render.get(block, "dropout", float, "lora")
        if not 0 <= dropout < 1:
            raise InputError("params: lora.dropout must be in [0, 1)")
        out["custom_imports"] = dict(imports=[render.PLUGIN_MODULE], allow_failed_imports=False)
        render.backbone(out).update(
            type=REGISTERED_NAME,
            lora_r=r,
            lora_alpha=render.get(block, "alpha", float, "lora"),
            lora_dropout=dropout,
            lora_targets=targets,
        )
        lr = render.get(params, "schedule.lr", float)
        wd = render.get(params, "schedule.weight_decay", float)
        render.custom_groups(out).append(dict(name=OPTIMIZER_NAME, lr=lr, weight_decay=wd))
