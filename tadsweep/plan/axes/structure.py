"""Adapter placement (which ViT blocks get a TIA adapter) and stochastic depth."""

from tadsweep.errors import ConfigError, InputError
from tadsweep.plan.axes import Axis, opentad, register_axis


@register_axis
class Structure(Axis):
    name = "structure"
    description = "Adapter placement and stochastic depth."
    knobs = {
        "adapter_index": {
            "oneOf": [
                {"type": "string", "enum": ["all", "first_half", "last_half"]},
                {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0},
                    "minItems": 1,
                    "uniqueItems": True,
                },
            ],
            "default": "all",
            "description": "Blocks that get an adapter: all, first_half, last_half, or a list of "
            "0-based indices.",
        },
        "drop_path_rate": {
            "type": "number",
            "minimum": 0,
            "exclusiveMaximum": 1,
            "default": 0.1,
            "description": "Stochastic depth rate of the backbone.",
        },
    }
    columns = {"drop_path_rate": "drop_path_rate", "adapter_index": "adapter_index"}

    def blocks(self, spec, depth: int, key: str, source: str) -> list[int]:
        """adapter_index as 0-based block numbers of a model.depth-block ViT."""
        if isinstance(spec, str):
            half = depth // 2
            spans = {"all": (0, depth), "first_half": (0, half), "last_half": (half, depth)}
            return list(range(*spans[spec]))
        if bad := [i for i in spec if i >= depth]:
            raise ConfigError(
                f"{source}: {key}: block {bad[0]} does not exist (model.depth is {depth})"
            )
        return sorted(spec)

    def check(self, name, variant, cfg, source):
        key = f"variants.structure.{name}.adapter_index"
        self.blocks(variant["adapter_index"], cfg["model"]["depth"], key, source)
        return []

    def params(self, variant, cfg):
        depth = cfg["model"]["depth"]
        blocks = self.blocks(variant["adapter_index"], depth, "adapter_index", "config")
        return {"adapter_index": blocks, "drop_path_rate": variant["drop_path_rate"]}

    def summary(self, block):
        blocks = block["adapter_index"]  # compact: 0-11, 0-5, or 0,2,4
        span = blocks == list(range(blocks[0], blocks[-1] + 1))
        text = f"{blocks[0]}-{blocks[-1]}" if span else ",".join(map(str, blocks))
        return {"drop_path_rate": block["drop_path_rate"], "adapter_index": text}

    def for_opentad(self, block, out, params, base):
        index = opentad.get(block, "adapter_index", list, "structure")
        if any(not isinstance(i, int) or not 0 <= i < base.depth for i in index):
            raise InputError(
                f"params: structure.adapter_index entries must be in 0..{base.depth - 1}"
            )
        opentad.backbone(out).update(
            drop_path_rate=opentad.get(block, "drop_path_rate", float, "structure"),
            adapter_index=sorted(set(index)),
        )
