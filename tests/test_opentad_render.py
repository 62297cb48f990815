"""params.json -> OpenTAD config: rendered files load with mmengine and set the expected keys.

Rendered against the OpenTAD test double's config tree (tests/doubles/opentad) and, when the
environment names a real checkout in OPENTAD_ROOT, against that checkout as well.
"""

import copy
import os
from pathlib import Path

import pytest
from mmengine.config import Config

from tadsweep.errors import InputError
from tadsweep.opentad import render

DOUBLE_ROOT = Path(__file__).parent / "doubles" / "opentad"
ROOTS = [pytest.param(DOUBLE_ROOT.resolve(), id="double")]
if os.environ.get("OPENTAD_ROOT"):
    ROOTS.append(pytest.param(Path(os.environ["OPENTAD_ROOT"]).resolve(), id="real-checkout"))
REPO = Path(__file__).resolve().parents[1]


def load(tmp_path, text, name="config.py"):
    path = tmp_path / name
    path.write_text(text)
    return Config.fromfile(str(path))


def custom_params():
    p = render.reference_params("adatad_lora_v1")
    p.update(seed=3, run_id="p2/lora=B,aug=ra/seed=3", batch_size=4, ema=False, amp=False)
    p["lora"] = {"r": 24, "alpha": 48, "dropout": 0.08, "targets": ["qkv", "proj"]}
    p["schedule"] = dict(
        lr=5e-4,
        head_lr=2e-4,
        weight_decay=0.01,
        warmup_epoch=1,
        epochs=7,
        cosine_epochs=9,
        val_start_epoch=3,
        val_interval=2,
        checkpoint_interval=3,
    )
    p["structure"] = {"adapter_index": [4, 0, 2], "drop_path_rate": 0.15}
    p["postprocess_default"] = dict(
        sigma=0.6,
        max_seg_num=2500,
        multiclass=True,
        method=2,
        voting_thresh=0.65,
        min_score=0.001,
        use_soft_nms=True,
        iou_threshold=0.0,
        pre_nms_topk=1000,
        pre_nms_thresh=0.002,
    )
    return p


@pytest.mark.parametrize("root", ROOTS)
def test_every_knob_lands_on_its_key(tmp_path, root):
    data = dict(
        annotation_path="/data/a,b/anno.json", class_map="/data/cls.txt", pretrain="/w/s.pth"
    )
    text = render.render_config(custom_params(), str(root), work_dir="/r/p2/lora=B/work", data=data)
    cfg = load(tmp_path, text)
    bb = cfg.model.backbone.backbone
    assert bb.type == "VisionTransformerAdapterLoRA"
    assert (bb.lora_r, bb.lora_alpha, bb.lora_dropout) == (24, 48, 0.08)
    assert bb.lora_targets == ["qkv", "proj"]
    assert bb.adapter_index == [0, 2, 4] and bb.drop_path_rate == 0.15
    assert bb.embed_dims == 384 and bb.depth == 12 and bb.with_cp is True  # kept from the base
    assert cfg.custom_imports == dict(imports=["tadsweep.opentad.lora"], allow_failed_imports=False)
    assert cfg.model.backbone.custom.pretrain == "/w/s.pth"
    assert cfg.model.backbone.custom.freeze_backbone is False  # merged, not replaced
    assert cfg.model.backbone.type == "mmaction.Recognizer3D"
    opt = cfg.optimizer
    assert opt.type == "AdamW" and opt.lr == 2e-4 and opt.weight_decay == 0.01
    assert opt.backbone.custom == [
        dict(name="adapter", lr=5e-4, weight_decay=0.01),
        dict(name="lora_", lr=5e-4, weight_decay=0.01),
    ]
    assert opt.backbone.exclude == ["backbone"] and opt.backbone.lr == 0
    assert cfg.scheduler == dict(type="LinearWarmupCosineAnnealingLR", warmup_epoch=1, max_epoch=9)
    wf = cfg.workflow
    assert (wf.end_epoch, wf.val_start_epoch, wf.val_eval_interval, wf.checkpoint_interval) == (
        7,
        3,
        2,
        3,
    )
    assert wf.logging_interval == 50 and wf.val_loss_interval == -1
    assert cfg.solver.train.batch_size == 4 and cfg.solver.ema is False and cfg.solver.amp is False
    assert cfg.solver.test.batch_size == 2  # untouched
    pp = cfg.post_processing
    assert pp.nms == dict(
        use_soft_nms=True,
        sigma=0.6,
        max_seg_num=2500,
        multiclass=True,
        voting_thresh=0.65,
        method=2,
        min_score=0.001,
        iou_threshold=0.0,
    )
    assert (pp.pre_nms_topk, pp.pre_nms_thresh, pp.save_dict) == (1000, 0.002, False)
    for split in ("train", "val", "test"):
        assert cfg.dataset[split].ann_file == "/data/a,b/anno.json"
        assert cfg.dataset[split].class_map == "/data/cls.txt"
        assert cfg.dataset[split].data_path == "data/thumos-14/raw_data/video"  # not given
    assert cfg.evaluation.ground_truth_filename == "/data/a,b/anno.json"
    assert cfg.evaluation.tiou_thresholds == [0.3, 0.4, 0.5, 0.6, 0.7]
    assert cfg.work_dir == "/r/p2/lora=B/work"


