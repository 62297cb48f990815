"""The LoRA backbone plugin (tadsweep/opentad/lora.py) on upstream OpenTAD's real AdaTAD code.

Everything runs upstream code from $OPENTAD_ROOT in this process: `VisionTransformerAdapter` (its
module names, the biased attention that bypasses `qkv.forward`, `_freeze_layers()` on every
forward, activation checkpointing, mmengine's init), the detector that
`opentad.models.build_detector` builds from a rendered config (BackboneWrapper, which loads the
VideoMAE weights with mmengine's `load_checkpoint`), `opentad.cores.optimizer.build_optimizer`,
`opentad.utils.ModelEma` and `save_checkpoint`. Sizes are those of configs/smoke/adatad_tiny.py:
embed 32, 2 heads, depth 12, 32x32 input, 64-frame windows fed to the ViT as 4 chunks of 16.
"""

import contextlib
import copy
import logging
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import opentad_site
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS
from mmengine.runner import load_checkpoint
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from tadsweep.backends.opentad import lora, render

pytestmark = pytest.mark.opentad

ALL = ["qkv", "proj", "fc1", "fc2"]
WINDOW = 64  # frames per window (total_frames of the smoke ViT)
CHUNK = 16  # frames per ViT call (num_frames); the BackboneWrapper splits a window into chunks


class Upstream(SimpleNamespace):
    """Upstream's classes and functions, the smoke ViT's settings and rendered configs."""

    def vit_kwargs(self, **changes):
        return {**copy.deepcopy(self.vit_cfg), **changes}

    def lora_vit(self, seed=0, r=4, alpha=8, dropout=0.0, targets=ALL, **changes):
        """The registered backbone, built the way mmaction's Recognizer3D builds it."""
        torch.manual_seed(seed)
        cfg = dict(type=lora.REGISTERED_NAME, **self.vit_kwargs(**changes))
        cfg.update(lora_r=r, lora_alpha=alpha, lora_dropout=dropout, lora_targets=targets)
        return MODELS.build(cfg)

    def plain_vit(self, seed=0, **changes):
        torch.manual_seed(seed)
        return self.VisionTransformerAdapter(**self.vit_kwargs(**changes))

    def config(self, name, tmp_path, pretrain=None):
        """A run's config as the workflow renders it (child of the smoke overlay), loaded."""
        data = {"pretrain": pretrain} if pretrain else None
        path = tmp_path / f"{name}.py"
        path.write_text(render.render_config(render.reference_params(name), self.base, data=data))
        with render.opentad_root_env(self.root):
            cfg = Config.fromfile(str(path))  # custom_imports: the plugin, as tools/train.py
        if not pretrain:
            cfg.model.backbone.custom.pretrain = None  # upstream's VideoMAE file is not here
        return cfg

    def detector(self, cfg, seed=0):
        torch.manual_seed(seed)
        return self.build_detector(copy.deepcopy(cfg.model))

    def optimizer(self, cfg, model):
        optimizer_cfg = copy.deepcopy(cfg.to_dict()["optimizer"])
        return self.build_optimizer(optimizer_cfg, model, logging.getLogger(__name__))


class DDPLike(nn.Module):
    """What OpenTAD's tools pass to build_optimizer, ModelEma and save_checkpoint: the detector
    as `.module` (DistributedDataParallel, whose state_dict keys start with `module.`)."""

    def __init__(self, detector):
        super().__init__()
        self.module = detector

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


@pytest.fixture(scope="module")
def tad(opentad_root):
    with render.opentad_root_env(opentad_root):
        smoke = Config.fromfile(str(opentad_site.SMOKE), import_custom_modules=False)
    vit_cfg = smoke.to_dict()["model"]["backbone"]["backbone"]
    assert vit_cfg.pop("type") == "VisionTransformerAdapter"
    with opentad_site.importable(opentad_root):
        import opentad.datasets  # noqa: F401  (registers the BackboneWrapper's transforms)
        from opentad.cores.optimizer import build_optimizer
        from opentad.models import build_detector
        from opentad.models.backbones.vit_adapter import Attention, VisionTransformerAdapter
        from opentad.utils import ModelEma, save_checkpoint

        yield Upstream(
            root=opentad_root,
            base=render.load_base(str(opentad_root), str(opentad_site.SMOKE)),
            vit_cfg=vit_cfg,
            Attention=Attention,
            VisionTransformerAdapter=VisionTransformerAdapter,
            build_detector=build_detector,
            build_optimizer=build_optimizer,
            ModelEma=ModelEma,
            save_checkpoint=save_checkpoint,
        )


