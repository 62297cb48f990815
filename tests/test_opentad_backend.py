"""The opentad backend (`python -m tadsweep.backends.opentad train|detect`) running upstream's
unedited tools/train.py and tools/test.py under torchrun, on CPU (tests/doubles/cuda stands in for
the GPU), with a config rendered from the user's config.yaml on the smoke overlay and a tiny THUMOS
site."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import opentad_site
import pandas as pd
import psutil
import pytest
import torch

from tadsweep.backends.opentad import render, stop
from tadsweep.detections import formats, postprocess
from tadsweep.plan import runs
from tadsweep.plan.config import load_study
from tadsweep.report.curves import parse_log

pytestmark = pytest.mark.opentad
REPO = Path(__file__).resolve().parents[1]
RUN_ID = "p1/lora=A+schedule=v2/seed=1"  # "=" and "+" as in real run ids
EPOCHS = 4  # checkpoints after epochs 1 and 3; evaluations after 1 and 3


def study_params() -> tuple[dict, dict]:
    """The baseline run of config.yaml (v1 LoRA, its post-processing default) on 4 epochs, and the
    sweep's default setting for it."""
    cfg, _ = load_study(str(REPO / "config.yaml"))
    run = next(r for r in runs.expand(cfg) if r.phase == "p1" and r.arm == "base")
    params = runs.resolve_params(cfg, run)
    params.update(run_id=RUN_ID, seed=1)
    params["schedule"].update(
        epochs=EPOCHS, cosine_epochs=6, warmup_epoch=1, val_start_epoch=1, val_interval=2
    )
    default = {k: v for k, v in runs.postprocess_settings(cfg)[0].items() if k != "setting"}
    return params, default


def make_run(tmp: Path, root: Path, site: dict, params: dict | None = None) -> Path:
    params = params or study_params()[0]
    run = tmp / "runs" / RUN_ID
    run.mkdir(parents=True)
    (run / "params.json").write_text(json.dumps(params))
    base = render.load_base(str(root), str(site["base_config"]))
    data = dict(
        annotation_path=site["annotation"],
        class_map=site["class_map"],
        data_path=site["video_dir"],
        pretrain=site["pretrained"],
    )
    render.write_config(params, run / "config.py", base, data=data)
    return run


def cli(root: Path, command: str, run: Path, *extra, popen=False):
    cmd = [sys.executable, "-m", "tadsweep.backends.opentad", command]
    cmd += ["--params", run / "params.json"]
    cmd += ["--config", run / "config.py", "--opentad-root", root, "--work-dir", run / "work"]
    cmd = [str(c) for c in [*cmd, *extra]]
    env = opentad_site.environment(root)
    if popen:
        # a session of its own: a test can signal the whole process tree, as SLURM does
        return subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def train(root, run, *extra, popen=False):
    return cli(root, "train", run, "--done", run / "train.json", *extra, popen=popen)


def checkpoint_names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "work" / "checkpoint").glob("epoch_*.pth"))


def step_tree(pid: int) -> dict[str, list[psutil.Process]]:
    """The processes under the launcher `pid`: torchrun, the training processes (children of
    torchrun, running tools/train.py) and their DataLoader workers (forked: a training
    process's command line)."""
    tree = {"torchrun": [], "training": [], "loader": []}
    for p in psutil.Process(pid).children(recursive=True):
        try:
            cmd, parent = p.cmdline(), p.parent().cmdline()
        except psutil.NoSuchProcess:
            continue
        if "tools/train.py" in cmd:
            role = "loader" if cmd == parent else "training" if p.ppid() != pid else "torchrun"
            tree[role].append(p)
    return tree


