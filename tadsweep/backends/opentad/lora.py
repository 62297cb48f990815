"""LoRA (peft) on the frozen ViT blocks of OpenTAD's AdaTAD `VisionTransformerAdapter`: the MODELS
backbone `VisionTransformerAdapterLoRA`, loaded by configs through custom_imports (OpenTAD and peft
are imported only when it is built). Each piece keeps LoRA from silently training nothing."""

import functools

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import nn

from tadsweep.plan.axes.lora import OPTIMIZER_NAME, REGISTERED_NAME, TARGET_ALIASES

ADAPTER_NAME = "default"  # peft adapter name; must not contain "adapter" (optimizer name match)


def resolve_targets(backbone: nn.Module, targets, blocks=None) -> list[str]:
    """Full module names (`blocks.{i}.attn.qkv`, ...) for the aliases in `targets`."""
    unknown = sorted(set(targets) - set(TARGET_ALIASES))
    if unknown or not targets:
        raise ValueError(f"LoRA targets must be a non-empty subset of {sorted(TARGET_ALIASES)}")
    depth = len(backbone.blocks)
    indices = range(depth) if blocks is None else list(blocks)
    if any(not 0 <= i < depth for i in indices):
        raise ValueError(f"LoRA block indices {list(indices)} outside 0..{depth - 1}")
    names = []
    for i in indices:
        block = backbone.blocks[i]
        for alias in targets:
            for path in TARGET_ALIASES[alias]:
                try:
                    module = block.get_submodule(path)
                except AttributeError:
                    continue
                if isinstance(module, nn.Linear):
                    names.append(f"blocks.{i}.{path}")
                    break
            else:
                raise ValueError(f"block {i} has no Linear for LoRA target {alias!r}")
    return names


def _lora_layers(backbone: nn.Module) -> list[nn.Module]:
    return [backbone.get_submodule(name) for name in backbone._lora_layer_names]


def _lora_delta(layer, x):
    """The LoRA term peft's `lora.Linear.forward` adds to the base output (None when merged or
    disabled), for where upstream bypasses the layer's forward."""
    if layer.disable_adapters or layer.merged:
        return None
    delta = None
    for name in layer.active_adapters:
        if name not in layer.lora_A:
            continue
        lora_a, lora_b = layer.lora_A[name], layer.lora_B[name]
        term = lora_b(lora_a(layer.lora_dropout[name](x.to(lora_a.weight.dtype))))
        term = term * layer.scaling[name]
        delta = term if delta is None else delta + term
    return delta


def _biased_qkv_attention_forward(self, x):
    # Same computation as upstream Attention.forward (q/v bias, zero k bias, SDPA with
    # dropout_p=attn_drop.p), except that the qkv projection also adds the LoRA term.
    batch, tokens, _ = x.shape
    k_bias = torch.zeros_like(self.v_bias, requires_grad=False)
    bias = torch.cat((self.q_bias, k_bias, self.v_bias))
    qkv = F.linear(input=x, weight=self.qkv.get_base_layer().weight, bias=bias)
    delta = _lora_delta(self.qkv, x)
    if delta is not None:
        qkv = qkv + delta.to(qkv.dtype)
    qkv = qkv.reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p)
    x = x.transpose(1, 2).reshape(batch, tokens, -1)
    return self.proj_drop(self.proj(x))


@functools.cache
def _lora_attention_class(base: type) -> type:
    body = {"forward": _biased_qkv_attention_forward, "__module__": __name__}
    return type(f"LoRA{base.__name__}", (base,), body)


def _remap_pretrained_keys(module, state_dict, prefix, *args):
    # `<layer>.weight` (upstream/VideoMAE checkpoints) -> `<layer>.base_layer.weight` (peft)
    for name in module._lora_layer_names:
        for suffix in ("weight", "bias"):
            old = f"{prefix}{name}.{suffix}"
            new = f"{prefix}{name}.base_layer.{suffix}"
            if old in state_dict and new not in state_dict:
                state_dict[new] = state_dict.pop(old)


def apply_lora(backbone: nn.Module, r, alpha, dropout, targets, blocks=None) -> list[str]:
    """Inject LoRA (peft) into `backbone` in place; return the wrapped module names."""
    from peft import LoraConfig, inject_adapter_in_model

    if int(r) <= 0:
        raise ValueError("LoRA rank r must be positive (r == 0: use VisionTransformerAdapter)")
    names = resolve_targets(backbone, targets, blocks)
    trainable = {n: p.requires_grad for n, p in backbone.named_parameters()}
    config = LoraConfig(
        r=int(r),
        lora_alpha=float(alpha),
        lora_dropout=float(dropout),
        target_modules=names,
        bias="none",
        init_lora_weights=True,  # A: Kaiming-uniform, B: zeros -> exact no-op at init
    )
    inject_adapter_in_model(config, backbone, adapter_name=ADAPTER_NAME)
    # peft froze everything but LoRA; restore upstream's flags (the TIA adapters must train, and
    # DDP registers exactly the params that require grad when OpenTAD wraps the model).
    for name, param in backbone.named_parameters():
        if OPTIMIZER_NAME in name:
            param.requires_grad_(True)
        else:
            original = name.replace(".base_layer.", ".")
            param.requires_grad_(trainable.get(original, trainable.get(name, True)))
    backbone._lora_layer_names = names
    # with q/v bias, upstream Attention calls F.linear(x, qkv.weight, bias), bypassing peft's qkv
    for name in names:
        if name.endswith(".qkv"):
            attn = backbone.get_submodule(name.rsplit(".", 1)[0])
            if hasattr(attn, "q_bias"):
                attn.__class__ = _lora_attention_class(type(attn))
    backbone._register_load_state_dict_pre_hook(_remap_pretrained_keys, with_module=True)
    return names


@functools.cache
def lora_backbone_class(base: type) -> type:
    """Subclass of an AdaTAD ViT class (`VisionTransformerAdapter` or a look-alike) with LoRA."""

    def __init__(
        self,
        *args,
        lora_r=16,
        lora_alpha=32,
        lora_dropout=0.1,
        lora_targets=("qkv", "proj", "fc1", "fc2"),
        lora_blocks=None,
        **kwargs,
    ):
        base.__init__(self, *args, **kwargs)
        apply_lora(self, lora_r, lora_alpha, lora_dropout, lora_targets, lora_blocks)

    def _freeze_layers(self):
        # upstream's (every forward) freezes all but the adapters and puts attn/mlp in eval mode
        base._freeze_layers(self)
        for layer in _lora_layers(self):
            layer.lora_A.requires_grad_(True)
            layer.lora_B.requires_grad_(True)
            for drop in layer.lora_dropout.values():
                drop.train(self.training)

    def init_weights(self):
        base.init_weights(self)
        # mmengine's init_cfg (TruncNormal on every Linear) hit lora_B too: LoRA a no-op again
        with torch.no_grad():
            for layer in _lora_layers(self):
                for lora_b in layer.lora_B.values():
                    lora_b.weight.zero_()

    body = dict(__init__=__init__, _freeze_layers=_freeze_layers, init_weights=init_weights)
    return type(f"{base.__name__}LoRA", (base,), dict(body, __module__=__name__))


def build_lora_backbone(**kwargs):
    """The registered builder: upstream VisionTransformerAdapter with LoRA (imports OpenTAD)."""
    from opentad.models.backbones.vit_adapter import VisionTransformerAdapter

    return lora_backbone_class(VisionTransformerAdapter)(**kwargs)


if REGISTERED_NAME not in MODELS.module_dict:
    MODELS.register_module(name=REGISTERED_NAME, module=build_lora_backbone)