def chunks(seed=0):
    """One window as the ViT sees it: 4 chunks of 16 frames (the adapters' temporal conv spans
    the window, so the chunk count must be WINDOW // CHUNK)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(WINDOW // CHUNK, 3, CHUNK, 32, 32, generator=g)


def batch(seed=0):
    """A training batch as OpenTAD's dataloader yields it: one 64-frame window, two actions."""
    g = torch.Generator().manual_seed(seed)
    return dict(
        inputs=torch.rand(1, 1, 3, WINDOW, 32, 32, generator=g) * 255,
        masks=torch.ones(1, WINDOW, dtype=torch.bool),
        metas=[dict(video_name="video_validation_0000001")],
        gt_segments=[torch.tensor([[5.0, 20.0], [30.0, 50.0]])],
        gt_labels=[torch.tensor([1, 3])],
    )


def lora_names(model):
    return {n for n, _ in model.named_parameters() if ".lora_A." in n or ".lora_B." in n}


def upstream_name(name):
    return name.replace(".base_layer.", ".")


def perturb_lora_b(model, scale=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


@contextlib.contextmanager
def lora_off(model):
    """LoRA B zeroed for a while: the model as if it had no LoRA."""
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_B." in n}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in saved:
                p.zero_()
    try:
        yield
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in saved:
                    p.copy_(saved[name])


def plain_copy(tad, lora_model):
    """Upstream's VisionTransformerAdapter holding the LoRA model's base and adapter weights."""
    plain = tad.plain_vit(seed=99)
    state = {upstream_name(n): v for n, v in lora_model.state_dict().items() if ".lora_" not in n}
    plain.load_state_dict(state, strict=True)
    return plain


def features(model, b):
    """The BackboneWrapper's output for a batch: what the detector's projection receives."""
    with torch.no_grad():
        return model.module.backbone(b["inputs"], b["masks"])


# --- the ViT alone ------------------------------------------------------------------------------


def test_targets_resolve_to_upstream_module_names(tad):
    m = tad.plain_vit()
    names = lora.resolve_targets(m, ALL, blocks=[1])
    # mmcv FFN: fc1 is mlp.layers.0.0, fc2 is mlp.layers.1 (there is no mlp.fc1)
    assert names == [
        "blocks.1.attn.qkv",
        "blocks.1.attn.proj",
        "blocks.1.mlp.layers.0.0",
        "blocks.1.mlp.layers.1",
    ]
    block = m.blocks[1]
    linears = [block.attn.qkv, block.attn.proj, block.mlp.layers[0][0], block.mlp.layers[1]]
    assert [m.get_submodule(n) for n in names] == linears
    assert all(isinstance(x, nn.Linear) for x in linears)
    assert type(linears[2]) is not nn.Linear  # mmcv's Linear subclass: peft must take it
    with pytest.raises(ValueError, match="subset"):
        lora.resolve_targets(m, ["fc3"])
    with pytest.raises(ValueError, match="outside"):
        lora.resolve_targets(m, ALL, blocks=[12])
    # the built backbone wraps exactly those layers in all 12 blocks, nothing else
    vit = tad.lora_vit()
    wrapped = {n for n, x in vit.named_modules() if isinstance(x, LoraLayer)}
    assert wrapped == set(lora.resolve_targets(m, ALL)) and len(wrapped) == 4 * 12


def test_only_adapters_and_lora_train_after_upstream_freeze(tad):
    m, plain = tad.lora_vit(), tad.plain_vit()
    # before the first forward: upstream's flags (all True) plus LoRA -- what DDP registers
    assert all(p.requires_grad for p in m.parameters())
    m.train()
    plain.train()
    m(chunks())  # upstream forward runs _freeze_layers()
    plain(chunks())
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    lora_params = lora_names(m)
    assert len(lora_params) == 2 * 4 * 12 and lora_params <= trainable
    in_blocks = {n for n in trainable if n.startswith(("blocks.", "patch_embed."))}
    assert in_blocks == {n for n in in_blocks if ".adapter." in n or ".lora_" in n}
    adapters = {n for n, _ in m.named_parameters() if ".adapter." in n}
    assert adapters and adapters <= trainable  # peft's "only LoRA trainable" was undone
    # every non-LoRA flag is upstream's own (fc_norm keeps requires_grad there too; it is unused
    # with return_feat_map and in no optimizer group)
    flags = {
        upstream_name(n): p.requires_grad for n, p in m.named_parameters() if ".lora_" not in n
    }
    assert flags == {n: p.requires_grad for n, p in plain.named_parameters()}
    assert trainable - in_blocks == {"fc_norm.weight", "fc_norm.bias"}


def test_lora_is_an_exact_noop_at_init(tad):
    plain = tad.plain_vit(seed=1).eval()
    m = tad.lora_vit(seed=123).eval()  # different random init, then the upstream weights load
    report = m.load_state_dict(plain.state_dict(), strict=False)
    assert report.unexpected_keys == []
    assert set(report.missing_keys) == lora_names(m)  # only LoRA is new; base_layer keys filled
    x = chunks()
    assert torch.equal(plain(x), m(x))


def test_qkv_lora_is_not_bypassed_by_upstream_biased_attention(tad):
    m = tad.lora_vit(targets=["qkv"], r=4, alpha=8).eval()
    attn = m.blocks[0].attn
    assert isinstance(attn, tad.Attention) and type(attn) is not tad.Attention
    with torch.no_grad():  # VideoMAE's q/v biases are not zero
        for name, p in m.named_parameters():
            if name.endswith(("q_bias", "v_bias")):
                p.normal_(0, 0.1)
    perturb_lora_b(m)
    x = chunks()
    out = m(x)
    # upstream's own Attention.forward with the LoRA update folded into qkv.weight
    folded = plain_copy(tad, m).eval()
    with torch.no_grad():
        for i, block in enumerate(folded.blocks):
            layer = m.blocks[i].attn.qkv
            delta = layer.lora_B["default"].weight @ layer.lora_A["default"].weight
            block.attn.qkv.weight += delta * layer.scaling["default"]
    assert torch.allclose(out, folded(x), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out, plain_copy(tad, m).eval()(x), atol=1e-3)
    # why the plugin patches attention: plain peft on upstream's qkv is silently skipped
    naive = tad.plain_vit().eval()
    ref = naive(x)
    inject_adapter_in_model(LoraConfig(r=4, target_modules=["blocks.0.attn.qkv"]), naive)
    perturb_lora_b(naive)
    assert torch.equal(ref, naive(x))
    # attentions whose qkv has no LoRA keep upstream's class
    proj_only = tad.lora_vit(targets=["proj"])
    assert all(type(b.attn) is tad.Attention for b in proj_only.blocks)


def test_activation_checkpointing_still_trains_lora(tad, monkeypatch):
    assert tad.vit_cfg["with_cp"] is True  # upstream's AdaTAD default, kept by the overlay
    m = tad.lora_vit(r=4, dropout=0.1)
    perturb_lora_b(m)  # with B == 0, A gets no gradient at all
    m.train()
    calls = []
    real = torch.utils.checkpoint.checkpoint  # upstream calls cp.checkpoint(_inner_forward, x)
    monkeypatch.setattr(
        torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k)
    )

    def grads():
        m.zero_grad()
        torch.manual_seed(7)  # drop_path and lora_dropout draw the same masks in both runs
        m(chunks()).pow(2).mean().backward()
        return {n: p.grad.clone() for n, p in m.named_parameters() if ".lora_" in n}

    checkpointed = grads()
    # block 0 sees the frozen patch embedding (no grad), so upstream checkpoints blocks 1..11
    assert len(calls) == 11
    assert set(checkpointed) == lora_names(m)
    assert all(torch.count_nonzero(g) > 0 for g in checkpointed.values())
    for block in m.blocks:
        block.with_cp = False
    plain = grads()
    assert len(calls) == 11
    for name, g in checkpointed.items():
        assert torch.allclose(g, plain[name], rtol=1e-5, atol=1e-7), name


