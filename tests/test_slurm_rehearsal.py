"""The dress rehearsal: the user's config.yaml -- every phase and arm, the adapter-only control,
LoRA A/B, schedule v2, augmentation none/strong, the structures, winners, the post-processing
sweep, the ensemble, statistics, plots and the report -- with `snakemake --profile slurm` on the
live cluster, GPU jobs in "the container" (the apptainer double, --sdm apptainer) running
upstream OpenTAD's tools/train.py and tools/test.py on the host (tests/doubles/cuda stands in for
the GPU). Only sizes are shrunk (opentad_site.smoke_study): one seed, a few epochs, the smoke
overlay, tiny videos. The study runs once; each test reads what it left."""

from __future__ import annotations

import json
from pathlib import Path

import opentad_site
import pandas as pd
import pytest
from mmengine.config import Config
from test_slurm_workflow import Snakemake, slurm_jobs, smoke_study, wildcards_of

from tadsweep.backends.opentad.render import opentad_root_env
from tadsweep.plan import runs
from tadsweep.plan.config import load_study
from tadsweep.report.curves import parse_log

pytestmark = [pytest.mark.opentad, pytest.mark.slurm]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study(slurm_cluster, opentad_root, tiny_site, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rehearsal")
    config, work = smoke_study(tiny_site, opentad_root, tmp, "smoke")
    shim_log = tmp / "apptainer.log"
    env = opentad_site.environment(opentad_root, APPTAINER_SHIM_LOG=str(shim_log))
    env.pop("APPTAINER_BIND", None)
    run = Snakemake(work, config, "--sdm", "apptainer", slurm=True, name="study", env=env)
    run.check(timeout=1800)
    validated, _ = load_study(str(config))
    return dict(
        cfg=validated,
        config=config,
        work=work,
        run=run,
        env=env,
        out=work / "results" / "smoke",
        shim_log=shim_log,
        image=tmp / "opentad.sif",
        site=tiny_site,
    )


def test_dress_rehearsal_of_config_yaml_on_upstream_opentad(study, slurm_cluster):
    """Train and detect were GPU jobs on the cluster, after one preflight; the report renders."""
    out = study["out"]
    run_ids = expected_runs(study["cfg"])
    jobs = slurm_jobs(slurm_cluster, study["run"])
    for rule in ("train", "detect"):
        mine = [j for j in jobs if j["rule"] == rule]
        assert sorted(j["wildcards"] for j in mine) == sorted(map(wildcards_of, run_ids)), mine
        assert all(j["state"] == "COMPLETED" and j["gres_used"] == "gpu:1" for j in mine), mine
    # and the preflight, once, before the first training (its forward+backward on the CPU shim)
    pre = [j for j in jobs if j["rule"] == "preflight"]
    assert [(j["state"], j["gres_used"]) for j in pre] == [("COMPLETED", "gpu:1")], pre
    assert int(pre[0]["job_id"]) < min(int(j["job_id"]) for j in jobs if j["rule"] == "train")
    assert len(jobs) == 2 * len(run_ids) + 1
    for rid in run_ids:  # upstream's own logs: in-training evaluation, then test.py
        log = (out / "runs" / rid / "work" / "log.json").read_text()
        assert "Train INFO: Average-mAP:" in log and "Training Over..." in log, rid
    # the baseline doctor ran on the submit host, in the image, before the preflight
    assert "localrule doctor:" in study["run"].text()

    report = study["work"] / "report.html"
    Snakemake(study["work"], study["config"], "--report", str(report), slurm=False,
              name="report", env=study["env"]).check(timeout=600)  # fmt: skip
    text = report.read_text(errors="replace")
    assert "summary.tsv" in text and "headline" in text and "Baseline diagnosis" in text
    print(f"\ndress rehearsal: {study['run'].seconds:.0f} s through SLURM for {len(run_ids)} runs")


def expected_runs(cfg: dict) -> list[str]:
    return sorted(run.run_id for run in runs.expand(cfg))


def test_every_arm_of_config_yaml_trained_detected_and_swept(study):
    cfg, out = study["cfg"], study["out"]
    user, _ = load_study(str(REPO / "config.yaml"))
    run_ids = expected_runs(cfg)
    # the same arms as the user's study, one seed each
    assert run_ids == sorted({r.run_id.rsplit("/", 1)[0] + "/seed=1" for r in runs.expand(user)})
    assert len(run_ids) == 11
    summary = pd.read_csv(out / "summary.tsv", sep="\t")
    assert sorted(summary["run_id"].unique()) == run_ids
    assert set(summary["status"]) == {"done"}
    settings = json.loads((out / "postprocess_settings.json").read_text())
    assert len(summary) == len(run_ids) * len(settings)  # every sweep setting of config.yaml
    assert summary["average_mAP"].between(0, 1).all()
    for run in run_ids:
        rdir = out / "runs" / run
        params = json.loads((rdir / "params.json").read_text())
        epochs = params["schedule"]["epochs"]
        curves = parse_log(rdir / "work" / "log.json")
        assert curves["epoch"].tolist() == list(range(epochs)), run
        # upstream evaluated during training (the step that crashed on the old render)
        sch = params["schedule"]
        expected = [
            e for e in range(sch["val_start_epoch"], epochs) if (e + 1) % sch["val_interval"] == 0
        ]
        assert expected and curves.dropna(subset=["average_mAP"])["epoch"].tolist() == expected
        assert json.loads((rdir / "train.json").read_text())["final_epoch"] == epochs - 1
        assert (rdir / "candidates.npz").stat().st_size > 0
        detect_log = next((rdir / "work" / "detect").glob("gpu*_id0/log.json")).read_text()
        assert f"Checkpoint is epoch {epochs - 1}." in detect_log
    for phase in cfg["phase_order"]:
        winner = json.loads((out / "phases" / phase / "winner.json").read_text())
        assert winner["run_ids"] and all(r in run_ids for r in winner["run_ids"])
    # greedy forward selection starts from the best single run (default setting) on half a of
    # the videos (selection.crossfit is on in config.yaml)
    ensemble = pd.read_csv(out / "ensemble" / "ensemble.tsv", sep="\t")
    default = summary[summary["is_default_setting"]].set_index("run_id")
    first = ensemble["members"].iloc[0]
    assert ensemble["a:average_mAP"].iloc[0] == pytest.approx(default["a:average_mAP"].max())
    best_single = default.loc[first, "average_mAP"]
    assert ensemble["best_single_average_mAP"].iloc[0] == pytest.approx(best_single)
    assert first in run_ids
    assert (out / "stats" / "headline.json").is_file()


def test_each_arm_ran_what_its_variant_says(study, opentad_root):
    """The rendered configs, as upstream's tools loaded them (the merged config the training log
    dumps), carry each arm's change on top of the smoke overlay."""
    out = study["out"] / "runs"

    def merged(run):
        with opentad_root_env(opentad_root):
            return Config.fromfile(str(out / run / "config.py"), import_custom_modules=False)

    def steps(run):
        return [t.type for t in merged(run).dataset.train.pipeline]

    base = merged("p1/base/seed=1")
    assert base.model.backbone.backbone.type == "VisionTransformerAdapterLoRA"
    assert base.model.backbone.backbone.embed_dims == 32  # the overlay's size
    assert base.model.backbone.custom.pretrain == str(study["site"]["pretrained"])
    control = merged("p1/lora=off/seed=1")
    assert control.model.backbone.backbone.type == "VisionTransformerAdapter"
    assert [g.name for g in control.optimizer.backbone.custom] == ["adapter"]
    assert merged("p1/lora=A/seed=1").model.backbone.backbone.lora_r == 32
    assert merged("p2/lora=B/seed=1").model.backbone.backbone.lora_r == 24
    v2 = merged("p1/schedule=v2/seed=1")
    assert v2.workflow.end_epoch == v2.scheduler.max_epoch == 4
    assert "mmaction.ImgAug" in steps("p1/base/seed=1")
    assert "mmaction.ImgAug" not in steps("p2/augment=none/seed=1")
    strong = steps("p2/augment=strong/seed=1")
    assert "mmaction.PytorchVideoWrapper" in strong and "mmaction.ImgAug" not in strong
    first = merged("p3/structure=first_half/seed=1").model.backbone.backbone
    assert first.adapter_index == list(range(6))
    last = merged("p3/structure=last_half/seed=1").model.backbone.backbone
    assert last.adapter_index == list(range(6, 12))
    assert merged("p3/structure=dp015/seed=1").model.backbone.backbone.drop_path_rate == 0.15
    # the strong arm's RandAugment ran in upstream's training (its log dumps the merged config)
    log = (out / "p2" / "augment=strong" / "seed=1" / "work" / "log.json").read_text()
    assert "op='RandAugment'" in log


def test_gpu_rules_ran_in_the_image_with_the_site_bound_read_only(study, opentad_root):
    lines = study["shim_log"].read_text().splitlines()
    execs = [ln.split() for ln in lines if ln.startswith("exec ")]
    # train + detect per run, one preflight, the doctor (upstream's stack reads the checkpoint);
    # CPU rules: host
    assert len(execs) == 2 * 11 + 2
    assert all(str(study["image"]) in c and "--nv" in c for c in execs)
    # each call's line is followed by the binds it saw; those of the GPU jobs (`exec`) count
    binds = {
        nxt.split("=", 1)[1]
        for ln, nxt in zip(lines, lines[1:])
        if ln.startswith("exec ") and nxt.startswith("APPTAINER_BIND=")
    }
    assert len(binds) == 1
    bound = binds.pop().split(",")
    site = study["site"]
    for path in (opentad_root, site["base_config"].parent, site["video_dir"], site["pretrained"]):
        assert any(str(path).startswith(b.split(":")[0]) and b.endswith(":ro") for b in bound), path


def test_the_doctor_ran_before_any_gpu_job_and_opens_the_report(study, opentad_root):
    """The doctor compared the study's first-phase arms (rendered on the smoke overlay) with
    upstream's AdaTAD-S recipe, audited the tiny site and its checkpoint, found no error (the study
    ran), and its diagnosis opens the headline."""
    out = study["out"]
    findings = json.loads((out / "doctor" / "findings.json").read_text())
    assert not [f for f in findings if f["severity"] == "error"]
    by_id = {}
    for f in findings:
        by_id.setdefault(f["id"], []).append(f)
    # every arm is on the overlay's 64 frames, so the difference is the setup's: a warning
    frames = [
        f
        for f in by_id["config-differs"]
        if f["subject"].startswith("model.backbone.backbone.total_frames")
    ]
    assert [(f["found"], f["expected"], f["severity"]) for f in frames] == [(64, 768, "warning")]
    assert "(all configs)" in frames[0]["subject"]
    gpus = [f for f in by_id["config-differs"] if f["subject"].startswith("launch.gpus")]
    assert gpus[0]["found"] == 1 and gpus[0]["expected"] == 2
    # every arm trains fewer epochs than upstream's 60 (v1 arms 3, v2 arms 4): the setup's too
    end = [f for f in by_id["config-differs"] if f["subject"].startswith("workflow.end_epoch")]
    assert sorted((f["found"], f["severity"]) for f in end) == [(3, "warning"), (4, "warning")]
    # a key only the LoRA arms change is their design: info
    lora = [
        f
        for f in by_id["config-differs"]
        if f["subject"].startswith("model.backbone.backbone.lora_r")
    ]
    assert lora and {f["severity"] for f in lora} == {"info"}
    assert "checkpoint-loaded" in by_id and "checkpoint-missing-keys" not in by_id
    videos = pd.read_csv(out / "doctor" / "videos.tsv", sep="\t")
    assert len(videos) == 7 and set(videos["status"]) == {"ok"}
    # before the preflight: the doctor's output is older than the preflight's
    assert (out / "doctor" / "findings.json").stat().st_mtime <= (
        out / "preflight" / "default.json"
    ).stat().st_mtime
    rst = (out / "stats" / "headline.rst").read_text()
    assert "**Baseline diagnosis**" in rst and "the recipe's 69.03 was trained on 2 GPUs" in rst
