"""A small AdaTAD-shaped detector: frozen transformer backbone + TIA adapters + peft LoRA + head.
Module names mirror OpenTAD's VisionTransformerAdapter (`blocks.{i}.attn.qkv`, `...mlp.fc1`) so
LoRA targets hit the same layers; the adapter's `down_proj`/`up_proj` never match "proj"."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from tadsweep.errors import InputError

DEFAULT_ARCH = {"dim": 64, "depth": 4, "heads": 4, "mlp_ratio": 2.0}
ADAPTER_RATIO = 0.25  # AdaTAD's adapter_mlp_ratio
REG_UNIT = 8.0  # boundary distances are predicted in units of 8 feature steps
CLS_PRIOR = 0.01  # initial foreground probability of the classifier (RetinaNet prior)


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole samples during training."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype) < keep
        return x * mask.to(x.dtype) / keep


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Adapter(nn.Module):
    """AdaTAD's temporal-informative adapter: down-proj, depth-wise temporal conv, up-proj.
    up_proj starts at zero: a fresh adapter is the identity."""

    def __init__(self, dim: int):
        super().__init__()
        hidden = int(dim * ADAPTER_RATIO)
        self.down_proj = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.dwconv = nn.Conv1d(hidden, hidden, 3, padding=1, groups=hidden)
        self.conv = nn.Conv1d(hidden, hidden, 1)
        self.up_proj = nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(torch.ones(1))
        nn.init.trunc_normal_(self.down_proj.weight, std=0.02)
        nn.init.zeros_(self.down_proj.bias)
        nn.init.normal_(self.dwconv.weight, std=math.sqrt(2.0 / 3))
        nn.init.zeros_(self.dwconv.bias)
        nn.init.normal_(self.conv.weight, std=math.sqrt(2.0 / hidden))
        nn.init.zeros_(self.conv.bias)
        nn.init.zeros_(self.up_proj.weight)
        nn.init.zeros_(self.up_proj.bias)

    def forward(self, x):
        h = self.act(self.down_proj(x))
        h = h + self.conv(self.dwconv(h.transpose(1, 2))).transpose(1, 2)
        return x + self.gamma * self.up_proj(h)


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, drop_path_rate=0.0, use_adapter=False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.drop_path = DropPath(drop_path_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        if use_adapter:
            self.adapter = Adapter(dim)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        if hasattr(self, "adapter"):
            x = self.adapter(x)
        return x


class Backbone(nn.Module):
    """Temporal ViT over feature steps (the stand-in for VideoMAE)."""

    def __init__(
        self, feat_dim, seq_len, dim, depth, heads, mlp_ratio, drop_path_rate=0.0, adapter_index=()
    ):
        super().__init__()
        self.patch_embed = nn.Linear(feat_dim, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, seq_len, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))  # used by pretraining only
        rates = torch.linspace(0, drop_path_rate, depth).tolist()  # deeper blocks drop more
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, rates[i], use_adapter=i in set(adapter_index))
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, x, mask=None):
        x = self.patch_embed(x)
        if mask is not None:
            x = torch.where(mask[..., None], self.mask_token.to(x.dtype), x)
        x = x + self.pos_embed[:, : x.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


HEAD_DILATIONS = (1, 2, 4)


def _conv_stack(dim: int) -> nn.Sequential:
    # Dilated convolutions stand in for ActionFormer's feature pyramid: the head sees about
    # +-15 steps, enough to regress boundaries of most instances from their centre.
    mods = []
    for d in HEAD_DILATIONS:
        mods += [nn.Conv1d(dim, dim, 3, padding=d, dilation=d), nn.GroupNorm(1, dim), nn.ReLU()]
    return nn.Sequential(*mods)


class Head(nn.Module):
    """Anchor-free head (ActionFormer-style, one level): per-step class logits and distances to
    the start and end of the step's action."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.cls_convs = _conv_stack(dim)
        self.cls_out = nn.Conv1d(dim, num_classes, 3, padding=1)
        self.reg_convs = _conv_stack(dim)
        self.reg_out = nn.Conv1d(dim, 2, 3, padding=1)
        nn.init.normal_(self.cls_out.weight, std=0.01)
        nn.init.constant_(self.cls_out.bias, -math.log((1 - CLS_PRIOR) / CLS_PRIOR))

    def forward(self, x):
        x = x.transpose(1, 2)
        logits = self.cls_out(self.cls_convs(x)).transpose(1, 2)
        dist = F.softplus(self.reg_out(self.reg_convs(x))).transpose(1, 2) * REG_UNIT
        return logits, dist