# qkv: the plugin's own LoRA term in the patched attention; the others: peft's Linear.forward
@pytest.mark.parametrize("targets", [["qkv"], ["proj", "fc1", "fc2"]])
def test_lora_dropout_follows_train_mode_despite_upstream_freeze(tad, targets):
    # no stochastic depth and upstream's dropouts are 0: lora_dropout is the only randomness
    m = tad.lora_vit(dropout=0.5, targets=targets, drop_path_rate=0.0)
    perturb_lora_b(m)
    x = chunks()
    m.train()
    torch.manual_seed(1)
    first = m(x)  # upstream _freeze_layers() puts attn/mlp in eval mode
    drops = [d for n, d in m.named_modules() if n.endswith("lora_dropout.default")]
    assert len(drops) == len(targets) * 12 and all(d.training for d in drops)
    assert not m.blocks[0].attn.training and not m.blocks[0].mlp.training  # frozen parts
    torch.manual_seed(2)
    assert not torch.allclose(first, m(x))  # dropout really acts
    m.eval()
    assert torch.equal(m(x), m(x))
    assert not any(d.training for d in drops)


def test_init_weights_keeps_lora_a_noop(tad):
    # upstream's init (mmengine TruncNormal on every Linear) reaches lora_B too ...
    bare = tad.lora_vit(seed=3)
    tad.VisionTransformerAdapter.init_weights(bare)
    assert any(torch.count_nonzero(p) for n, p in bare.named_parameters() if ".lora_B." in n)
    # ... the plugin's init_weights zeroes it again: an exact no-op on the initialised weights
    m = tad.lora_vit(seed=3)
    m.init_weights()
    assert all(torch.count_nonzero(p) == 0 for n, p in m.named_parameters() if ".lora_B." in n)
    x = chunks()
    assert torch.equal(m.eval()(x), plain_copy(tad, m).eval()(x))


