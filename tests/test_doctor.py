"""The baseline doctor (`python -m tadsweep.site.doctor`) on real files: upstream's own configs
(mmengine, `_base_` inherited), a log written by upstream's tools/train.py, the tiny THUMOS site's
mp4 videos (decord) and a checkpoint in upstream's key layout (mmengine's loader, upstream's ViT).
Every fabricated fault is found by its id, and upstream's recipe against itself finds nothing."""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import opentad_site
import pytest
import torch
from test_opentad_backend import make_run, train

from tadsweep.site.doctor import config as doctor_config
from tadsweep.site.doctor import data

pytestmark = pytest.mark.opentad
REPO = Path(__file__).resolve().parents[1]
UPSTREAM_S = "configs/adatad/thumos/e2e_thumos_videomae_s_768x1_160_adapter.py"


def doctor(root: Path, out: Path, *args) -> tuple[int, list[dict], str, str]:
    cmd = [sys.executable, "-m", "tadsweep.site.doctor", "--out", str(out), *map(str, args)]
    proc = subprocess.run(
        cmd, env=opentad_site.environment(root), capture_output=True, text=True, timeout=600
    )
    path = out / "findings.json"
    findings = json.loads(path.read_text()) if path.exists() and proc.returncode < 2 else []
    return proc.returncode, findings, proc.stdout, proc.stderr


def ids(findings, severity=None) -> set[str]:
    return {f["id"] for f in findings if severity is None or f["severity"] == severity}


def one(findings, id_, subject_part=""):
    hits = [f for f in findings if f["id"] == id_ and subject_part in f["subject"]]
    assert len(hits) == 1, (id_, subject_part, [f["subject"] for f in findings if f["id"] == id_])
    return hits[0]


def test_upstream_recipe_against_itself_finds_nothing(opentad_root, tmp_path):
    rc, findings, out, _ = doctor(opentad_root, tmp_path, "--config", opentad_root / UPSTREAM_S)
    assert (rc, findings) == (0, [])
    assert "0 error(s), 0 warning(s)" in out
    # launched as upstream's zoo says (2 GPUs): still nothing
    rc, findings, _, _ = doctor(
        opentad_root, tmp_path, "--config", opentad_root / UPSTREAM_S, "--gpus", 2
    )
    assert (rc, findings) == (0, [])


def test_config_faults_are_found_by_key(opentad_root, tmp_path):
    """A user's child config of upstream's: halved adapter lr, 30 epochs, on 1 GPU."""
    user = tmp_path / "my_baseline.py"
    user.write_text(
        f"_base_ = [{str(opentad_root / UPSTREAM_S)!r}]\n"
        "optimizer = dict(\n"
        "    backbone=dict(custom=[dict(name='adapter', lr=1e-4, weight_decay=0.05)])\n"
        ")\n"
        "workflow = dict(end_epoch=30)\n"
    )
    rc, findings, _, _ = doctor(opentad_root, tmp_path / "out", "--config", user, "--gpus", 1)
    assert rc == 0 and not ids(findings, "error")  # the user's choices: warnings, not errors
    lr = one(findings, "config-differs", "optimizer.backbone.custom[adapter].lr")
    assert (lr["found"], lr["expected"], lr["severity"], lr["group"]) == (
        1e-4,
        2e-4,
        "warning",
        "learning rates",
    )
    epochs = one(findings, "config-differs", "workflow.end_epoch")
    assert (epochs["found"], epochs["expected"], epochs["group"]) == (30, 60, "epochs and schedule")
    gpus = one(findings, "config-differs", "launch.gpus")
    assert (gpus["found"], gpus["expected"], gpus["severity"]) == (1, 2, "warning")
    assert "#41" in gpus["source"] and "60.30" in gpus["why"]
    assert one(findings, "config-differs", "launch.batch_per_gpu")["found"] == 2
    subjects = {f["subject"] for f in findings}
    assert not any(
        "work_dir" in s or "data_path" in s for s in subjects
    )  # site paths are not faults


