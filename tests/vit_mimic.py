"""A tiny stand-in for OpenTAD's `VisionTransformerAdapter` (models/backbones/vit_adapter.py).

Written for these tests (not upstream code). It keeps what the LoRA plugin depends on: the module
names (`patch_embed.projection`, `blocks.{i}.norm1/attn/drop_path/norm2/mlp/adapter`,
`attn.qkv` without bias plus `q_bias`/`v_bias` fed through `F.linear(x, self.qkv.weight, bias)`,
`attn.proj`, the mmcv-FFN layout `mlp.layers.0.0` / `mlp.layers.1`, `fc_norm`), activation
checkpointing, adapters only at `adapter_index`, stochastic depth, and `_freeze_layers()` that
freezes every block child except `adapter` and `drop_path` (and sets them to eval mode).
"""

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn


class DropPath(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = (torch.rand(x.shape[0], 1, 1, device=x.device) >= self.p).to(x.dtype)
        return x * keep / (1 - self.p)


class Attention(nn.Module):
    def __init__(self, dim, heads, qkv_bias=True):
        super().__init__()
        self.embed_dims, self.num_heads = dim, heads
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.randn(dim) * 0.02)
            self.v_bias = nn.Parameter(torch.randn(dim) * 0.02)
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x):
        b, n, _ = x.shape
        if hasattr(self, "q_bias"):  # the upstream path that bypasses self.qkv's forward
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
            qkv = F.linear(input=x, weight=self.qkv.weight, bias=bias)
        else:
            qkv = self.qkv(x)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, -1)))


class FFN(nn.Module):
    """mmcv FFN(num_fcs=2, add_identity=False): layers = [[fc1, act, drop], fc2, drop]."""

    def __init__(self, dim, hidden):
        super().__init__()
        first = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0))
        self.layers = nn.Sequential(first, nn.Linear(hidden, dim), nn.Dropout(0.0))

    def forward(self, x):
        return self.layers(x)


class Adapter(nn.Module):
    def __init__(self, dim, temporal_size, ratio=0.25):
        super().__init__()
        hidden = int(dim * ratio)
        self.temporal_size = temporal_size
        self.down_proj = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.dwconv = nn.Conv1d(hidden, hidden, 3, padding=1, groups=hidden)
        self.conv = nn.Conv1d(hidden, hidden, 1)
        self.up_proj = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up_proj.weight)
        nn.init.zeros_(self.up_proj.bias)
        self.gamma = nn.Parameter(torch.ones(1))

    def forward(self, x, h, w):
        inputs = x
        x = self.act(self.down_proj(x))
        b, n, c = x.shape
        t = x.reshape(-1, self.temporal_size, h, w, c).permute(0, 2, 3, 4, 1).flatten(0, 2)
        t = self.conv(self.dwconv(t))
        t = t.unflatten(0, (-1, h, w)).permute(0, 4, 1, 2, 3).reshape(b, n, c)
        return self.up_proj(x + t) * self.gamma + inputs


class Block(nn.Module):
    def __init__(self, dim, heads, drop_path, use_adapter, temporal_size, with_cp):
        super().__init__()
        self.with_cp, self.use_adapter = with_cp, use_adapter
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FFN(dim, dim * 4)
        if use_adapter:
            self.adapter = Adapter(dim, temporal_size)

    def forward(self, x, h, w):
        def inner(x):
            x = x + self.drop_path(self.attn(self.norm1(x)))
            x = x + self.drop_path(self.mlp(self.norm2(x)))
            return self.adapter(x, h, w) if self.use_adapter else x

        if self.with_cp and x.requires_grad:
            return cp.checkpoint(inner, x, use_reentrant=False)
        return inner(x)


class PatchEmbed(nn.Module):
    def __init__(self, dim, patch, tubelet):
        super().__init__()
        size = (tubelet, patch, patch)
        self.projection = nn.Conv3d(3, dim, kernel_size=size, stride=size)

    def forward(self, x):
        return self.projection(x).flatten(2).transpose(1, 2)


class MimicVisionTransformerAdapter(nn.Module):
    def __init__(
        self,
        embed_dims=32,
        depth=3,
        num_heads=2,
        patch_size=8,
        tubelet_size=2,
        total_frames=8,
        drop_path_rate=0.1,
        adapter_index=(0, 1, 2),
        with_cp=True,
        **kwargs,  # upstream also swallows unknown kwargs
    ):
        super().__init__()
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(embed_dims, patch_size, tubelet_size)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(
                embed_dims,
                num_heads,
                dpr[i],
                i in adapter_index,
                total_frames // tubelet_size,
                with_cp,
            )
            for i in range(depth)
        )
        self.norm = nn.Identity()
        self.fc_norm = nn.LayerNorm(embed_dims, eps=1e-6)  # unused with return_feat_map

    def init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)

    def forward(self, x):
        self._freeze_layers()
        b, _, _, h, w = x.shape
        h, w = h // self.patch_size, w // self.patch_size
        x = self.patch_embed(x)
        for blk in self.blocks:
            x = blk(x, h, w)
        return self.norm(x)

    def _freeze_layers(self):
        self.patch_embed.eval()
        for p in self.patch_embed.parameters():
            p.requires_grad = False
        for block in self.blocks:
            for name, child in block.named_children():
                if "adapter" not in name and name != "drop_path":
                    child.eval()
                    for p in child.parameters():
                        p.requires_grad = False