def test_registered_lazily_without_opentad_or_peft(tad):
    built = MODELS.build(dict(type=lora.REGISTERED_NAME, **tad.vit_kwargs()))
    assert type(built).__bases__ == (tad.VisionTransformerAdapter,)
    code = textwrap.dedent(
        """
        import sys
        import tadsweep.backends.opentad.lora as plugin
        from mmengine.registry import MODELS

        assert MODELS.get(plugin.REGISTERED_NAME) is plugin.build_lora_backbone
        assert "peft" not in sys.modules and "opentad" not in sys.modules
        try:
            plugin.build_lora_backbone(lora_r=4)
        except ModuleNotFoundError as e:  # OpenTAD is imported only when the backbone is built
            assert e.name == "opentad", e
        else:
            raise AssertionError("built without OpenTAD")
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no checkout on the path
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "ok"


@pytest.mark.parametrize("r", [0, -4])
def test_rank_zero_is_rejected(tad, r):
    with pytest.raises(ValueError, match="rank"):
        tad.lora_vit(r=r)


# --- the whole detector: build_detector, build_optimizer, ModelEma, save_checkpoint ------------


def test_optimizer_groups_from_upstream_build_optimizer(tad, tmp_path):
    cfg = tad.config("adatad_lora_v2", tmp_path)  # lr 3e-4 (adapter and LoRA), head 1e-4
    model = DDPLike(tad.detector(cfg))
    vit = model.module.backbone.model.backbone
    assert type(vit).__bases__ == (tad.VisionTransformerAdapter,)
    names = {id(p): n for n, p in model.module.named_parameters()}
    groups = tad.optimizer(cfg, model).param_groups
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [
        (3e-4, 0.05),  # custom "adapter"
        (3e-4, 0.05),  # custom "lora_"
        (1e-4, 0.05),  # ActionFormer head, decayed
        (1e-4, 0.0),  # ActionFormer head, not decayed
    ]
    prefix = "backbone.model.backbone."
    adapter_group = {names[id(p)] for p in groups[0]["params"]}
    lora_group = {names[id(p)] for p in groups[1]["params"]}
    assert adapter_group == {prefix + n for n, _ in vit.named_parameters() if ".adapter." in n}
    assert lora_group == {prefix + n for n in lora_names(vit)} and len(lora_group) == 96
    head = {names[id(p)] for g in groups[2:] for p in g["params"]}
    assert head and not any(n.startswith("backbone.") for n in head)
    # nothing frozen is optimised, and every backbone parameter that trains is (but fc_norm)
    model.train()
    model.module.backbone(batch()["inputs"], batch()["masks"])  # runs _freeze_layers()
    grouped = {id(p) for g in groups for p in g["params"]}
    assert all(p.requires_grad for g in groups for p in g["params"])
    ungrouped = {n for n, p in model.module.named_parameters() if p.requires_grad} - {
        names[i] for i in grouped
    }
    assert ungrouped == {prefix + "fc_norm.weight", prefix + "fc_norm.bias"}
    # the control arm (r == 0) is upstream's backbone and upstream's single adapter group
    control_cfg = tad.config("adatad_adapter_control", tmp_path)
    control = DDPLike(tad.detector(control_cfg))
    assert type(control.module.backbone.model.backbone) is tad.VisionTransformerAdapter
    control_groups = tad.optimizer(control_cfg, control).param_groups
    assert len(control_groups) == 3 and control_groups[0]["lr"] == 2e-4
    assert not lora_names(control)


def test_pretrained_videomae_keys_load_through_backbone_wrapper(tad, tmp_path):
    ckpt = opentad_site.make_pretrained(tmp_path / "vit-tiny.pth", tad.root)
    state = torch.load(ckpt, map_location="cpu")["state_dict"]
    assert "backbone.blocks.0.attn.qkv.weight" in state
    assert "backbone.blocks.0.mlp.layers.0.0.weight" in state
    # BackboneWrapper: load_checkpoint(recognizer, custom.pretrain) -- mmengine's real loader
    cfg = tad.config("adatad_lora_v2", tmp_path, pretrain=ckpt)
    vit = tad.detector(cfg, seed=5).backbone.model.backbone
    loaded = vit.state_dict()
    wrapped = set(vit._lora_layer_names)
    for key, value in state.items():
        if not key.startswith("backbone."):
            continue  # the Kinetics cls_head
        name = key.removeprefix("backbone.")
        layer, _, suffix = name.rpartition(".")
        target = f"{layer}.base_layer.{suffix}" if layer in wrapped else name
        assert torch.equal(loaded[target], value), f"{key} did not load into {target}"
    # upstream's plain ViT with the same pretrained weights (and adapters) computes the same
    plain = tad.plain_vit(seed=6)
    load_checkpoint(plain, str(ckpt), map_location="cpu", revise_keys=[(r"^backbone\.", "")])
    adapters = {k: v for k, v in loaded.items() if ".adapter." in k}
    plain.load_state_dict(adapters, strict=False)
    x = chunks(1)
    assert torch.equal(plain.eval()(x), vit.eval()(x))


@pytest.fixture(scope="module")
def trained(tad, tmp_path_factory):
    """The v1 detector after two training steps as tools/train.py takes them: DDP-wrapped,
    upstream's optimizer, ModelEma made before training and updated after each step."""
    cfg = tad.config("adatad_lora_v1", tmp_path_factory.mktemp("v1"))
    model = DDPLike(tad.detector(cfg))
    ema = tad.ModelEma(model)
    optimizer = tad.optimizer(cfg, model)
    for group in optimizer.param_groups:
        group["lr"] = 1e-2  # big steps: what LoRA learns stands far above the tolerances
    vit = model.module.backbone.model.backbone
    frozen = {n: p.detach().clone() for n, p in vit.named_parameters() if ".base_layer." in n}
    grads, lora_b = [], []
    model.train()
    torch.manual_seed(0)
    for step in range(2):
        optimizer.zero_grad()
        model(**batch(step), return_loss=True)["cost"].backward()
        grads.append(
            {n: p.grad if p.grad is None else p.grad.clone() for n, p in vit.named_parameters()}
        )
        optimizer.step()
        ema.update(model)
        lora_b.append({n: p.detach().clone() for n, p in vit.named_parameters() if ".lora_B." in n})
    return SimpleNamespace(
        cfg=cfg, model=model, ema=ema, optimizer=optimizer, vit=vit, frozen=frozen, grads=grads,
        lora_b=lora_b,
    )  # fmt: skip


def test_detector_step_trains_lora_b_first_then_a(trained):
    first, second = trained.grads
    names_a = {n for n in first if ".lora_A." in n}
    names_b = {n for n in first if ".lora_B." in n}
    assert len(names_a) == len(names_b) == 4 * 12
    # step 1: B starts at zero, so only B gets a gradient (A's is exactly zero), in every layer
    assert all(first[n] is not None and torch.count_nonzero(first[n]) > 0 for n in names_b)
    assert all(first[n] is not None and torch.count_nonzero(first[n]) == 0 for n in names_a)
    # after one step B is non-zero and A learns too
    assert all(torch.count_nonzero(trained.lora_b[0][n]) > 0 for n in names_b)
    assert all(torch.count_nonzero(second[n]) > 0 for n in names_a)
    # the adapters train; the pretrained weights get no gradient and stay as they were
    assert any(torch.count_nonzero(first[n]) > 0 for n in first if ".adapter." in n)
    for grads in (first, second):
        frozen = [n for n in grads if ".base_layer." in n or n.startswith("patch_embed.")]
        assert frozen and all(grads[n] is None for n in frozen)
    vit = dict(trained.vit.named_parameters())
    assert all(torch.equal(vit[n], value) for n, value in trained.frozen.items())


def test_what_lora_learnt_is_visible_after_training(trained):
    model, vit = trained.model, trained.vit
    model.eval()
    b = batch(5)
    trained_features = features(model, b)
    with lora_off(vit):
        without = features(model, b)
    assert (trained_features - without).abs().max() > 100 * 1e-5


def test_checkpoint_round_trip_and_ema(trained, tad, tmp_path):
    model, ema = trained.model, trained.ema
    # ModelEma zips state_dict values by position; each LoRA B got its own running mean
    d = ema.decay
    ema_vit = ema.module.module.backbone.model.backbone
    assert type(ema_vit.blocks[0].attn) is type(trained.vit.blocks[0].attn)
    ema_state = ema_vit.state_dict()
    for name, b1 in trained.lora_b[0].items():
        expected = d * (1 - d) * b1 + (1 - d) * trained.lora_b[1][name]
        assert torch.allclose(ema_state[name], expected, atol=1e-8), name
    # upstream's save_checkpoint, then what --resume and tools/test.py (EMA) load, strictly
    scheduler = SimpleNamespace(state_dict=dict)
    tad.save_checkpoint(model, ema, trained.optimizer, scheduler, 1, work_dir=str(tmp_path))
    saved = torch.load(tmp_path / "checkpoint" / "epoch_1.pth", map_location="cpu")
    prefix = "module.backbone.model.backbone.blocks.0.attn."
    for key in ("qkv.lora_A.default.weight", "qkv.base_layer.weight", "q_bias"):
        assert prefix + key in saved["state_dict"] and prefix + key in saved["state_dict_ema"]
    resumed = DDPLike(tad.detector(trained.cfg, seed=9))
    resumed.load_state_dict(saved["state_dict"])
    tad.optimizer(trained.cfg, resumed).load_state_dict(saved["optimizer"])
    b = batch(6)
    model.eval()
    assert torch.equal(features(resumed.eval(), b), features(model, b))
    tested = DDPLike(tad.detector(trained.cfg, seed=10))
    tested.load_state_dict(saved["state_dict_ema"])
    assert torch.equal(features(tested.eval(), b), features(ema.module, b))
    ema.set(model)  # the deep copy runs the same computation as the model it copies
    assert torch.equal(features(ema.module, b), features(model, b))