@pytest.mark.parametrize("root", ROOTS)
def test_augmentation_rewrites_the_whole_train_pipeline(tmp_path, root):
    base = Config.fromfile(str(root / render.BASE_CONFIG))
    upstream = [dict(t) for t in base.dataset.train.pipeline]
    # the pipeline written by render is upstream's, apart from the augmentation slot
    assert render.train_pipeline(dict(type="mmaction.ImgAug", transforms="default")) == upstream
    slot = next(i for i, t in enumerate(upstream) if t["type"] == "mmaction.ImgAug")

    p = render.reference_params("adatad_lora_v1")
    default = load(tmp_path, render.render_config(p, str(root)), "default.py")
    assert [dict(t) for t in default.dataset.train.pipeline] == upstream
    assert "dataset" not in render.overrides(p)  # default: inherited, not rewritten

    p["augment"] = {"imgaug": "none", "randaugment": None}
    none = load(tmp_path, render.render_config(p, str(root)), "none.py")
    assert [dict(t) for t in none.dataset.train.pipeline] == upstream[:slot] + upstream[slot + 1 :]

    p["augment"] = {"imgaug": "default", "randaugment": {"num_ops": 2, "magnitude": 9}}
    ra = load(tmp_path, render.render_config(p, str(root)), "ra.py")
    got = [dict(t) for t in ra.dataset.train.pipeline]
    assert got[slot] == dict(
        type="mmaction.PytorchVideoWrapper", op="RandAugment", num_layers=2, magnitude=9
    )
    assert got[:slot] + got[slot + 1 :] == upstream[:slot] + upstream[slot + 1 :]
    assert [dict(t) for t in ra.dataset.test.pipeline] == [
        dict(t) for t in base.dataset.test.pipeline
    ]


@pytest.mark.parametrize("root", ROOTS)
def test_control_arm_is_upstream_adapter_only(tmp_path, root):
    p = render.reference_params("adatad_adapter_control")
    cfg = load(tmp_path, render.render_config(p, str(root)))
    base = Config.fromfile(str(root / render.BASE_CONFIG))
    assert "custom_imports" not in cfg
    assert cfg.model.backbone.backbone.to_dict() == base.model.backbone.backbone.to_dict()
    for key in ("optimizer", "scheduler", "workflow", "solver", "post_processing", "dataset"):
        assert cfg[key].to_dict() == base[key].to_dict(), key


@pytest.mark.parametrize("root", ROOTS)
@pytest.mark.parametrize("name", sorted(render.REFERENCE_CONFIGS))
def test_reference_configs_are_current_and_load(monkeypatch, root, name):
    path = REPO / "configs" / f"{name}.py"
    assert path.read_text() == render.reference_config_text(name), (
        "configs/ is stale: python -m tadsweep.opentad render --reference configs"
    )
    monkeypatch.setenv("OPENTAD_ROOT", str(root))
    cfg = Config.fromfile(str(path))
    params = render.reference_params(name)
    assert cfg.workflow.end_epoch == params["schedule"]["epochs"]
    assert cfg.scheduler.max_epoch == params["schedule"]["cosine_epochs"]
    assert cfg.optimizer.backbone.custom[0].lr == params["schedule"]["lr"]
    r = params["lora"]["r"]
    assert cfg.model.backbone.backbone.get("lora_r", 0) == r
    expected = "VisionTransformerAdapterLoRA" if r else "VisionTransformerAdapter"
    assert cfg.model.backbone.backbone.type == expected


