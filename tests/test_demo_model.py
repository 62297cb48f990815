"""LoRA and adapter wiring of the demo detector (peft inside a frozen backbone)."""

import copy

import pytest
import torch
from demo_helpers import make_params, small_env
from peft.tuners.lora import LoraLayer

from tadsweep.backends.demo import model as M
from tadsweep.backends.demo.detect import load_checkpoint
from tadsweep.backends.demo.loss import detection_loss
from tadsweep.errors import InputError


@pytest.fixture(scope="module")
def pretrained():
    _, backbone = small_env()
    return load_checkpoint(backbone)


def build(pretrained, **overrides):
    torch.manual_seed(0)
    return M.build_detector(pretrained, make_params(**overrides), num_classes=5)


def test_only_adapters_lora_and_head_train(pretrained):
    model = build(pretrained, **{"structure.adapter_index": [1, 3]})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert {n for n, _ in model.named_parameters() if n.startswith("head.")} <= trainable
    for name in trainable - {n for n in trainable if n.startswith("head.")}:
        assert "lora_" in name or ".adapter." in name, name
    # adapters exist only where adapter_index says
    assert {n.split(".")[2] for n in trainable if ".adapter." in n} == {"1", "3"}
    # every pretrained weight is frozen (peft renames wrapped weights to *.base_layer.*)
    for name in pretrained["state_dict"]:
        module, _, leaf = name.rpartition(".")
        candidates = {f"backbone.{name}", f"backbone.{module}.base_layer.{leaf}"}
        assert candidates & frozen, name


def test_lora_targets_the_vit_layers_with_configured_rank(pretrained):
    model = build(pretrained, **{"lora.r": 4, "lora.alpha": 12, "lora.dropout": 0.2})
    wrapped = {n for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    depth = pretrained["config"]["depth"]
    expected = {
        f"backbone.blocks.{i}.{leaf}"
        for i in range(depth)
        for leaf in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    }
    assert wrapped == expected  # adapter.down_proj / up_proj are not hit by "proj"
    layer = model.get_submodule("backbone.blocks.0.attn.qkv")
    assert layer.r["default"] == 4
    assert layer.scaling["default"] == pytest.approx(12 / 4)
    assert layer.lora_dropout["default"].p == pytest.approx(0.2)


def test_rank_zero_means_no_lora(pretrained):
    model = build(pretrained, **{"lora.r": 0})
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert not any(isinstance(m, LoraLayer) for m in model.modules())


def test_lora_starts_as_exact_no_op_and_is_wired_in(pretrained):
    base = M.backbone_from_pretrained(pretrained, adapter_index=[0, 2])
    with_lora = copy.deepcopy(base)
    torch.manual_seed(1)
    M.apply_lora(with_lora, make_params()["lora"])
    base.eval()
    with_lora.eval()
    x = torch.randn(2, 40, pretrained["config"]["feat_dim"])
    with torch.no_grad():
        assert torch.equal(base(x), with_lora(x))
        # once lora_B leaves zero, the output moves: LoRA is in the forward path
        with_lora.get_submodule("blocks.1.mlp.fc2").lora_B["default"].weight.fill_(0.05)
        assert not torch.allclose(base(x), with_lora(x))


def test_training_step_moves_only_trainable_weights(pretrained):
    model = build(pretrained)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(M.param_groups(model, make_params()["schedule"]))
    x = torch.randn(2, 64, pretrained["config"]["feat_dim"])
    targets = [(torch.tensor([[5.0, 30.0]]), torch.tensor([1]))] * 2
    for _ in range(2):  # lora_A only gets gradient once lora_B has moved off zero
        opt.zero_grad()
        detection_loss(*model(x), targets)["cost"].backward()
        opt.step()
    for name, p in model.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        if p.requires_grad and name.endswith(("lora_A.default.weight", "lora_B.default.weight")):
            assert changed, name
        if not p.requires_grad:
            assert not changed, name
            assert p.grad is None, name


def test_optimizer_groups_hold_adapter_lora_and_head_at_their_lrs(pretrained):
    params = make_params(**{"schedule.lr": 2e-4, "schedule.head_lr": 1e-4})
    torch.manual_seed(0)
    model = M.build_detector(pretrained, params, num_classes=5)
    groups = M.param_groups(model, params["schedule"])
    ids = {
        tag: {id(p) for g in groups if g["tag"] == tag for p in g["params"]}
        for tag in ("backbone", "head")
    }
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[i] for i in ids["backbone"]} == {
        n for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")
    }
    assert any("lora_" in names[i] for i in ids["backbone"])
    assert any(".adapter." in names[i] for i in ids["backbone"])
    assert {names[i] for i in ids["head"]} == {
        n for n, _ in model.named_parameters() if n.startswith("head.")
    }
    assert all(g["lr"] == (2e-4 if g["tag"] == "backbone" else 1e-4) for g in groups)
    assert groups[0]["tag"] == "backbone" and groups[-1]["tag"] == "head"
    opt = torch.optim.AdamW(groups)
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert held == {id(p) for p in model.parameters() if p.requires_grad}


def test_adapter_index_outside_backbone_is_an_input_error(pretrained):
    with pytest.raises(InputError, match="adapter_index"):
        build(pretrained, **{"structure.adapter_index": [0, 11]})