def sigterm_in_epoch_2(proc, log: Path, to) -> None:
    """Once epoch 2 is loading its data, SIGTERM the processes `to(step_tree)` names."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        text = log.read_text() if log.exists() else ""
        assert "[Train]: Epoch 3 started" not in text, "no DataLoader worker seen in epoch 2"
        if "[Train]: Epoch 2 started" in text:
            tree = step_tree(proc.pid)
            if tree["loader"]:
                for p in to(tree):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        p.send_signal(signal.SIGTERM)
                return
        time.sleep(0.005)
    raise AssertionError("the training ended or stalled before a DataLoader worker of epoch 2")


def stopped(proc, log: Path) -> str:
    """Wait for the launcher (killing what is left after 120 s: a hung rank); its stderr and the
    log's tail, for assertion messages."""
    try:
        stderr = proc.communicate(timeout=120)[1]
    except subprocess.TimeoutExpired:
        for p in [*psutil.Process(proc.pid).children(recursive=True), proc]:
            p.kill()
        stderr = b"(killed: still running 120 s after the signal)\n" + proc.communicate()[1]
    stderr = stderr.decode(errors="replace")[-3000:]
    return f"{stderr}\n--- log.json ---\n{log.read_text()[-3000:]}"


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, opentad_root, tiny_site):
    run = make_run(tmp_path_factory.mktemp("trained"), opentad_root, tiny_site)
    proc = train(opentad_root, run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_real_training_layout_log_and_train_json(trained):
    work = trained / "work"
    # checkpoints when (e + 1) % 2 == 0, and always after the last epoch
    assert checkpoint_names(trained) == ["epoch_1.pth", "epoch_3.pth"]
    assert (work / ".opentad" / "gpu1_id0").resolve() == work.resolve()
    done = json.loads((trained / "train.json").read_text())
    assert done["epochs"] == EPOCHS and done["final_epoch"] == 3 and done["resumed_from"] is None
    assert done["seconds"] > 0 and done["gpus"] == 1 and done["attempts"] == 1
    curves = parse_log(work / "log.json")
    assert curves["epoch"].tolist() == [0, 1, 2, 3]
    # upstream's in-training evaluation ran after e >= 1 with (e + 1) % 2 == 0
    assert curves.dropna(subset=["average_mAP"])["epoch"].tolist() == [1, 3]
    assert curves["iter"].eq(1).all()  # 4 training videos / global batch 2 -> iterations 0, 1
    text = (work / "log.json").read_text()
    assert "type='VisionTransformerAdapterLoRA'" in text
    assert "Using DDP with total 1 GPUS..." in text and "Using Model EMA..." in text


def test_lora_and_adapters_trained_frozen_vit_untouched(trained, tiny_site):
    params = json.loads((trained / "params.json").read_text())
    ckpt = load_checkpoint(trained / "work" / "checkpoint" / "epoch_3.pth")
    pretrained = torch.load(tiny_site["pretrained"], weights_only=False)["state_dict"]
    prefix = "module.backbone.model."  # DDP -> detector.backbone (wrapper) -> Recognizer3D
    for key in ("state_dict", "state_dict_ema"):
        state = ckpt[key]
        lora_b = [k for k in state if ".lora_B." in k]
        up = [k for k in state if k.endswith("adapter.up_proj.weight")]
        assert len(lora_b) == 12 * 4 and len(up) == 12  # 4 targets and an adapter per block
        # LoRA B and the adapters' up-projections start at exactly zero: both moved
        assert all(state[k].abs().max() > 0 for k in lora_b + up), key
        # every pretrained ViT weight is bit-identical in the trained model (LoRA'd layers:
        # peft's base_layer). Upstream's ModelEma averages every state entry, frozen ones too, and
        # decay * w + (1 - decay) * w is w only up to float rounding: the EMA copy is within it.
        frozen = 0
        for name, value in pretrained.items():
            if not name.startswith("backbone."):
                continue  # the Kinetics classifier head is not part of the detector
            target = prefix + name
            if target not in state:
                target = re.sub(r"\.(weight|bias)$", r".base_layer.\1", target)
            if key == "state_dict":
                assert torch.equal(state[target], value), name
            else:
                torch.testing.assert_close(state[target], value, rtol=1e-6, atol=1e-7)
            frozen += 1
        assert frozen == len([n for n in pretrained if n.startswith("backbone.")])
    # the optimizer held one group of exactly the LoRA weights, at the configured lr and decay
    n_lora = len([k for k in ckpt["state_dict"] if ".lora_" in k])
    groups = [g for g in ckpt["optimizer"]["param_groups"] if len(g["params"]) == n_lora]
    assert len(groups) == 1
    assert groups[0]["initial_lr"] == params["schedule"]["lr"]
    assert groups[0]["weight_decay"] == params["schedule"]["weight_decay"]
    assert all(ckpt["optimizer"]["state"][i]["step"] > 0 for i in groups[0]["params"])


def test_second_call_after_completion_does_not_train_again(opentad_root, trained):
    log_before = (trained / "work" / "log.json").read_text()
    proc = train(opentad_root, trained)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (trained / "work" / "log.json").read_text() == log_before
    assert json.loads((trained / "train.json").read_text())["attempts"] == 1


def upstream_test(root: Path, run: Path, out: Path, *options: str) -> str:
    """Upstream tools/test.py on the final checkpoint with the run's own config (its NMS and
    evaluation), save_dict on; returns test.py's log."""
    launch = out / "launch.py"
    out.mkdir(parents=True)
    launch.write_text(f"_base_ = [{str(run / 'config.py')!r}]\nwork_dir = {str(out)!r}\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=1"]
    cmd += ["--rdzv_backend=c10d", "--rdzv_endpoint=localhost:0", "tools/test.py", str(launch)]
    cmd += ["--checkpoint", str(run / "work" / "checkpoint" / "epoch_3.pth"), "--cfg-options"]
    cmd += ["post_processing.save_dict=True", *options]
    env = opentad_site.environment(root)
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return next(out.glob("gpu*_id0/log.json")).read_text()


def test_detect_candidates_give_upstreams_own_detections_and_map(
    opentad_root, trained, tiny_site, tmp_path
):
    """`detect` saves every window's pre-NMS candidates (upstream test.py, nms=None); tadsweep's
    post-processing of them with the default setting gives exactly the detections upstream's own
    test.py writes after its NMS, and the sweep's default row the mAP upstream's evaluator gives."""
    candidates = trained / "candidates.npz"
    proc = cli(opentad_root, "detect", trained, "--out", candidates)
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = formats.load(candidates)
    gt = json.loads(tiny_site["annotation"].read_text())["database"]
    test_videos = sorted(v for v, info in gt.items() if info["subset"] == "validation")
    assert sorted(raw) == test_videos
    # nms=None: every window's top-2000 (upstream's per-window pre_nms_topk) are kept
    assert all(len(raw[v]) > 2000 for v in test_videos)
    assert (
        "Checkpoint is epoch 3."
        in next((trained / "work" / "detect").glob("*/log.json")).read_text()
    )

    log = upstream_test(opentad_root, trained, tmp_path / "upstream")
    upstream_dets = json.loads(
        next((tmp_path / "upstream").glob("*/result_detection.json")).read_text()
    )
    _, default = study_params()
    setting = postprocess.NMSSetting.from_dict(default)
    ours = postprocess.apply({"results": raw}, setting)
    assert ours == upstream_dets["results"]

    # the workflow's sweep step on the same candidates (its default setting's row)
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps([{"setting": "default", **default}]))
    sweep = tmp_path / "sweep.tsv"
    cmd = [sys.executable, "-m", "tadsweep.detections.postprocess", "sweep"]
    cmd += ["--gt", tiny_site["annotation"], "--candidates", candidates, "--grid", settings]
    cmd += ["--out", sweep]
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True, timeout=600)
    metrics = pd.read_csv(sweep, sep="\t").set_index("setting").loc["default"]
    logged = float(re.search(r"Average-mAP: +([0-9.]+) \(%\)", log).group(1))
    assert round(metrics["average_mAP"] * 100, 2) == logged
    for t in (0.3, 0.5, 0.7):
        logged_t = float(re.search(rf"mAP at tIoU {t:.2f} is +([0-9.]+)%", log).group(1))
        assert round(metrics[f"mAP@{t}"] * 100, 2) == logged_t
    with opentad_site.importable(opentad_root):
        from opentad.evaluations.mAP import mAP

        upstream_eval = mAP(
            ground_truth_filename=str(tiny_site["annotation"]),
            prediction_filename={"results": ours},
            subset="validation",
            tiou_thresholds=[0.3, 0.4, 0.5, 0.6, 0.7],
        )
        upstream_eval.evaluate()
    assert metrics["average_mAP"] == pytest.approx(float(upstream_eval.mAPs.mean()), abs=1e-12)