def test_a_difference_all_arms_share_is_the_setups_one_only_some_have_is_their_design(
    opentad_root, tmp_path
):
    """The study's reference configs (v1, v2, the control) as the rule passes its arms."""
    configs = [
        REPO / "configs" / f"{n}.py"
        for n in ("adatad_lora_v1", "adatad_adapter_control", "adatad_lora_v2")
    ]
    args = [a for c in configs for a in ("--config", c)]
    rc, findings, _, _ = doctor(opentad_root, tmp_path, *args, "--gpus", 1)
    assert rc == 0
    gpus = one(findings, "config-differs", "launch.gpus")
    assert gpus["severity"] == "warning" and "(all configs)" in gpus["subject"]
    end = one(findings, "config-differs", "workflow.end_epoch")
    assert (
        end["severity"] == "info" and "adatad_lora_v2.py" in end["subject"] and end["found"] == 120
    )
    # the control arm renders upstream's recipe: nothing differs in it alone
    assert not [
        f
        for f in findings
        if "adatad_adapter_control.py" in f["subject"] and "all configs" not in f["subject"]
    ]


def test_defaults_the_doctor_takes_as_upstreams_are_upstreams(opentad_root):
    with opentad_site.importable(opentad_root):
        nms = opentad_site.upstream_nms(opentad_root)
    signature = inspect.signature(nms.batched_nms).parameters
    for key, value in doctor_config.IMPLICIT.items():
        name = key.rsplit(".", 1)[1]
        if key.startswith("post_processing.nms."):
            assert signature[name].default == value, key
        else:
            source = (opentad_root / "opentad/models/detectors/single_stage.py").read_text()
            assert f'getattr(post_cfg, "{name}", {value})' in source, key
    # the zoo's table: every reference config trained on RECIPE_GPUS GPUs
    readme = (opentad_root / "configs/adatad/README.md").read_text()
    for path in doctor_config.REFERENCES.values():
        row = next(
            line
            for line in readme.splitlines()
            if f"({Path(path).relative_to('configs/adatad')})" in line
        )
        assert row.split("|")[2].strip() == str(doctor_config.RECIPE_GPUS), path
        assert (opentad_root / path).is_file()