class Detector(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int, dim: int):
        super().__init__()
        self.backbone = backbone
        self.head = Head(dim, num_classes)

    def forward(self, x):
        return self.head(self.backbone(x))


def backbone_from_pretrained(pretrained: dict, drop_path_rate=0.0, adapter_index=()) -> Backbone:
    cfg = pretrained["config"]
    arch = {k: cfg[k] for k in ("feat_dim", "seq_len", "dim", "depth", "heads", "mlp_ratio")}
    bb = Backbone(**arch, drop_path_rate=drop_path_rate, adapter_index=adapter_index)
    # Adapters are new modules; every other backbone weight must come from pretraining.
    missing, unexpected = bb.load_state_dict(pretrained["state_dict"], strict=False)
    if unexpected or any(".adapter." not in k for k in missing):
        raise InputError(f"backbone weights do not fit the model: {missing[:3]} {unexpected[:3]}")
    return bb


def apply_lora(backbone: Backbone, lora: dict) -> None:
    """Inject peft LoRA layers into the backbone in place (no-op when r == 0)."""
    if int(lora.get("r", 0)) <= 0:
        return
    from peft import LoraConfig, inject_adapter_in_model  # slow import; only when needed

    config = LoraConfig(
        r=int(lora["r"]),
        lora_alpha=float(lora["alpha"]),
        lora_dropout=float(lora["dropout"]),
        target_modules=list(lora["targets"]),
        bias="none",
    )
    inject_adapter_in_model(config, backbone)


def build_detector(pretrained: dict, params: dict, num_classes: int) -> Detector:
    """The trainable detector for one run; the global torch RNG must be seeded beforehand."""
    structure = params["structure"]
    depth = int(pretrained["config"]["depth"])
    index = [int(i) for i in structure.get("adapter_index", [])]
    if any(not 0 <= i < depth for i in index):
        raise InputError(
            f"structure.adapter_index {index}: the demo backbone has blocks 0..{depth - 1}"
        )
    wanted = (params.get("model") or {}).get("depth")
    if wanted is not None and int(wanted) != depth:
        raise InputError(f"model.depth {wanted}: the demo backbone (backbone.pt) has depth {depth}")
    bb = backbone_from_pretrained(pretrained, float(structure.get("drop_path_rate", 0.0)), index)
    apply_lora(bb, params["lora"])
    # Freeze like VisionTransformerAdapter._freeze_layers: only "adapter" (and LoRA's "lora_")
    # parameters train; peft froze only the layers it wrapped, so set every flag explicitly.
    for name, p in bb.named_parameters():
        p.requires_grad_(".adapter." in f".{name}" or "lora_" in name)
    return Detector(bb, num_classes, pretrained["config"]["dim"])


def param_groups(model: Detector, schedule: dict) -> list[dict]:
    """AdamW groups: backbone adapter+LoRA at schedule.lr, head at schedule.head_lr; no weight
    decay for biases, norms and scalars (OpenTAD's paramwise rule). Backbone first, head last:
    the log reads lr_backbone from group 0 and lr_det from the last group."""
    wd = float(schedule.get("weight_decay", 0.05))
    groups = []
    for prefix, lr, tag in (
        ("backbone.", float(schedule["lr"]), "backbone"),
        ("head.", float(schedule["head_lr"]), "head"),
    ):
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if name.startswith(prefix) and p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        for params, w in ((decay, wd), (no_decay, 0.0)):
            if params:
                groups.append({"params": params, "lr": lr, "weight_decay": w, "tag": tag})
    return groups


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes (frozen weights come from backbone.pt)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(state) != expected:
        raise ValueError(
            f"checkpoint does not fit this model (missing {sorted(expected - set(state))[:3]}, "
            f"unexpected {sorted(set(state) - expected)[:3]})"
        )
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)