def test_v1_v2_differ_as_the_user_wrote():
    v1, v2 = (
        render.overrides(render.reference_params(n)) for n in ("adatad_lora_v1", "adatad_lora_v2")
    )
    b1, b2 = v1["model"]["backbone"]["backbone"], v2["model"]["backbone"]["backbone"]
    assert (b1["lora_r"], b1["lora_alpha"], b1["lora_dropout"]) == (16, 32, 0.1)
    assert (b2["lora_r"], b2["lora_alpha"], b2["lora_dropout"]) == (32, 64, 0.05)
    assert v1["workflow"]["end_epoch"] == 60 and v1["scheduler"]["max_epoch"] == 100
    # 120 epochs move the cosine and the evaluation window along, not just end_epoch
    assert v2["workflow"]["end_epoch"] == 120 and v2["scheduler"] == dict(
        warmup_epoch=10, max_epoch=120
    )
    assert v2["workflow"]["val_start_epoch"] == 100
    assert v2["optimizer"]["backbone"]["custom"][1] == dict(
        name="lora_", lr=3e-4, weight_decay=0.05
    )


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p["schedule"].update(epochs=130), "epochs <= cosine_epochs"),
        (lambda p: p["augment"].update(mixup={"alpha": 0.2}), "augment.mixup"),
        (lambda p: p["augment"].update(randaugment={"n": 2}), "randaugment.n"),
        (lambda p: p["lora"].update(targets=["fc3"]), "lora.targets"),
        (lambda p: p["lora"].update(r=-1), "lora.r"),
        (lambda p: p["structure"].update(adapter_index=[12]), "adapter_index"),
        (lambda p: p["schedule"].update(lr="fast"), "schedule.lr"),
        (lambda p: p.pop("batch_size"), "batch_size"),
        (lambda p: p.update(model={"depth": 24}), "model.depth"),
    ],
)
def test_bad_params_are_one_line_input_errors(edit, message):
    p = copy.deepcopy(render.reference_params("adatad_lora_v1"))
    edit(p)
    with pytest.raises(InputError, match=message) as info:
        render.render_config(p, "/opt/OpenTAD")
    assert "\n" not in str(info.value)


def test_root_must_be_absolute():
    with pytest.raises(InputError, match="absolute"):
        render.render_config(render.reference_params("adatad_lora_v1"), "OpenTAD")


def test_cli_writes_config(tmp_path):
    import json

    from tadsweep.opentad.__main__ import main

    params = tmp_path / "params.json"
    params.write_text(json.dumps(custom_params()))
    out = tmp_path / "run" / "config.py"
    argv = ["render", "--params", str(params), "--opentad-root", str(DOUBLE_ROOT.resolve())]
    # the site flags the Snakemake render rule passes (paths.* of config.yaml, made absolute)
    site = ["--base-config", str(DOUBLE_ROOT.resolve() / render.BASE_CONFIG)]
    site += ["--annotation", "/d/anno.json", "--class-map", "/d/cls.txt", "--video-dir", "/v"]
    site += ["--pretrained", "/w/vit-s.pth"]
    assert main(argv + ["--out", str(out), *site]) == 0
    cfg = Config.fromfile(str(out))
    assert cfg.dataset.test.data_path == "/v" and cfg.workflow.end_epoch == 7
    assert (
        cfg.dataset.train.ann_file == "/d/anno.json" and cfg.dataset.val.class_map == "/d/cls.txt"
    )
    assert cfg.evaluation.ground_truth_filename == "/d/anno.json"
    assert cfg.model.backbone.custom.pretrain == "/w/vit-s.pth"
    assert out.read_text().startswith("# OpenTAD config for run p2/lora=B,aug=ra/seed=3")
    params.write_text("{}")
    assert main(argv + ["--out", str(tmp_path / "bad.py")]) == 1
    assert not (tmp_path / "bad.py").exists()
