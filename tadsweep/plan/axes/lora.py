"""LoRA on the frozen ViT blocks (peft, tadsweep's plugin for OpenTAD); r: 0 is upstream's
adapter-only AdaTAD."""

from tadsweep.errors import InputError
from tadsweep.plan.axes import Axis, opentad, register_axis

# The LoRA backbone's names, which the render writes and the plugin registers
# (tadsweep.backends.opentad.lora: loaded through custom_imports)
PLUGIN_MODULE = "tadsweep.backends.opentad.lora"
REGISTERED_NAME = "VisionTransformerAdapterLoRA"
OPTIMIZER_NAME = "lora_"  # substring OpenTAD's optimizer builder matches in param names
# target alias -> candidate paths inside a block; the first that exists and is a Linear is used
TARGET_ALIASES = {
    "qkv": ("attn.qkv",),
    "proj": ("attn.proj",),
    "fc1": ("mlp.layers.0.0", "mlp.fc1"),
    "fc2": ("mlp.layers.1", "mlp.fc2"),
}
TARGETS = list(TARGET_ALIASES)


@register_axis
class Lora(Axis):
    name = "lora"
    description = (
        "LoRA on the frozen ViT blocks (peft); r: 0 disables LoRA (upstream adapter-only)."
    )
    knobs = {
        "r": {
            "type": "integer",
            "minimum": 0,
            "maximum": 1024,
            "description": "LoRA rank; 0 = no LoRA. At most 1024: a rank past a layer's width "
            "(384 in VideoMAE-S, 1408 in ViT-g) adds nothing.",
        },
        "alpha": {
            "type": "number",
            "minimum": 0,
            "maximum": 16384,
            "default": 0,
            "description": "LoRA alpha (scaling alpha / r), at most 16384.",
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
            "maximum": 100,
            "default": 1.0,
            "description": "Training time relative to the baseline (r32 about 1.2; at most 100); "
            "used for GPU-hour estimates.",
        },
    }
    required = ("r",)
    columns = {"lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout"}

    def check(self, name, variant, cfg, source):
        if variant["r"] == 0 and (variant.get("alpha") or variant.get("dropout")):
            return [f"variants.lora.{name}: r is 0 (LoRA off), so alpha and dropout are inert"]
        return []

    def params(self, variant, cfg):
        return {k: v for k, v in super().params(variant, cfg).items() if k != "cost_factor"}

    def cost(self, variant):
        return variant["cost_factor"]

    def for_opentad(self, block, out, params, base):
        # r > 0: the LoRA backbone (PLUGIN_MODULE) and an optimizer group for its weights
        # ("lora_"), which upstream's builder would otherwise leave out; r == 0: upstream's
        # VisionTransformerAdapter.
        r = opentad.get(block, "r", int, "lora")
        if r < 0:
            raise InputError("params: lora.r must be >= 0")
        if r == 0:
            return
        targets = list(opentad.get(block, "targets", list, "lora"))
        if not targets or set(targets) - set(TARGET_ALIASES):
            raise InputError(
                f"params: lora.targets must be a non-empty subset of {sorted(TARGET_ALIASES)}"
            )
        dropout = opentad.get(block, "dropout", float, "lora")
        if not 0 <= dropout < 1:
            raise InputError("params: lora.dropout must be in [0, 1)")
        out["custom_imports"] = dict(imports=[PLUGIN_MODULE], allow_failed_imports=False)
        opentad.backbone(out).update(
            type=REGISTERED_NAME,
            lora_r=r,
            lora_alpha=opentad.get(block, "alpha", float, "lora"),
            lora_dropout=dropout,
            lora_targets=targets,
        )
        lr = opentad.get(params, "schedule.lr", float)
        wd = opentad.get(params, "schedule.weight_decay", float)
        opentad.custom_groups(out).append(dict(name=OPTIMIZER_NAME, lr=lr, weight_decay=wd))