@pytest.mark.parametrize("reach", ["the launcher", "every process"])
def test_stopped_training_saves_its_epoch_and_resumes_through_upstream_resume(
    opentad_root, tiny_site, trained, tmp_path, reach
):
    """SIGTERM mid-epoch -- to the launcher only (rundir passes a local kill on), or to every
    process as SLURM signals a job step before its time limit -- stops upstream's training at the
    end of that epoch with its checkpoint (saved although no checkpoint_interval falls there),
    and the step exits 128 + 15; a half-written final checkpoint is not mistaken for the end; the
    rerun resumes with upstream's --resume from the newest readable checkpoint and ends where the
    uninterrupted run ended.

    Upstream is deterministic on CPU (the run before the stop is bit-identical to the
    uninterrupted one), but its checkpoints hold no RNG state: after a resume, augmentation draws
    and dropout masks restart from the seed. So the final weights differ from the uninterrupted
    run's by that noise only: asserted below 25% of the distance both runs moved since epoch 1
    (4.6% measured); the schedule, step counts and frozen weights are exact."""
    run = make_run(tmp_path, opentad_root, tiny_site)
    proc = train(opentad_root, run, popen=True)
    log = run / "work" / "log.json"
    if reach == "the launcher":
        sigterm_in_epoch_2(proc, log, lambda tree: [psutil.Process(proc.pid)])
    else:  # as SLURM's cgroup does: the training is a session of its own, and torch ends a
        # DataLoader worker at once on a SIGTERM that is not from its parent
        sigterm_in_epoch_2(
            proc, log, lambda tree: [psutil.Process(proc.pid), *sum(tree.values(), [])]
        )
    why = stopped(proc, log)
    assert proc.returncode == 128 + signal.SIGTERM, why
    assert checkpoint_names(run) == ["epoch_1.pth", "epoch_2.pth"], why
    assert not (run / "train.json").exists()
    assert "Stop requested (SIGTERM): saved epoch_2.pth" in log.read_text()
    # a final checkpoint cut short by a kill must be neither "done" nor resumed from
    (run / "work" / "checkpoint" / "epoch_3.pth").write_bytes(b"PK\x03\x04 truncated")

    rerun = train(opentad_root, run)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    done = json.loads((run / "train.json").read_text())
    assert done["resumed_from"] == 2 and done["attempts"] == 2
    text = log.read_text()
    assert f"Resume training from: {run / 'work' / 'checkpoint' / 'epoch_2.pth'}" in text
    assert "Resume epoch is 2" in text
    assert parse_log(log)["epoch"].tolist() == [0, 1, 2, 3]

    ref = trained / "work" / "checkpoint"
    before = load_checkpoint(run / "work" / "checkpoint" / "epoch_1.pth")
    ref_before = load_checkpoint(ref / "epoch_1.pth")
    for key in ("state_dict", "state_dict_ema"):
        assert all(torch.equal(before[key][k], v) for k, v in ref_before[key].items())
    final, ref_final = (
        load_checkpoint(p / "epoch_3.pth") for p in (run / "work" / "checkpoint", ref)
    )
    assert final["epoch"] == ref_final["epoch"] == 3
    assert final["scheduler"] == ref_final["scheduler"]
    steps = [s["step"] for s in final["optimizer"]["state"].values()]
    assert steps == [s["step"] for s in ref_final["optimizer"]["state"].values()]
    moved = diff = 0.0
    for k, ref_value in ref_final["state_dict"].items():
        value, start = final["state_dict"][k].double(), ref_before["state_dict"][k].double()
        if k.endswith("num_batches_tracked"):
            continue
        moved += float(((ref_value.double() - start) ** 2).sum())
        diff += float(((value - ref_value.double()) ** 2).sum())
        if ".lora_" not in k and "adapter" not in k and "backbone.model.backbone" in k:
            assert torch.equal(value, ref_value.double()), k  # frozen: exact
    assert moved > 0 and (diff / moved) ** 0.5 < 0.25


