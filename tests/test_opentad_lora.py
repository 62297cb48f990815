"""The LoRA backbone plugin on a small ViT with upstream AdaTAD's module layout (vit_mimic.py)."""

import copy
import subprocess
import sys

import pytest
import torch
from mmengine.registry import MODELS
from mmengine.runner.checkpoint import load_state_dict as mmengine_load_state_dict
from opentad_rules import Detector, build_param_groups
from peft import LoraConfig, inject_adapter_in_model
from vit_mimic import MimicVisionTransformerAdapter

from tadsweep.opentad import lora, render

LoRAMimic = lora.lora_backbone_class(MimicVisionTransformerAdapter)
ALL = ["qkv", "proj", "fc1", "fc2"]


def video(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 8, 16, 16, generator=g)  # total_frames 8, 2x2 patches of 8


def build(r=4, alpha=8, dropout=0.0, targets=ALL, seed=0, **kw):
    torch.manual_seed(seed)
    return LoRAMimic(lora_r=r, lora_alpha=alpha, lora_dropout=dropout, lora_targets=targets, **kw)


def plain(seed=0, **kw):
    torch.manual_seed(seed)
    return MimicVisionTransformerAdapter(**kw)


def lora_names(model):
    return {n for n, _ in model.named_parameters() if ".lora_A." in n or ".lora_B." in n}


def perturb_lora_b(model, scale=0.05, only=None):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name and (only is None or only in name):
                p.copy_(torch.randn_like(p) * scale)


def test_targets_resolve_to_upstream_module_names():
    m = plain()
    names = lora.resolve_targets(m, ALL, blocks=[1])
    # mmcv FFN: fc1 is mlp.layers.0.0, fc2 is mlp.layers.1 (there is no mlp.fc1)
    assert names == [
        "blocks.1.attn.qkv",
        "blocks.1.attn.proj",
        "blocks.1.mlp.layers.0.0",
        "blocks.1.mlp.layers.1",
    ]
    with pytest.raises(ValueError, match="subset"):
        lora.resolve_targets(m, ["fc3"])
    with pytest.raises(ValueError, match="outside"):
        lora.resolve_targets(m, ALL, blocks=[7])


def test_only_adapter_and_lora_train_after_freeze():
    m = build()
    m.train()
    m(video())  # forward runs _freeze_layers(), as upstream
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    in_blocks = {n for n in trainable if n.startswith(("blocks.", "patch_embed."))}
    assert in_blocks == {n for n in in_blocks if ".adapter." in n or ".lora_" in n}
    assert lora_names(m) <= trainable
    adapters = {n for n, _ in m.named_parameters() if ".adapter." in n}
    assert adapters and adapters <= trainable  # peft's "only LoRA trainable" was undone
    # fc_norm keeps requires_grad like upstream (unused with return_feat_map; no optimizer group)
    assert trainable - in_blocks == {"fc_norm.weight", "fc_norm.bias"}
    # before the first forward the flags are upstream's (all True) plus LoRA: what DDP registers
    fresh = build()
    assert all(p.requires_grad for p in fresh.parameters())


def test_optimizer_groups_hold_adapter_and_lora_with_configured_lrs():
    params = render.reference_params("adatad_lora_v2")
    opt = render.overrides(params)["optimizer"]
    opt["backbone"].update(lr=0, weight_decay=0, exclude=["backbone"])  # from the base config
    detector = Detector(build(r=8), dim=32)
    groups = build_param_groups(detector, opt)
    assert len(groups) == 3  # adapter, lora_, head (the rest of the backbone is excluded)
    adapter_group, lora_group, head_group = groups
    assert adapter_group["lr"] == 3e-4 and lora_group["lr"] == 3e-4 and head_group["lr"] == 1e-4
    assert all(".adapter." in n for n in adapter_group["names"])
    assert all(".lora_" in n for n in lora_group["names"])
    vit = detector.backbone.model.backbone
    prefix = "model.backbone."
    assert set(lora_group["names"]) == {prefix + n for n in lora_names(vit)}
    assert len(adapter_group["names"]) == sum(
        1 for n, _ in vit.named_parameters() if "adapter" in n
    )
    grouped = {id(p) for g in groups for p in g["params"]}
    vit(video())
    for name, p in vit.named_parameters():
        if name.startswith("blocks.") and p.requires_grad:
            assert id(p) in grouped, f"{name} trains but is in no optimizer group"
    # the control arm (r == 0) keeps upstream's single adapter group
    control = render.overrides(render.reference_params("adatad_adapter_control"))["optimizer"]
    assert [g["name"] for g in control["backbone"]["custom"]] == ["adapter"]


def test_lora_is_an_exact_noop_at_init_and_loads_upstream_keys():
    base = plain().eval()
    m = build(seed=123).eval()  # different random init, then the upstream weights are loaded
    report = m.load_state_dict(base.state_dict(), strict=False)
    assert report.unexpected_keys == []
    assert set(report.missing_keys) == lora_names(m)  # only LoRA is new; base_layer keys filled
    x = video()
    assert torch.equal(base(x), m(x))


