"""The study config: schema defaults, semantic checks (one line naming the key), and expansion."""

import copy
from pathlib import Path

import pytest
import yaml

from tadsweep.errors import ConfigError, InputError
from tadsweep.plan import runs, summary
from tadsweep.plan.config import load_study, read_yaml
from tadsweep.site import paths

ROOT = Path(__file__).resolve().parent.parent
REAL = yaml.safe_load((ROOT / "config.yaml").read_text())
DEMO = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())


def broken(edit):
    cfg = copy.deepcopy(REAL)
    edit(cfg)
    return cfg


def set_in(path, value):
    def edit(cfg):
        node = cfg
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


BAD = {
    "unknown key in a variant": (
        set_in(["variants", "lora", "A", "rank"], 32),
        "variants.lora.A: unknown key 'rank'",
    ),
    "typo at top level": (set_in(["phase"], {}), "(top level): unknown key 'phase'"),
    "typo in postprocess": (
        set_in(["postprocess", "default", "simga"], 0.5),
        "postprocess.default: unknown key 'simga'",
    ),
    "unknown axis in an arm": (
        set_in(["phases", "p2", "arms"], [{"lr": "v2"}]),
        "phases.p2.arms[0]: unknown key 'lr'",
    ),
    "unknown variant in an arm": (
        set_in(["phases", "p2", "arms"], [{"lora": "C"}]),
        "phases.p2.arms[0].lora: unknown variant 'C'",
    ),
    "unknown variant in a grid": (
        set_in(["phases", "p1", "grid"], {"schedule": ["v1", "v3"]}),
        "phases.p1.grid.schedule: unknown variant 'v3'",
    ),
    "unknown baseline variant": (
        set_in(["baseline", "augment"], "mixup"),
        "baseline.augment: unknown variant 'mixup'",
    ),
    "unknown base phase": (
        set_in(["phases", "p2", "base"], "p9"),
        "phases.p2.base: unknown phase 'p9'",
    ),
    "cycle between phases": (
        lambda c: (c["phases"]["p2"].update(base="p3"), c["phases"]["p3"].update(base="p2")),
        "in a cycle (p2 -> p3 -> p2)",
    ),
    "warmup longer than training": (
        set_in(["variants", "schedule", "v2", "warmup_epoch"], 120),
        "variants.schedule.v2.warmup_epoch",
    ),
    "cosine shorter than training": (
        set_in(["variants", "schedule", "v2", "cosine_epochs"], 100),
        "variants.schedule.v2.cosine_epochs: 100 < epochs 120",
    ),
    "evaluation window longer than training": (
        set_in(["model", "eval_window"], 60),
        "model.eval_window: evaluation window of 60 epochs",
    ),
    "number written as text": (
        set_in(["variants", "schedule", "v2", "lr"], "3e-4"),
        "variants.schedule.v2.lr: '3e-4' is text, not a number",
    ),
    "integer written as text": (
        set_in(["postprocess", "default", "max_seg_num"], "2000"),
        "postprocess.default.max_seg_num: '2000' is text",
    ),
    "shell-special variant name": (
        set_in(["variants", "lora", "A;rm -rf ~"], {"r": 8}),
        "variants.lora: name 'A;rm -rf ~' may only use",
    ),
    "study name with a space": (
        set_in(["study", "name"], "my study"),
        "study.name: name 'my study'",
    ),
    "variant name with a plus (it joins axes in run ids)": (
        set_in(["variants", "lora", "A+B"], {"r": 8}),
        "variants.lora: name 'A+B' may only use",
    ),
    "phase name with a slash": (
        set_in(["phases", "p/4"], {"base": "p1", "arms": [{"lora": "B"}]}),
        "phases: name 'p/4' may only use",
    ),
    "clip-level mixup": (
        set_in(["variants", "augment", "seed"], {"imgaug": "default", "mixup": 0.2}),
        "variants.augment.seed.mixup: clip-level mixup",
    ),
    "gres asking more GPUs than torchrun starts": (
        set_in(["resources", "train", "gres"], "gpu:a100:2"),
        "resources.train.gres: 'gpu:a100:2' asks 2 GPU(s) but resources.train.gpus is 1; "
        "set gpus: 2",
    ),
    "gres naming no GPU": (
        set_in(["resources", "detect", "gres"], "shard:2"),
        "resources.detect.gres: 'shard:2' asks no GPU",
    ),
    "RandAugment magnitude above what pytorchvideo acts on": (
        set_in(["variants", "augment", "ra"], {"imgaug": "none", "randaugment": {"magnitude": 12}}),
        "variants.augment.ra.randaugment.magnitude: 12 is greater than the maximum of 10",
    ),
    "randaugment on top of the default randaugment": (
        set_in(["variants", "augment", "ra"], {"randaugment": {"num_ops": 2, "magnitude": 9}}),
        "variants.augment.ra.randaugment: ImgAug(transforms='default') already is a RandAugment",
    ),
    "voting sweep where every setting is multiclass": (
        set_in(["postprocess", "grid"], {"multiclass": [True], "voting_thresh": [0.6, 0.7]}),
        "postprocess.grid.voting_thresh: score voting runs only in class-agnostic NMS",
    ),
    "iou threshold sweep with Gaussian soft-NMS": (
        set_in(["postprocess", "grid"], {"iou_threshold": [0.3, 0.5]}),
        "postprocess.grid.iou_threshold: inert with Gaussian soft-NMS",
    ),
    "adapter on a block that does not exist": (
        set_in(["variants", "structure", "deep"], {"adapter_index": [10, 12]}),
        "variants.structure.deep.adapter_index: block 12 does not exist",
    ),
    "arm listed twice": (
        set_in(["phases", "p2", "arms"], [{"lora": "B"}, {"lora": "B"}]),
        "phases.p2.arms[1]: repeats arm lora=B",
    ),
    "arm equal to the baseline": (
        set_in(["phases", "p1", "arms"], [{"lora": "v1"}]),
        "phases.p1.arms[0]: repeats the base",
    ),
    "duplicate seeds": (set_in(["study", "seeds"], [1, 1]), "study.seeds"),
    "unknown ensemble phase": (
        set_in(["ensemble", "phases"], ["p7"]),
        "ensemble.phases: unknown phase 'p7'",
    ),
    "dropout out of range": (
        set_in(["variants", "lora", "B", "dropout"], 1.5),
        "variants.lora.B.dropout",
    ),
    "missing baseline axis": (
        lambda c: c["baseline"].pop("structure"),
        "baseline: 'structure' is a required property",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_is_one_line_naming_the_key(case):
    edit, expected = BAD[case]
    with pytest.raises(ConfigError) as info:
        load_study(broken(edit), source="config.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("config.yaml: ")
    assert expected in message, message


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        read_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("study:\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+: invalid YAML") as info:
        read_yaml(bad)
    assert "\n" not in str(info.value)


def test_missing_site_paths_are_refused_before_any_job(tmp_path):
    cfg, _ = load_study(broken(set_in(["paths", "opentad_root"], str(tmp_path))))
    with pytest.raises(ConfigError, match="paths.opentad_root: .* is not an OpenTAD checkout"):
        paths.check_site_paths(cfg, tmp_path / "ok", tmp_path / "gt.json")
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "train.py").write_text("")
    with pytest.raises(ConfigError, match=r"paths\.base_config: .*e2e_thumos.* does not exist"):
        paths.check_site_paths(cfg, tmp_path / "ok", tmp_path / "gt.json")
    assert not (tmp_path / "ok").exists() and not (tmp_path / "gt.json").exists()


def test_defaults_and_inert_warnings():
    cfg, warnings = load_study(copy.deepcopy(REAL))
    assert cfg["selection"] == {
        "metric": "average_mAP",
        "epoch": "final",
        "aggregate": "mean",
        "crossfit": True,
    }
    assert cfg["variants"]["lora"]["v1"]["targets"] == ["qkv", "proj", "fc1", "fc2"]
    assert cfg["variants"]["schedule"]["v2"]["cosine_epochs"] == 120
    assert cfg["resources"]["train"]["gpus"] == 1
    assert any(w.startswith("postprocess.default.voting_thresh: inert") for w in warnings)
    assert any("60 of 100 cosine epochs" in w for w in warnings)


def per_phase(cfg):
    counts = {}
    for run in runs.expand(cfg):
        counts[run.phase] = counts.get(run.phase, 0) + 1
    return counts


def test_run_counts_real_study():
    cfg, _ = load_study(copy.deepcopy(REAL))
    # p1: 2x2 lora x schedule grid (incl. the baseline) + the adapter-only control, 3 seeds
    assert per_phase(cfg) == {"p1": 15, "p2": 9, "p3": 9}
    assert "p1/lora=off/seed=2" in runs.run_by_id(cfg)
    assert "p1/lora=A+schedule=v2/seed=3" in runs.run_by_id(cfg)


def test_run_counts_demo_study():
    cfg, _ = load_study(copy.deepcopy(DEMO))
    assert per_phase(cfg) == {"p1": 10, "p2": 4, "p3": 4}


def test_run_ids_are_stable_and_shell_safe():
    first = [r.run_id for r in runs.expand(load_study(copy.deepcopy(REAL))[0])]
    reordered = copy.deepcopy(REAL)
    reordered["variants"] = dict(reversed(list(reordered["variants"].items())))
    second = [r.run_id for r in runs.expand(load_study(reordered)[0])]
    assert first == second
    assert len(set(first)) == len(first)
    import re

    assert all(re.fullmatch(r"[A-Za-z0-9_.=+/-]+", rid) for rid in first)


def test_resolved_params_follow_the_winner():
    cfg, _ = load_study(copy.deepcopy(REAL))
    by_id = runs.run_by_id(cfg)
    v2 = runs.resolve_params(cfg, by_id["p1/lora=A+schedule=v2/seed=1"])
    assert v2["lora"] == {
        "r": 32,
        "alpha": 64,
        "dropout": 0.05,
        "targets": ["qkv", "proj", "fc1", "fc2"],
    }
    assert v2["schedule"]["epochs"] == 120 and v2["schedule"]["cosine_epochs"] == 120
    assert v2["schedule"]["val_start_epoch"] == 100 and v2["schedule"]["lr"] == 3.0e-4
    winner = {"lora": "A", "schedule": "v2", "augment": "default", "structure": "all"}
    p3 = runs.resolve_params(cfg, by_id["p3/structure=first_half/seed=2"], winner)
    assert p3["variants"] == dict(winner, structure="first_half")
    assert p3["structure"]["adapter_index"] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="needs the winner of phase p2"):
        runs.resolve_params(cfg, by_id["p3/structure=first_half/seed=2"])


def test_postprocess_settings_merge_inert_knobs():
    cfg, _ = load_study(copy.deepcopy(REAL))
    settings = runs.postprocess_settings(cfg)
    assert settings[0]["setting"] == "default" and settings[0]["voting_thresh"] == 0.0
    # 6 sigmas x 4 caps: multiclass ignores voting (1 setting), class-agnostic has 4 voting values
    assert len(settings) == 6 * 4 * (1 + 4)
    assert len({s["setting"] for s in settings}) == len(settings)
    # the detector's per-window pre_nms_* act before candidates exist: never part of the sweep
    assert all("pre_nms_topk" not in s and "pre_nms_thresh" not in s for s in settings)
    assert settings[0]["video_topk"] is None and settings[0]["video_thresh"] is None


def test_plan_summary_counts_and_cost():
    cfg, warnings = load_study(copy.deepcopy(REAL))
    text = summary.plan_summary(cfg, warnings)
    assert "naive cross product of all variants: 96 configs x 3 seeds = 288 runs" in text
    assert "the phasing trains 33" in text
    # p1 is exact: 3 runs each of v1 (60 ep), A+v1, v2, A+v2 (120 ep), off+v1 at 3 min/epoch
    p1 = next(line for line in text.splitlines() if line.startswith("p1 "))
    expected = 3 * (60 + 60 * 1.2 + 120 + 120 * 1.2 + 60) * 3 / 60
    assert p1.split()[-1] == f"{expected:.2f}"


def test_gres_and_gpus_that_agree_are_taken():
    cfg = copy.deepcopy(REAL)
    cfg["resources"]["train"].update(gres="gpu:a100:2", gpus=2)
    cfg["resources"]["detect"].update(gres="gpu", gpus=1)  # no count: one GPU, as SLURM reads it
    study, _ = load_study(cfg)
    assert study["resources"]["train"]["gpus"] == 2


def test_site_check_warns_when_slurm_cannot_be_asked(tmp_path, monkeypatch):
    """Planning where SLURM does not answer (no sinfo, or no controller) warns; it never blocks
    (the live refusal of an unknown partition: tests/test_slurm_workflow.py)."""
    from tadsweep.site import slurm

    assert slurm.check_site({}) == []  # nothing set: nothing asked
    monkeypatch.setenv("PATH", str(tmp_path))
    (warning,) = slurm.check_site({"slurm_partition": "gpu"})
    assert warning == "resources.slurm_partition: sinfo not found; 'gpu' is not checked"
    sinfo = tmp_path / "sinfo"
    sinfo.write_text("#!/bin/sh\necho 'slurm_load_partitions: Unable to contact' >&2\nexit 1\n")
    sinfo.chmod(0o755)
    (warning,) = slurm.check_site({"slurm_partition": "gpu"})
    assert "sinfo slurm_load_partitions: Unable to contact; 'gpu' is not checked" in warning
    sinfo.write_text("#!/bin/sh\nprintf 'debug*\\ngpu\\n'\n")
    assert slurm.check_site({"slurm_partition": "gpu"}) == []
    with pytest.raises(InputError, match="'a100' is not known to SLURM \\(sinfo lists debug, gpu"):
        slurm.check_site({"slurm_partition": "a100"})


@pytest.mark.parametrize("results", ["/scratch/me/results", "../results", "./results"])
def test_results_outside_the_working_directory_say_the_rule_and_the_way_out(results):
    """study.results is relative to the working directory; --directory puts results elsewhere."""
    with pytest.raises(ConfigError) as info:
        load_study(broken(set_in(["study", "results"], results)), source="config.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"config.yaml: study.results: {results!r}")
    assert ("is an absolute path" in message) == results.startswith("/")
    assert "relative to the working directory" in message and "--directory DIR" in message
    assert "may only use" not in message  # not the rule for names