def test_two_processes_keep_the_global_batch_and_stop_together(opentad_root, tiny_site, tmp_path):
    """Two ranks split the global batch. SLURM's SIGTERM reaches them at different moments: a
    stop that only rank 1 saw still stops both at the same epoch's end, and rank 0 saves it."""
    run = make_run(tmp_path, opentad_root, tiny_site)
    proc = train(opentad_root, run, "--gpus", "2", popen=True)
    log = run / "work" / "log.json"
    ranks = {}

    def rank_1_and_its_workers(tree):
        ranks.update({p.environ()["RANK"]: p for p in tree["training"]})
        return [ranks["1"], *ranks["1"].children()]

    sigterm_in_epoch_2(proc, log, rank_1_and_its_workers)
    why = stopped(proc, log)
    assert sorted(ranks) == ["0", "1"], why
    assert (run / "work" / ".opentad" / "gpu2_id0").is_symlink()
    assert "Using DDP with total 2 GPUS..." in log.read_text()
    assert parse_log(log)["iter"].eq(1).all()  # global batch still 2
    # the launcher got no signal: to it, a training that exits early has failed
    assert proc.returncode == 1 and "OpenTAD training exited with status 1" in why, why
    assert checkpoint_names(run) == ["epoch_1.pth", "epoch_2.pth"], why
    assert "Stop requested (SIGTERM): saved epoch_2.pth" in log.read_text()