def test_pretrained_checkpoint_through_mmengine_loader():
    # BackboneWrapper loads VideoMAE weights with mmengine's load_checkpoint into the recognizer
    src = torch.nn.Module()
    src.backbone = plain(seed=5)
    dst = torch.nn.Module()
    dst.backbone = build(seed=6)
    mmengine_load_state_dict(dst, src.state_dict(), strict=False)
    x = video(1)
    assert torch.equal(src.backbone.eval()(x), dst.backbone.eval()(x))


def test_qkv_lora_is_not_bypassed_by_the_biased_attention():
    m = build(targets=["qkv"]).eval()
    x = video()
    before = m(x)
    perturb_lora_b(m)
    assert not torch.allclose(before, m(x))
    # why the plugin patches attention: plain peft on qkv is silently skipped upstream
    naive = plain().eval()
    ref = naive(x)
    inject_adapter_in_model(LoraConfig(r=4, target_modules=["blocks.0.attn.qkv"]), naive)
    perturb_lora_b(naive)
    assert torch.equal(ref, naive(x))


def test_merged_and_unmerged_agree_after_a_training_step():
    m = build(r=4, alpha=8, dropout=0.1)
    perturb_lora_b(m, 0.01)
    detector = Detector(m, dim=32)
    opt_cfg = render.overrides(render.reference_params("adatad_lora_v1"))["optimizer"]
    opt_cfg["backbone"].update(lr=0, weight_decay=0, exclude=["backbone"])
    groups = build_param_groups(detector, opt_cfg)
    for g in groups:
        g.pop("names")
        g["lr"] = 1e-2
    optimizer = torch.optim.AdamW(groups)
    m.train()
    frozen_before = {n: p.detach().clone() for n, p in m.named_parameters() if "base_layer" in n}
    lora_before = {n: p.detach().clone() for n, p in m.named_parameters() if ".lora_A." in n}
    loss = m(video()).pow(2).mean()
    loss.backward()
    optimizer.step()
    for n, p in m.named_parameters():
        if "base_layer" in n:
            assert p.grad is None and torch.equal(p, frozen_before[n])
    assert any(
        not torch.equal(p, lora_before[n]) for n, p in m.named_parameters() if n in lora_before
    )
    m.eval()
    x = video(2)
    unmerged = m(x)
    lora.set_lora_merged(m, True)
    merged = m(x)
    lora.set_lora_merged(m, False)
    assert torch.allclose(unmerged, merged, atol=1e-5, rtol=1e-4)
    assert torch.allclose(m(x), unmerged, atol=1e-6)  # unmerge: W + d - d, up to rounding


def test_lora_dropout_follows_train_mode_despite_freeze():
    m = build(dropout=0.5)
    m.train()
    m(video())  # upstream _freeze_layers() puts attn/mlp in eval mode
    drops = [d for n, d in m.named_modules() if n.endswith("lora_dropout.default")]
    assert drops and all(d.training for d in drops)
    assert not m.blocks[0].attn.training  # the frozen parts stay in eval mode
    m.eval()
    m(video())
    assert not any(d.training for d in drops)


def test_checkpoint_round_trip_and_ema_copy():
    m = build()
    perturb_lora_b(m)
    sd = m.state_dict()
    assert "blocks.0.attn.qkv.lora_A.default.weight" in sd
    assert "blocks.0.attn.qkv.base_layer.weight" in sd and "blocks.0.attn.q_bias" in sd
    other = build(seed=9)
    other.load_state_dict(sd, strict=True)  # what --resume and tools/test.py do
    x = video()
    assert torch.equal(m.eval()(x), other.eval()(x))
    ema = copy.deepcopy(m)  # OpenTAD's ModelEma deep-copies the model
    assert type(ema.blocks[0].attn) is type(m.blocks[0].attn)
    assert torch.equal(ema(x), m(x))


def test_init_weights_keeps_lora_a_noop():
    m = build()
    m.init_weights()  # re-initialises every nn.Linear, lora_B included, then zeroes it again
    assert all(torch.count_nonzero(p) == 0 for n, p in m.named_parameters() if ".lora_B." in n)


def test_registered_lazily_without_opentad_or_peft():
    assert MODELS.get(lora.REGISTERED_NAME) is lora.build_lora_backbone
    code = (
        "import sys, tadsweep.opentad.lora as l; "
        "from mmengine.registry import MODELS; "
        "assert MODELS.get(l.REGISTERED_NAME) is l.build_lora_backbone; "
        "assert 'peft' not in sys.modules and 'opentad' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
    with pytest.raises(ModuleNotFoundError, match="opentad"):
        lora.build_lora_backbone(lora_r=4)


def test_rank_zero_is_rejected():
    with pytest.raises(ValueError, match="rank"):
        build(r=0)
