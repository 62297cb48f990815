"""params.json -> OpenTAD config: rendered files load with mmengine against the real upstream
config tree ($OPENTAD_ROOT), set the expected keys, and pass upstream's own post-processing."""

import copy
from pathlib import Path

import pytest
from mmengine.config import Config

from tadsweep.backends.opentad import render
from tadsweep.errors import InputError
from tadsweep.plan import runs
from tadsweep.plan.axes import opentad
from tadsweep.plan.config import load_study

pytestmark = pytest.mark.opentad
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(opentad_root):
    return opentad_root


@pytest.fixture(scope="module")
def base(root):
    return render.load_base(str(root))


def load(tmp_path, text, name="config.py"):
    path = tmp_path / name
    path.write_text(text)
    return Config.fromfile(str(path))


def custom_params():
    p = render.reference_params("adatad_lora_v1")
    p.update(seed=3, run_id="p2/lora=B,aug=ra/seed=3", batch_size=4, ema=False, amp=False)
    p["tious"] = [0.3, 0.5, 0.7]
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


def test_every_knob_lands_on_its_key(tmp_path, base):
    data = dict(
        annotation_path="/data/a,b/anno.json", class_map="/data/cls.txt", pretrain="/w/s.pth"
    )
    text = render.render_config(custom_params(), base, work_dir="/r/p2/lora=B/work", data=data)
    cfg = load(tmp_path, text)
    bb = cfg.model.backbone.backbone
    assert cfg.evaluation.tiou_thresholds == [0.3, 0.5, 0.7]  # evaluation.tious
    assert cfg.evaluation.ground_truth_filename == "/data/a,b/anno.json"
    assert bb.type == "VisionTransformerAdapterLoRA"
    assert (bb.lora_r, bb.lora_alpha, bb.lora_dropout) == (24, 48, 0.08)
    assert bb.lora_targets == ["qkv", "proj"]
    assert bb.adapter_index == [0, 2, 4] and bb.drop_path_rate == 0.15
    assert bb.embed_dims == 384 and bb.depth == 12 and bb.with_cp is True  # kept from the base
    plugin = ["tadsweep.backends.opentad.lora"]
    assert cfg.custom_imports == dict(imports=plugin, allow_failed_imports=False)
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
    assert cfg.evaluation.tiou_thresholds == [0.3, 0.5, 0.7]  # evaluation.tious
    assert cfg.work_dir == "/r/p2/lora=B/work"


@pytest.mark.parametrize(
    "base_config", [render.BASE_CONFIG, str(REPO / "configs/smoke/adatad_tiny.py")]
)
def test_augmentation_edits_the_base_train_pipeline(tmp_path, root, base_config):
    base = render.load_base(str(root), base_config)
    with render.opentad_root_env(root):
        base_cfg = Config.fromfile(base.include)
    upstream = [dict(t) for t in base_cfg.dataset.train.pipeline]
    # the pipeline written by render is the base's, apart from the augmentation slot
    assert (
        opentad.train_pipeline(base, dict(type="mmaction.ImgAug", transforms="default")) == upstream
    )
    slot = next(i for i, t in enumerate(upstream) if t["type"] == "mmaction.ImgAug")

    p = render.reference_params("adatad_lora_v1")
    default = load(tmp_path, render.render_config(p, base), "default.py")
    assert [dict(t) for t in default.dataset.train.pipeline] == upstream
    assert "dataset" not in render.overrides(p, base)  # default: inherited, not rewritten

    p["augment"] = {"imgaug": "none", "randaugment": None}
    none = load(tmp_path, render.render_config(p, base), "none.py")
    assert [dict(t) for t in none.dataset.train.pipeline] == upstream[:slot] + upstream[slot + 1 :]

    p["augment"] = {"imgaug": "default", "randaugment": {"num_ops": 2, "magnitude": 9}}
    ra = load(tmp_path, render.render_config(p, base), "ra.py")
    got = [dict(t) for t in ra.dataset.train.pipeline]
    assert got[slot] == dict(
        type="mmaction.PytorchVideoWrapper", op="RandAugment", num_layers=2, magnitude=9
    )  # prob: pytorchvideo's own default (0.5) unless the variant sets it
    assert got[:slot] + got[slot + 1 :] == upstream[:slot] + upstream[slot + 1 :]
    assert [dict(t) for t in ra.dataset.test.pipeline] == [
        dict(t) for t in base_cfg.dataset.test.pipeline
    ]