HUNG_WORKER = """
import multiprocessing, signal, time

def train_one_epoch(curr_epoch):  # upstream tools/train.py's names: the stop module installs
    pass

def save_checkpoint():
    pass

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # as the launcher leaves a training
import tadsweep.backends.opentad.stop
worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(600,), daemon=True)
worker.start()  # a DataLoader worker that hangs: forked, daemon, the mask inherited
print(worker.pid, flush=True)
"""


@pytest.mark.parametrize("installed", [True, False], ids=["stop installed", "without it"])
def test_a_hung_dataloader_worker_does_not_keep_the_training_alive(tmp_path, installed):
    """A training process exits although a worker it forked hangs: the SIGTERM that
    multiprocessing ends daemon children with at exit stays pending in them (the blocked mask),
    so the stop module kills what is still alive after a grace. Without it (no work dir: not
    installed) the process waits for the worker at exit, and the job would run to its limit."""
    script = tmp_path / "train.py"
    script.write_text(HUNG_WORKER)
    env = dict(
        os.environ, **{stop.WORK_ENV: str(tmp_path) if installed else "", stop.FINAL_ENV: "3"}
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, env=env, start_new_session=True
    )
    worker = psutil.Process(int(proc.stdout.readline()))
    try:
        proc.wait(timeout=60 if installed else 10)
        exited, worker_left = True, worker.is_running()
    except subprocess.TimeoutExpired:
        exited = False
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # SIGTERM would stay pending too
        proc.wait()
    assert exited == installed
    if installed:
        assert proc.returncode == 0 and not worker_left


def test_refusals_are_one_line_errors(opentad_root, tiny_site, trained, tmp_path):
    run = make_run(tmp_path, opentad_root, tiny_site)
    proc = train(opentad_root, run, "--gpus", "3")  # global batch 2 over 3 processes
    assert proc.returncode == 2 and "not divisible by 3" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    params = json.loads((run / "params.json").read_text())
    params["schedule"]["epochs"] = 5
    (run / "params.json").write_text(json.dumps(params))
    proc = train(opentad_root, run)  # config.py was rendered for 4 epochs
    assert proc.returncode == 2 and f"end_epoch {EPOCHS}" in proc.stderr
    # a finished work dir must not resume under other training parameters
    other = tmp_path / "other"
    shutil.copytree(trained, other, symlinks=True)
    params = json.loads((other / "params.json").read_text())
    params["schedule"]["lr"] = 1e-3
    (other / "params.json").write_text(json.dumps(params))
    (other / "train.json").unlink()
    proc = train(opentad_root, other)
    assert proc.returncode == 2 and "different training parameters" in proc.stderr
