"""OpenTAD's optimizer grouping rule (opentad/cores/optimizer.py), restated for tests.

Backbone params (names relative to the detector's `backbone`, i.e. the BackboneWrapper, so they read
`model.backbone.blocks.0...`) go to the first `custom` entry whose `name` is a substring of the
param name -- even when an `exclude` entry also matches; otherwise they are dropped if an `exclude`
entry matches, else they join one "rest" group with the backbone lr. Group order: rest (if any),
then one group per custom entry, then the detector's groups (lr = optimizer.lr).
"""

from torch import nn


def build_param_groups(detector: nn.Module, optimizer_cfg: dict) -> list[dict]:
    backbone_cfg = optimizer_cfg["backbone"]
    custom = list(backbone_cfg.get("custom", []))
    exclude = list(backbone_cfg.get("exclude", []))
    custom_params = [[] for _ in custom]
    custom_names = [[] for _ in custom]
    rest = []
    for name, param in detector.backbone.named_parameters():
        for i, entry in enumerate(custom):
            if entry["name"] in name:
                custom_params[i].append(param)
                custom_names[i].append(name)
                break
        else:
            if not any(ex in name for ex in exclude):
                rest.append(param)
    groups = []
    if rest:
        groups.append(dict(params=rest, names=None, lr=backbone_cfg["lr"]))
    for entry, params, names in zip(custom, custom_params, custom_names):
        groups.append(
            dict(params=params, names=names, lr=entry["lr"], weight_decay=entry["weight_decay"])
        )
    head = [p for n, p in detector.named_parameters() if not n.startswith("backbone")]
    groups.append(dict(params=head, names=None, lr=optimizer_cfg["lr"]))
    return groups


class Recognizer(nn.Module):
    """Stands for mmaction's Recognizer3D: the ViT is its `backbone`."""

    def __init__(self, vit):
        super().__init__()
        self.backbone = vit


class BackboneWrapper(nn.Module):
    def __init__(self, vit):
        super().__init__()
        self.model = Recognizer(vit)
        self.freeze_backbone = False


class Detector(nn.Module):
    def __init__(self, vit, dim):
        super().__init__()
        self.backbone = BackboneWrapper(vit)
        self.head = nn.Linear(dim, 2)