def test_randaugment_bounds_are_pytorchvideos_and_the_strong_variant_acts(tmp_path, base):
    """The schema's bounds are what pytorchvideo's RandAugment really acts on, and config.yaml's
    `strong` builds, through mmaction's wrapper, 3 ops at level 10 that always act."""
    import pytorchvideo.transforms.augmentations as pv_aug
    import pytorchvideo.transforms.rand_augment as pv_ra
    from mmaction.registry import TRANSFORMS

    from tadsweep.plan.axes import augment

    assert tuple(pv_ra._TRANSFORM_RANDAUG_MAX_PARAMS) == augment.RANDAUGMENT_OPS
    assert augment.RANDAUGMENT_MAX_LEVEL == pv_aug._AUGMENTATION_MAX_LEVEL

    cfg, _ = load_study(str(REPO / "config.yaml"))
    strong = runs.resolve_params(cfg, next(r for r in runs.expand(cfg) if "aug=strong" in
                                           r.run_id or "augment=strong" in r.run_id),
                                 cfg["baseline"])  # fmt: skip
    assert augment.policy(strong["augment"]).startswith(
        "RandAugment: 3 of 14 ops, each acting with p=1"
    )
    rendered = load(tmp_path, render.render_config(strong, base), "strong.py")
    step = next(t for t in rendered.dataset.train.pipeline if t["type"].endswith("Wrapper"))
    import mmaction.datasets  # noqa: F401 (registers the transforms)

    wrapper = TRANSFORMS.build(dict(step, type="PytorchVideoWrapper"))
    sampler = wrapper.trans.randaug_fn
    assert sampler.num_sample_op == 3
    assert {(t.magnitude, t.prob) for t in sampler.transforms_list} == {(10, 1.0)}


def test_control_arm_is_upstream_adapter_only(tmp_path, root, base):
    p = render.reference_params("adatad_adapter_control")
    cfg = load(tmp_path, render.render_config(p, base))
    base = Config.fromfile(str(root / render.BASE_CONFIG))
    assert "custom_imports" not in cfg
    assert cfg.model.backbone.backbone.to_dict() == base.model.backbone.backbone.to_dict()
    for key in ("optimizer", "scheduler", "workflow", "solver", "post_processing", "dataset"):
        assert cfg[key].to_dict() == base[key].to_dict(), key


