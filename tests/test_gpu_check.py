"""tadsweep.site.gpu_check (`make gpu-check`, scripts/gpu_check.py): the real upstream detector per
LoRA variant of config.yaml, on the CPU with the smoke overlay (--tiny). The GPU figures themselves
need a GPU; these tests pin what the tool measures and how it projects an epoch."""

import json
import math
import subprocess
import sys

import opentad_site
import pytest
import yaml

from tadsweep.errors import InputError
from tadsweep.site import gpu_check as tool

pytestmark = pytest.mark.opentad

SCRIPT = opentad_site.REPO / "scripts" / "gpu_check.py"
CONFIG = opentad_site.REPO / "config.yaml"


def gpu_check(root, *args, env=None, command=(str(SCRIPT),)):
    # LOCAL_RANK: as a torchrun worker, so the CUDA double's numpy-1 shims load (imgaug, in the
    # real train pipeline); the tool itself sets up its own one-process group
    return subprocess.run(
        [sys.executable, *command, *map(str, args)],
        cwd=opentad_site.REPO,
        env=env or {**opentad_site.environment(root), "LOCAL_RANK": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def study_lora() -> dict:
    return yaml.safe_load(CONFIG.read_text())["variants"]["lora"]


@pytest.fixture(scope="module")
def tiny_run(opentad_root, tiny_site, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    args = ["--tiny", "--iters", 3, "--warmup", 1, "--device", "cpu", "--out", out]
    args += ["--annotation", tiny_site["annotation"], "--pretrained", tiny_site["pretrained"]]
    res = gpu_check(opentad_root, *args)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(out.read_text()), res.stdout


def test_one_entry_per_lora_variant_of_the_study(tiny_run):
    report, stdout = tiny_run
    names = list(study_lora())
    assert report["variant_names"] == names
    assert sorted(report["variants"]) == sorted(names) and not report["failed"]
    assert report["baseline_variant"] == yaml.safe_load(CONFIG.read_text())["baseline"]["lora"]
    for name, spec in study_lora().items():
        v = report["variants"][name]
        assert v["lora"]["r"] == spec["r"]
        assert v["backbone"] == (
            "VisionTransformerAdapterLoRA" if spec["r"] else "VisionTransformerAdapter"
        )
        if spec["r"]:
            assert (v["lora"]["alpha"], v["lora"]["dropout"]) == (spec["alpha"], spec["dropout"])
        assert v["cost_factor_config"] == spec.get("cost_factor", 1.0)
    # the side-by-side table and the suggested values, AMP off said
    table = stdout[stdout.index("variant ") :]
    assert all(f"\n{name} " in table for name in names)
    assert "AMP off" in stdout and "fp16 autocast needs CUDA" in stdout
    assert "minutes_per_epoch:" in stdout and "mem_mb:" in stdout and "margin 1.5x" in stdout


def test_timing_and_projection_are_consistent(tiny_run, tiny_site):
    report, _ = tiny_run
    anno = json.loads(tiny_site["annotation"].read_text())["database"]
    videos = sum(v["subset"] == "training" for v in anno.values())
    assert videos == 4
    assert report["train_videos"] == videos
    assert report["iterations_per_epoch"] == videos // report["input"]["batch"] == 2
    assert report["input_shape"] == [2, 1, 3, 64, 32, 32]  # the smoke overlay's sizes
    assert report["device"] == "cpu" and report["amp"] is False and report["amp_config"] is True
    for v in report["variants"].values():
        steps = v["iteration_seconds"]
        assert len(steps) == v["iterations"] == 3 and all(s > 0 for s in steps)
        sec = v["seconds_per_iteration"]
        assert math.isfinite(v["iterations_per_second"]) and v["iterations_per_second"] > 0
        assert sec == pytest.approx(sum(steps) / 3) == pytest.approx(v["timed_seconds"] / 3)
        assert v["iterations_per_second"] == pytest.approx(1 / sec)
        assert v["minutes_per_epoch"] == pytest.approx(report["iterations_per_epoch"] * sec / 60)
        assert math.isfinite(v["loss"])
        # CPU: host memory only
        assert v["peak_gpu_allocated_mb"] is None and v["peak_gpu_reserved_mb"] is None
        assert v["peak_host_rss_mb"] > 100
    sug = report["suggested"]
    base = report["variants"][report["baseline_variant"]]
    assert sug["minutes_per_epoch"] == pytest.approx(base["minutes_per_epoch"], abs=0.01)
    assert sug["minutes_per_epoch"] >= base["minutes_per_epoch"]
    peak = max(v["peak_host_rss_mb"] for v in report["variants"].values())
    assert sug["mem_mb"] >= 1.5 * peak and sug["mem_mb"] % 1000 == 0


def test_parameters_and_weights_per_variant(tiny_run):
    report, _ = tiny_run
    variants, spec = report["variants"], study_lora()
    p = {name: v["parameters"] for name, v in variants.items()}
    rank = {name: s["r"] for name, s in spec.items()}
    # config.yaml: the adapter-only control "off" (r 0) and LoRA of several ranks (v1 16, A 32)
    assert 0 in rank.values() and len(set(rank.values()) - {0}) >= 2
    for name in spec:
        if rank[name] == 0:
            assert p[name]["lora"] == 0 and variants[name]["weights"]["lora_changed"] is None
        for other in spec:
            if rank[name] > rank[other]:
                assert p[name]["lora"] > p[other]["lora"], (name, other)
    per_rank = {p[n]["lora"] / rank[n] for n in spec if rank[n]}
    assert len(per_rank) == 1  # LoRA size is linear in r: each variant's r reached the model
    adapters = {q["adapter"] for q in p.values()}
    frozen = {q["frozen_backbone"] for q in p.values()}
    assert len(adapters) == 1 and adapters.pop() > 0 and len(frozen) == 1
    for name, v in variants.items():
        q, w = v["parameters"], v["weights"]
        # upstream's optimizer holds all LoRA and adapter weights, no frozen VideoMAE weight
        assert q["lora_in_optimizer"] == q["lora"] and q["adapter_in_optimizer"] == q["adapter"]
        assert q["frozen_backbone_in_optimizer"] == 0
        assert q["trainable"] == q["lora"] + q["adapter"] + q["head"]
        assert q["trainable"] - min(x["trainable"] for x in p.values()) == q["lora"]
        # and during the timed steps only those moved
        assert w["frozen_backbone_unchanged"] is True, name
        before, after = w["sha256"]["frozen_backbone"]
        assert before == after and len(before) == 64
        assert w["adapter_changed"] is True and w["head_changed"] is True, name
        if spec[name]["r"]:
            assert w["lora_changed"] is True, name
            assert w["sha256"]["lora"][0] != w["sha256"]["lora"][1]


def test_default_epoch_is_thumos_and_a_subset_of_variants(opentad_root, tmp_path):
    baseline = yaml.safe_load(CONFIG.read_text())["baseline"]["lora"]
    other = next(name for name in study_lora() if name != baseline)
    out = tmp_path / "one.json"
    args = ["--tiny", "--variants", other, "--iters", 1, "--warmup", 0, "--data-iters", 0]
    args += ["--out", out]
    res = gpu_check(opentad_root, *args)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    assert list(report["variants"]) == [other]
    assert report["train_videos"] == 200 and report["iterations_per_epoch"] == 100
    assert "THUMOS-14's validation set" in report["train_videos_source"]
    # the baseline variant was not measured: no minutes_per_epoch to suggest
    assert "minutes_per_epoch" not in report["suggested"]
    assert f"the baseline variant {baseline} was not run" in res.stdout
    assert report["data_loading"] is None and "Data loading: not measured" in res.stdout


def _one_error_line(res, *words):
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for word in words:
        assert word in lines[0]


def test_bad_input_is_one_line_and_exit_2(opentad_root, tmp_path):
    env = opentad_site.environment(opentad_root)
    no_root = {k: v for k, v in env.items() if k != "OPENTAD_ROOT"}
    _one_error_line(gpu_check(opentad_root, "--tiny", env=no_root), "--opentad-root")
    # the module runs as itself too, under the same convention
    module = ("-m", "tadsweep.site.gpu_check")
    _one_error_line(gpu_check(opentad_root, "--tiny", env=no_root, command=module), "$OPENTAD_ROOT")
    _one_error_line(gpu_check(opentad_root, "--tiny", "--opentad-root", tmp_path), "tools/train.py")
    cfg = yaml.safe_load(CONFIG.read_text())
    del cfg["variants"]
    broken = tmp_path / "study.yaml"
    broken.write_text(yaml.safe_dump(cfg))
    _one_error_line(gpu_check(opentad_root, "--tiny", "--config", broken), "variants")
    _one_error_line(gpu_check(opentad_root, "--tiny", "--variants", "v9"), "v9", "v1")
    anno = tmp_path / "anno.json"
    anno.write_text(json.dumps({"database": {"a": {"subset": "validation", "annotations": []}}}))
    _one_error_line(gpu_check(opentad_root, "--tiny", "--annotation", anno), "training")


def test_training_videos_as_upstream_counts_them(tmp_path):
    act = [{"segment": [1.0, 2.0], "label": "Diving"}]
    database = {
        "t1": {"subset": "training", "annotations": act},
        "t2": {"subset": "training", "annotations": act * 3},
        "t3": {"subset": "training", "annotations": act},
        "amb": {"subset": "training", "annotations": [{"segment": [1, 2], "label": "Ambiguous"}]},
        "empty": {"subset": "training", "annotations": []},
        "test": {"subset": "validation", "annotations": act},
    }
    path = tmp_path / "anno.json"
    path.write_text(json.dumps({"database": database}))
    # ThumosPaddingDataset keeps training videos with ground truth; the loader drops the last
    # partial batch (drop_last=True)
    assert tool.training_videos(path) == 3
    assert tool.iterations_per_epoch(3, 2) == 1 and tool.iterations_per_epoch(200, 2) == 100
    with pytest.raises(InputError):
        tool.iterations_per_epoch(1, 2)


def test_data_wait_on_the_real_train_loader(tiny_run):
    """The baseline variant trained on upstream's train loader over synthetic videos, with the
    workers and decord threads of the launch config a job writes (read back through mmengine:
    the smoke overlay's 2 workers x 4 threads replaced)."""
    from tadsweep.backends.opentad.run import loader_threads

    report, stdout = tiny_run
    data = report["data_loading"]
    assert data["variant"] == report["baseline_variant"]
    workers, threads = loader_threads(data["cpus"], 1)
    assert data["num_workers"] == workers and data["decord_threads"] == [threads]
    assert (workers, threads) != (2, 4) or data["cpus"] >= 9
    assert data["iterations"] == 3 and len(data["wait_seconds"]) == 2
    assert data["first_batch_seconds"] > 0 and data["seconds_per_iteration"] > 0
    assert 0 <= data["data_wait_share"] <= 1
    assert sum(data["wait_seconds"]) <= data["seconds_per_iteration"] * 2
    assert "of each iteration waiting for data" in stdout
    assert f"{workers} DataLoader workers x {threads} decord thread(s)" in stdout


def test_loader_threads_follow_the_jobs_cpus(monkeypatch):
    import os

    from tadsweep.backends.opentad.run import job_cpus, loader_threads

    assert loader_threads(8, 1) == (7, 1)  # the study: 8 CPUs per GPU (upstream: 2 x 4)
    assert loader_threads(16, 2) == (7, 1)
    assert loader_threads(32, 1) == (8, 3)  # past 8 workers, decord threads
    assert loader_threads(1, 1) == (1, 1) and loader_threads(2, 4) == (1, 1)
    mine = len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert job_cpus() == mine
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert job_cpus() == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "x")
    monkeypatch.setenv("OMP_NUM_THREADS", str(mine + 5))
    assert job_cpus() == mine
