"""The OpenTAD config entries the axes' `for_opentad` write, below the backend that renders them
(tadsweep.backends.opentad.render): how to read a params block, the entries several axes share,
and what the renderer knows of its base config."""

import copy
from dataclasses import dataclass

from tadsweep.errors import InputError

UPSTREAM_BACKBONE = "VisionTransformerAdapter"
IMGAUG = "mmaction.ImgAug"  # the augmentation step of upstream's train pipeline


@dataclass(frozen=True)
class Base:
    """What a rendered config needs to know about its base config."""

    include: str  # the `_base_` entry
    depth: int  # ViT blocks: adapter_index must lie in 0..depth-1
    train_pipeline: tuple  # dataset.train.pipeline, as plain dicts

    def augment_slot(self) -> int | None:
        types = [step.get("type") for step in self.train_pipeline]
        return types.index(IMGAUG) if IMGAUG in types else None


def train_pipeline(base: Base, augment_op: dict | None) -> list[dict]:
    """The base's train pipeline with its ImgAug step replaced (None: removed)."""
    slot = base.augment_slot()
    if slot is None:
        raise InputError(
            f"{base.include}: dataset.train.pipeline has no {IMGAUG} step for the augmentation"
        )
    steps = [copy.deepcopy(step) for step in base.train_pipeline]
    steps[slot : slot + 1] = [augment_op] if augment_op else []
    return steps


def get(node: dict, dotted: str, kind=None, where: str = ""):
    """node[a][b] for dotted "a.b", of the given kind; errors name the key as params.json has it
    (`where`: the block's own key, e.g. "lora")."""
    full = f"{where}.{dotted}" if where else dotted
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise InputError(f"params: missing key {full}")
        node = node[part]
    number = isinstance(node, (int, float)) and not isinstance(node, bool)
    ok = {float: number, int: number and isinstance(node, int)}
    if not ok.get(kind, kind is None or isinstance(node, kind)):
        raise InputError(f"params: {full} must be {kind.__name__}, got {node!r}")
    return node


def backbone(out: dict) -> dict:
    """The rendered model.backbone.backbone entries (upstream's adapter ViT unless changed)."""
    model = out.setdefault("model", {}).setdefault("backbone", {})
    return model.setdefault("backbone", {"type": UPSTREAM_BACKBONE})


def custom_groups(out: dict) -> list:
    """optimizer.backbone.custom: the backbone parameters upstream's optimizer builder trains."""
    return out.setdefault("optimizer", {}).setdefault("backbone", {}).setdefault("custom", [])