@pytest.mark.parametrize("name", sorted(render.REFERENCE_CONFIGS))
def test_reference_configs_are_current_and_load(monkeypatch, root, name):
    path = REPO / "configs" / f"{name}.py"
    assert path.read_text() == render.reference_config_text(name, str(root)), (
        "configs/ is stale: python -m tadsweep.backends.opentad render --reference configs "
        "--opentad-root $OPENTAD_ROOT"
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


def test_v1_v2_differ_as_the_user_wrote(base):
    v1, v2 = (
        render.overrides(render.reference_params(n), base)
        for n in ("adatad_lora_v1", "adatad_lora_v2")
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
def test_bad_params_are_one_line_input_errors(edit, message, base):
    p = copy.deepcopy(render.reference_params("adatad_lora_v1"))
    edit(p)
    with pytest.raises(InputError, match=message) as info:
        render.render_config(p, base)
    assert "\n" not in str(info.value)


def test_root_must_be_absolute_and_the_base_must_load(tmp_path, root):
    with pytest.raises(InputError, match="absolute"):
        render.load_base("OpenTAD")
    with pytest.raises(InputError, match="cannot load base config") as info:
        render.load_base(str(root), str(tmp_path / "missing.py"))
    assert "missing.py" in str(info.value)


def test_cli_writes_config(tmp_path, root):
    import json

    from tadsweep.backends.opentad.__main__ import main
    from tadsweep.cli import status

    params = tmp_path / "params.json"
    params.write_text(json.dumps(custom_params()))
    out = tmp_path / "run" / "config.py"
    argv = ["render", "--params", str(params), "--opentad-root", str(root)]
    # the site flags the Snakemake render rule passes (paths.* of config.yaml, made absolute)
    site = ["--base-config", str(root / render.BASE_CONFIG)]
    site += ["--annotation", "/d/anno.json", "--class-map", "/d/cls.txt", "--video-dir", "/v"]
    site += ["--pretrained", "/w/vit-s.pth"]
    assert status(main, argv + ["--out", str(out), *site]) == 0
    cfg = Config.fromfile(str(out))
    assert cfg.dataset.test.data_path == "/v" and cfg.workflow.end_epoch == 7
    assert (
        cfg.dataset.train.ann_file == "/d/anno.json" and cfg.dataset.val.class_map == "/d/cls.txt"
    )
    assert cfg.evaluation.ground_truth_filename == "/d/anno.json"
    assert cfg.model.backbone.custom.pretrain == "/w/vit-s.pth"
    assert out.read_text().startswith("# OpenTAD config for run p2/lora=B,aug=ra/seed=3")
    params.write_text("{}")
    assert status(main, argv + ["--out", str(tmp_path / "bad.py")]) == 2  # bad input
    assert not (tmp_path / "bad.py").exists()


def config_yaml_params() -> list[dict]:
    """params.json of every run of the user's config.yaml (later phases on the baseline's
    variants, which is one of the winners they can get)."""
    cfg, _ = load_study(str(REPO / "config.yaml"))
    return [
        runs.resolve_params(cfg, run, None if run.phase == "p1" else cfg["baseline"])
        for run in runs.expand(cfg)
    ]


def test_every_run_of_config_yaml_passes_upstream_post_processing(tmp_path, root, base):
    """Upstream's detector post-processing (the step that runs at every in-training evaluation
    and in `detect`) on each rendered config: the config once rendered `pre_nms_thresh=None`,
    which upstream compares with scores (`pred_prob > None`) -- a TypeError two GPU-hours in."""
    import opentad_site
    import torch

    with opentad_site.importable(root):
        from opentad.models.detectors.single_stage import SingleStageDetector
    all_params = config_yaml_params()
    assert len(all_params) == 33  # 11 arms x 3 seeds
    torch.manual_seed(0)
    windows, points, classes = 2, 3000, 20
    proposals = torch.rand(windows, points, 2).sort(-1).values * 700
    scores = torch.rand(windows, points, classes) ** 4
    metas = [
        dict(video_name="v", snippet_stride=4, offset_frames=0, window_start_frame=w * 1536,
             fps=30.0, duration=400.0)
        for w in range(windows)
    ]  # fmt: skip
    for params in all_params:
        cfg = load(tmp_path, render.render_config(params, base), "run.py")
        post = cfg.post_processing
        assert "pre_nms_thresh" not in post and "pre_nms_topk" not in post  # upstream's defaults
        post.sliding_window = True  # set by upstream's eval_one_epoch for THUMOS
        names = opentad_site.THUMOS_CLASSES
        out = SingleStageDetector.post_processing(None, (proposals, scores), metas, post, names)
        kept = out["v"]
        # upstream's per-window defaults acted: top 2000 per window, scores above 0.001
        assert len(kept) == windows * 2000, params["run_id"]
        assert min(d["score"] for d in kept) >= 0.001


def test_detector_knobs_are_rendered_when_set(tmp_path, base):
    p = config_yaml_params()[0]
    p["postprocess_default"].update(pre_nms_topk=500, pre_nms_thresh=0.01, video_topk=100)
    cfg = load(tmp_path, render.render_config(p, base))
    assert (cfg.post_processing.pre_nms_topk, cfg.post_processing.pre_nms_thresh) == (500, 0.01)
    assert "video_topk" not in cfg.post_processing.nms  # the sweep's own cut stays out
    p["postprocess_default"]["pre_nms_topk"] = "2000"
    with pytest.raises(InputError, match="postprocess_default.pre_nms_topk"):
        render.render_config(p, base)


def test_defaults_that_claim_to_be_upstreams_are_upstreams(tmp_path, root, base):
    """Every post-processing default labelled upstream's, against the real tree: AdaTAD's
    post_processing.nms over batched_nms' signature (what upstream really runs), for the schema's
    defaults, config.yaml's `postprocess.default`, the sweep's NMSSetting and every rendered run."""
    import inspect

    import opentad_site

    from tadsweep.detections.postprocess import NMSSetting
    from tadsweep.plan import schema

    signature = inspect.signature(opentad_site.upstream_nms(root).batched_nms).parameters
    empty = inspect.Parameter.empty
    kwargs = {k: p.default for k, p in signature.items() if p.default is not empty}
    with render.opentad_root_env(str(root)):
        adatad = Config.fromfile(str(root / render.BASE_CONFIG), import_custom_modules=False)
    upstream = dict(kwargs, **adatad.post_processing.nms)
    assert upstream["min_score"] == 0.0 and upstream["sigma"] == 0.7  # what the issue found

    setting = {f: getattr(NMSSetting(), f) for f in NMSSetting.__dataclass_fields__}
    assert {k: setting[k] for k in kwargs} == kwargs  # NMSSetting() is batched_nms()

    defaults = schema.build()["$defs"]["postprocess_default"]["properties"]  # knobs.py's
    shared = [k for k in defaults if k in upstream]
    assert len(shared) == 8, shared
    assert {k: defaults[k]["default"] for k in shared} == {k: upstream[k] for k in shared}
    mine, _ = load_study(str(REPO / "config.yaml"))
    claimed = mine["postprocess"]["default"]  # config.yaml labels it upstream's
    assert {k: claimed[k] for k in shared} == {k: upstream[k] for k in shared}

    # Rendered: the study changes nothing of upstream's post-processing on purpose.
    for params in config_yaml_params()[:3]:
        cfg = load(tmp_path, render.render_config(params, base), "run.py")
        rendered = dict(kwargs, **cfg.post_processing.nms)
        assert rendered == upstream, params["run_id"]
        assert cfg.post_processing.save_dict == adatad.post_processing.save_dict