# --- the training log ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_log(tmp_path_factory, opentad_root, tiny_site) -> Path:
    """A log written by upstream's tools/train.py: config.yaml's v1 LoRA run on one process."""
    run = make_run(tmp_path_factory.mktemp("doctor-run"), opentad_root, tiny_site)
    proc = train(opentad_root, run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run / "work" / "log.json"


def test_a_one_gpu_log_is_found_with_its_batch_lrs_and_curve(opentad_root, real_log, tmp_path):
    ref = ["--reference", opentad_root / UPSTREAM_S]  # the log's run is on the smoke overlay
    rc, findings, _, _ = doctor(opentad_root, tmp_path, "--log", real_log, *ref)
    assert rc == 0
    world = one(findings, "log-world-size")
    assert (world["found"], world["expected"], world["severity"]) == (1, 2, "warning")
    assert one(findings, "log-batch")["found"].startswith("2 global = 2 per GPU x 1 GPU(s)")
    # the log's own config dump is compared too, with the log's world size
    assert one(findings, "config-differs", "launch.gpus")["found"] == 1
    assert one(findings, "log-epochs")["found"] == 4
    # the run's own schedule (warmup 1, a 6-epoch cosine) against upstream's (5 of 100)
    lrs = {f["subject"].rsplit(": ", 1)[1] for f in findings if f["id"] == "log-lr-differs"}
    assert lrs == {"lr_backbone", "lr_det"}
    assert ids(findings) & {"map-curve", "map-peaked-early", "map-still-rising"}
    assert "lora-not-trained" not in ids(findings)  # upstream's optimizer logged the LoRA params


def test_a_log_whose_lora_never_trained_or_whose_loss_went_nan_is_an_error(
    opentad_root, real_log, tmp_path
):
    text = real_log.read_text()
    no_lora = tmp_path / "no_lora.log"
    no_lora.write_text(
        "\n".join(
            ln for ln in text.splitlines() if not ("Backbone parameter" in ln and "lora" in ln)
        )
        + "\n"
    )
    ref = ["--reference", opentad_root / UPSTREAM_S]
    rc, findings, _, _ = doctor(opentad_root, tmp_path / "a", "--log", no_lora, *ref)
    assert rc == 1 and one(findings, "lora-not-trained")["severity"] == "error"
    nan = tmp_path / "nan.log"
    nan.write_text(re.sub(r"(\[002\]\[\d+/\d+\]\s+Loss=)[0-9.]+", r"\1nan", text))
    rc, findings, _, _ = doctor(opentad_root, tmp_path / "b", "--log", nan, *ref)
    assert rc == 1 and one(findings, "loss-not-finite")["subject"].endswith("epoch 2")


# --- the data audit ------------------------------------------------------------------------------


def reencode(src: Path, dest: Path, fps: float) -> None:
    """The same clip at another frame rate, the same duration (frames dropped evenly)."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    frames = []
    while (ok := cap.read())[0]:
        frames.append(ok[1])
    keep = [
        frames[int(i * opentad_site.FPS / fps)]
        for i in range(int(len(frames) * fps / opentad_site.FPS))
    ]
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in keep:
        writer.write(f)
    writer.release()


@pytest.fixture()
def faulty_site(tiny_site, tmp_path) -> dict:
    """A copy of the tiny site with one of each data fault."""
    site = tmp_path / "thumos"
    shutil.copytree(tiny_site["annotation"].parent, site)
    videos = site / "videos"
    db = json.loads((site / "thumos_14_anno.json").read_text())
    names = sorted(db["database"])
    fps_v, missing_v, cut_v, past_v = names[0], names[1], names[2], names[3]
    tmp = tmp_path / "reencoded.mp4"
    reencode(videos / f"{fps_v}.mp4", tmp, 25.0)
    shutil.move(tmp, videos / f"{fps_v}.mp4")
    (videos / f"{missing_v}.mp4").unlink()
    raw = (videos / f"{cut_v}.mp4").read_bytes()
    (videos / f"{cut_v}.mp4").write_bytes(raw[: int(len(raw) * 0.6)])
    shutil.copy(videos / f"{names[4]}.mp4", videos / "video_test_0009999.mp4")  # not annotated
    seg = db["database"][past_v]["annotations"][0]
    seg["segment"][1] = db["database"][past_v]["duration"] + 10
    (site / "thumos_14_anno.json").write_text(json.dumps(db))
    used = db["database"][names[5]]["annotations"][0]["label"]
    classes = (site / "category_idx.txt").read_text().splitlines()
    (site / "category_idx.txt").write_text("\n".join(c for c in classes if c != used) + "\n")
    return dict(site=site, fps=fps_v, missing=missing_v, cut=cut_v, past=past_v, label=used)


def test_every_data_fault_is_found_by_name(opentad_root, faulty_site, tmp_path):
    s = faulty_site
    site = s["site"]
    args = [
        "--annotation",
        site / "thumos_14_anno.json",
        "--category-idx",
        site / "category_idx.txt",
    ]
    rc, findings, out, _ = doctor(
        opentad_root, tmp_path, *args, "--videos", site / "videos", "--jobs", 2
    )
    assert rc == 1
    fps = one(findings, "video-fps-mismatch", s["fps"])
    assert "25.000 fps" in fps["found"] and fps["severity"] == "error"
    assert float(re.search(r"at ([0-9.]+) fps", fps["expected"]).group(1)) == pytest.approx(
        30, abs=0.01
    )
    assert one(findings, "video-missing", s["missing"])["severity"] == "error"
    assert "mdat" in one(findings, "video-truncated", s["cut"])["found"]
    assert one(findings, "label-missing-from-class-map", s["label"])["severity"] == "error"
    assert one(findings, "segment-past-end", s["past"])["severity"] == "warning"
    assert one(findings, "video-unannotated", "video_test_0009999")["severity"] == "warning"
    bad = {s["fps"], s["missing"], s["cut"]}
    assert {
        f["subject"] for f in findings if f["id"].startswith("video-") and f["severity"] == "error"
    } == {str(site / "videos" / f"{v}.mp4") for v in bad}
    table = (tmp_path / "videos.tsv").read_text().splitlines()
    status = {r.split("\t")[0]: r.split("\t")[6] for r in table[1:]}
    assert status[s["fps"]] == "fps-mismatch" and status[s["missing"]] == "missing"
    assert status[s["cut"]] == "truncated"
    assert sum(v == "ok" for v in status.values()) == len(status) - 3
    assert "error(s)" in out
    # an accepted fault is a warning, and the exit status follows
    allow = [a for v in bad for a in ("--allow", f"video-*:*{v}*")]
    allow += ["--allow", f"label-missing-from-class-map:*{s['label']}"]
    rc, findings, _, _ = doctor(
        opentad_root, tmp_path / "allowed", *args, "--videos", site / "videos", *allow
    )
    assert rc == 0 and not ids(findings, "error")
    assert "allowed" in one(findings, "video-missing")["why"]


def test_the_tiny_sites_own_data_and_checkpoint_are_sound(opentad_root, tiny_site, tmp_path):
    site = tiny_site
    rc, findings, _, _ = doctor(
        opentad_root,
        tmp_path,
        "--config",
        site["base_config"],
        "--reference",
        opentad_root / UPSTREAM_S,
        "--annotation",
        site["annotation"],
        "--category-idx",
        site["class_map"],
        "--videos",
        site["video_dir"],
        "--checkpoint",
        site["pretrained"],
    )
    assert rc == 0, [f for f in findings if f["severity"] == "error"]
    # the smoke overlay's shrunk sizes are what the doctor reports against upstream's recipe
    assert one(findings, "config-differs", "model.backbone.backbone.total_frames")["found"] == 64
    # 7 videos instead of THUMOS-14's 200 + 211
    assert one(findings, "annotation-subset-count", "validation")["expected"] == 211
    filled, total, new = map(int, re.findall(r"\d+", one(findings, "checkpoint-loaded")["found"]))
    assert filled + new == total and new > 0  # only the adapters are new
    assert not ids(findings) & {"checkpoint-missing-keys", "checkpoint-unexpected-keys"}


def test_a_checkpoint_with_a_renamed_prefix_trains_from_scratch(opentad_root, tiny_site, tmp_path):
    ckpt = torch.load(tiny_site["pretrained"], weights_only=False)
    ckpt["state_dict"] = {
        k.replace("backbone.", "encoder.", 1): v for k, v in ckpt["state_dict"].items()
    }
    renamed = tmp_path / "renamed.pth"
    torch.save(ckpt, renamed)
    rc, findings, _, _ = doctor(
        opentad_root,
        tmp_path / "out",
        "--config",
        tiny_site["base_config"],
        "--reference",
        opentad_root / UPSTREAM_S,
        "--checkpoint",
        renamed,
        "--checkpoint-sha256",
        "0" * 64,
    )
    assert rc == 1
    missing = one(findings, "checkpoint-missing-keys")
    assert "keys start with 'encoder.' where the model expects 'backbone.'" in missing["found"]
    assert "randomly initialised" in missing["why"]
    assert one(findings, "checkpoint-not-recorded")["severity"] == "error"  # not the recorded one


@pytest.mark.parametrize(
    "args, message",
    [
        (["--annotation", "{bad}"], "not JSON"),
        (["--checkpoint", "{bad}"], "cannot load the checkpoint"),
        (["--config", "{bad}"], "cannot load the config"),
        (["--annotation", "{missing}"], "cannot read the annotation file"),
        (["--videos", "{tmp}"], "need --annotation"),
    ],
)
def test_unusable_input_is_one_line_naming_the_file(opentad_root, tmp_path, args, message):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 cut short")
    fill = {"{bad}": str(bad), "{missing}": str(tmp_path / "none.json"), "{tmp}": str(tmp_path)}
    rc, _, out, err = doctor(opentad_root, tmp_path / "out", *[fill.get(a, a) for a in args])
    assert rc == 2 and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0]


def test_the_mp4_box_walk_finds_a_cut_at_any_point(tiny_site, tmp_path):
    video = next(tiny_site["video_dir"].glob("*.mp4"))
    raw = video.read_bytes()
    assert data.mp4_truncation(video) is None
    for frac in (0.01, 0.3, 0.99):
        cut = tmp_path / f"cut{frac}.mp4"
        cut.write_bytes(raw[: int(len(raw) * frac)])
        assert data.mp4_truncation(cut), frac


def test_the_plan_stops_on_a_severe_data_fault_unless_allowed(
    opentad_root, tiny_site, faulty_site, tmp_path
):
    """`snakemake -n` reads the annotation, the class map and the video folder (no video opened):
    a missing video stops it in one line naming the file; doctor.allow lets the plan through."""
    import yaml

    site = dict(
        tiny_site,
        annotation=faulty_site["site"] / "thumos_14_anno.json",
        class_map=tiny_site["class_map"],
        video_dir=faulty_site["site"] / "videos",
    )
    image = tmp_path / "opentad.sif"
    image.write_text("image")
    cfg = opentad_site.smoke_study(site, opentad_root, image)

    def plan(cfg):
        config = tmp_path / "study.yaml"
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        cmd = [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "-s",
            str(REPO / "Snakefile"),
            "--configfile",
            str(config),
            "--directory",
            str(tmp_path / "work"),
            "--cores",
            "1",
        ]
        env = opentad_site.environment(opentad_root)
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

    res = plan(cfg)
    assert res.returncode != 0
    text = res.stdout + res.stderr
    stop = [ln for ln in text.splitlines() if ln.startswith("doctor: ")]
    assert len(stop) == 1, text[-3000:]
    assert f"{faulty_site['missing']}.mp4: absent" in stop[0] and "doctor.allow" in stop[0]
    assert "Traceback" not in text
    cfg["doctor"] = {"allow": [f"video-missing:*{faulty_site['missing']}*"]}
    res = plan(cfg)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-3000:]
    assert "tadsweep doctor warning" in text and "(allowed: doctor.allow)" in text
    assert "the recipe's 69.03 was trained on 2 GPUs" in text  # the study's 1-GPU launch


def test_bench_doctor_runs_quick(tmp_path):
    """benchmarks/bench_doctor.py (make bench) on a few short clips: every video is probed."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_doctor

    figures = bench_doctor.main(
        ["--videos", "6", "--scale", "0.02", "--warm", "--dir", str(tmp_path)]
    )
    assert figures["videos"] == 6 and figures["audit_seconds"] > 0
    rows = (tmp_path / "out" / "videos.tsv").read_text().splitlines()
    assert len(rows) == 7 and all("\tok\t" in r for r in rows[1:])
    assert figures["thumos14_projected_seconds"] == pytest.approx(
        figures["audit_seconds"] * 413 / 6, rel=0.01
    )


def test_the_demos_features_are_audited_for_what_applies(tmp_path):
    """The demo's format: one (T x C) .npy per video; a missing file, an unreadable one and one at
    another feature rate are found (the rate is the analogue of a video's fps)."""
    import numpy as np

    feats = tmp_path / "features"
    feats.mkdir()
    db = {f"v{i}": {"subset": "validation", "duration": 10.0, "frame": 300} for i in range(5)}
    for i in range(4):
        np.save(feats / f"v{i}.npy", np.zeros((20 if i != 3 else 40, 8), np.float32))
    (feats / "v2.npy").write_bytes(b"\x93NUMPY cut")
    found, rows = data.check_features(db, feats)
    assert {(f.id, Path(f.subject).stem) for f in found} == {
        ("video-missing", "v4"),
        ("video-undecodable", "v2"),
        ("video-fps-mismatch", "v3"),
    }
    assert [r["status"] for r in rows] == ["ok", "ok", "undecodable", "fps-mismatch", "missing"]
