"""Demo training: OpenTAD log format, determinism, knobs that act, resume after SIGKILL, detect."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from demo_helpers import make_params, numeric_log_lines, run_train, small_env, write_params

from tadsweep.backends.demo.detect import detect
from tadsweep.backends.demo.train import is_eval_epoch
from tadsweep.detections import evaluate, formats, postprocess
from tadsweep.errors import InputError
from tadsweep.report.curves import parse_log

REPO = Path(__file__).resolve().parent.parent
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d Train INFO: (.*)$")
ITER = re.compile(
    r"^\[Train\]: \[(\d{3})\]\[(\d{5})/(\d{5})\]  Loss=\d+\.\d{4}  cls_loss=\d+\.\d{4}  "
    r"reg_loss=\d+\.\d{4}  lr_backbone=\d\.\de[-+]\d\d  lr_det=\d\.\de[-+]\d\d  mem=\d+MB$"
)
AVG = re.compile(r"^Average-mAP: +\d+\.\d\d \(%\)$")
TIOU = re.compile(r"^mAP at tIoU 0\.[3-7]0 is +\d+\.\d\d%$")


def test_eval_rule_is_opentads():
    # tools/train.py: epoch >= val_start_epoch and (epoch + 1) % val_eval_interval == 0
    sched = {"val_start_epoch": 40, "val_interval": 2}
    assert [e for e in range(60) if is_eval_epoch(e, sched)] == list(range(41, 60, 2))
    assert not any(is_eval_epoch(e, {"val_start_epoch": 0, "val_interval": 0}) for e in range(9))


def test_log_is_in_opentad_format_and_parses(tmp_path):
    params = make_params(**{"schedule.epochs": 5, "schedule.val_start_epoch": 2})
    done = run_train(params, tmp_path)
    log = tmp_path / "work" / "log.json"
    messages = []
    for line in log.read_text().splitlines():
        m = RECORD.match(line)
        if m:
            messages.append(m.group(1))
    text = "\n".join(messages)
    started = [int(x) for x in re.findall(r"^\[Train\]: Epoch (\d+) started$", text, re.M)]
    assert started == [0, 1, 2, 3, 4]
    iters = [m for m in messages if m.startswith("[Train]: [")]
    assert iters and all(ITER.match(m) for m in iters), iters[0]
    assert sum(bool(AVG.match(m)) for m in messages) == 1
    assert sum(bool(TIOU.match(m)) for m in messages) == 5
    curves = parse_log(log)
    assert curves["epoch"].tolist() == [0, 1, 2, 3, 4]
    evaluated = curves.dropna(subset=["average_mAP"])["epoch"].tolist()
    assert evaluated == [e for e in range(5) if is_eval_epoch(e, params["schedule"])] == [3]
    # the logged evaluation is the one the trainer computed (percent with 2 decimals)
    logged = curves.set_index("epoch").loc[3, "average_mAP"]
    assert logged == pytest.approx(done["metrics"]["average_mAP"], abs=5e-5)
    assert sorted(p.name for p in (tmp_path / "work" / "checkpoint").iterdir()) == [
        "epoch_1.pth",
        "epoch_3.pth",
        "epoch_4.pth",  # OpenTAD also saves after the last epoch
    ]
    record = json.loads((tmp_path / "train.json").read_text())
    assert set(record) == {"epochs", "final_epoch", "seconds", "resumed_from"}
    assert (record["epochs"], record["final_epoch"], record["resumed_from"]) == (5, 4, None)


def _last_eval(log: Path) -> float:
    values = re.findall(r"Average-mAP: +(\d+\.\d\d) \(%\)", log.read_text())
    return float(values[-1]) / 100


def test_same_seed_same_numbers_and_variants_differ(tmp_path):
    results = {}
    variants = {
        "base": {},
        "again": {},
        "seed2": {"seed": 2},
        "no_lora": {"lora.r": 0},
        "lora_r16": {"lora.r": 16, "lora.alpha": 32},
        "lora_dropout": {"lora.dropout": 0.3},
        "lr": {"schedule.lr": 1e-3},
        "head_lr": {"schedule.head_lr": 1e-3},
        "warmup": {"schedule.warmup_epoch": 2},
        "cosine": {"schedule.cosine_epochs": 20},
        "aug_none": {"augment.imgaug": "none"},
        "randaugment": {"augment.randaugment": {"num_ops": 2, "magnitude": 9}},
        "adapters_first": {"structure.adapter_index": [0, 1]},
        "drop_path": {"structure.drop_path_rate": 0.3},
        "no_ema": {"ema": False},
        "epochs": {"schedule.epochs": 2},
    }
    for name, overrides in variants.items():
        fast = {"schedule.epochs": 3, "schedule.val_start_epoch": 0, "schedule.val_interval": 1}
        params = make_params(**{**fast, **overrides})
        run_train(params, tmp_path / name)
        log = tmp_path / name / "work" / "log.json"
        results[name] = (_last_eval(log), numeric_log_lines(log))
    assert results["base"] == results["again"]
    base_map, base_lines = results["base"]
    for name in variants:
        if name in ("base", "again"):
            continue
        # every knob changes the training numbers; most also move the final mAP
        assert results[name][1] != base_lines, name
    maps = [results[n][0] for n in variants if n != "again"]
    # distinct final mAPs (2-decimal percentages; one chance collision tolerated)
    assert len(set(maps)) >= len(maps) - 1, maps
    assert all(0.0 < m < 1.0 for m in maps), maps


def _train_cmd(params_path, run_dir):
    data_dir, backbone = small_env()
    args = {
        "--params": params_path,
        "--data": data_dir,
        "--backbone": backbone,
        "--work-dir": run_dir / "work",
        "--done": run_dir / "train.json",
    }
    return [sys.executable, "-m", "tadsweep.backends.demo", "train"] + [
        str(x) for pair in args.items() for x in pair
    ]


def test_killed_training_resumes_to_identical_result(tmp_path):
    params = make_params(
        **{"schedule.epochs": 8, "schedule.cosine_epochs": 8, "schedule.val_start_epoch": 4}
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    killed = tmp_path / "killed"
    cmd = _train_cmd(write_params(params, killed), killed)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first_ckpt = killed / "work" / "checkpoint" / "epoch_1.pth"
    deadline = time.time() + 600  # a safety net: it waits for the event, not a time
    while not first_ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert first_ckpt.exists(), proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "train.json").exists(), "training finished before the kill"
    saved = sorted(int(p.stem.split("_")[1]) for p in (killed / "work/checkpoint").glob("*.pth"))
    last_saved = saved[-1]
    assert last_saved < 7

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    record = json.loads((killed / "train.json").read_text())
    assert record["resumed_from"] == last_saved and record["final_epoch"] == 7

    log = (killed / "work" / "log.json").read_text()
    assert log.count("Resume training from:") == 1
    assert f"Resume epoch is {last_saved}" in log
    second = log[log.index("Resume training from:") :]
    resumed = [int(e) for e in re.findall(r"\[Train\]: Epoch (\d+) started", second)]
    assert resumed == list(range(last_saved + 1, 8))  # finished epochs are not repeated
    first = log[: log.index("Resume training from:")]
    before = [int(e) for e in re.findall(r"\[Train\]: Epoch (\d+) started", first)]
    assert before[: last_saved + 1] == list(range(last_saved + 1))

    # an uninterrupted run of the same params ends with the same numbers and weights
    straight = tmp_path / "straight"
    run_train(params, straight)
    straight_log = straight / "work" / "log.json"
    assert numeric_log_lines(straight_log)[-6:] == numeric_log_lines(killed / "work/log.json")[-6:]
    curves_a = parse_log(straight_log)
    curves_b = parse_log(killed / "work" / "log.json")
    cols = ["epoch", "loss", "cls_loss", "reg_loss", "lr_backbone", "lr_det", "average_mAP"]
    assert curves_a[cols].equals(curves_b[cols])
    ckpt_a = torch.load(straight / "work/checkpoint/epoch_7.pth", weights_only=False)
    ckpt_b = torch.load(killed / "work/checkpoint/epoch_7.pth", weights_only=False)
    for key in ("state_dict", "state_dict_ema"):
        assert ckpt_a[key].keys() == ckpt_b[key].keys()
        assert all(torch.equal(ckpt_a[key][k], ckpt_b[key][k]) for k in ckpt_a[key])


def test_finished_run_rerun_is_a_no_op_and_other_params_refuse(tmp_path):
    params = make_params(**{"schedule.epochs": 2})
    run_train(params, tmp_path)
    (tmp_path / "train.json").unlink()
    record = run_train(params, tmp_path)
    assert record["resumed_from"] == 1
    log = (tmp_path / "work" / "log.json").read_text()
    assert log.count("Epoch 0 started") == 1 and log.count("Epoch 1 started") == 1
    with pytest.raises(InputError, match="other parameters"):
        run_train(make_params(**{"schedule.epochs": 4, "lora.r": 4}), tmp_path)


def test_detect_writes_candidates_that_reproduce_the_log(tmp_path):
    params = make_params(**{"schedule.epochs": 4, "schedule.val_start_epoch": 0})
    run_train(params, tmp_path)
    data_dir, backbone = small_env()
    out = tmp_path / "candidates.npz"
    ckpt = tmp_path / "work" / "checkpoint" / "epoch_3.pth"
    count = detect(tmp_path / "params.json", data_dir, backbone, ckpt, out)
    results = formats.load(out)
    gt = evaluate.load_ground_truth(data_dir / "annotations.json", subset="validation")
    assert sorted(results) == sorted(gt.videos)
    assert count == sum(len(v) for v in results.values())
    for entries in results.values():
        assert 0 < len(entries) <= params["postprocess_default"]["pre_nms_topk"]
        assert all(e["score"] > params["postprocess_default"]["pre_nms_thresh"] for e in entries)
    # same EMA weights and default post-processing as the last logged evaluation
    post = {
        k: v
        for k, v in params["postprocess_default"].items()
        if k not in ("pre_nms_topk", "pre_nms_thresh")
    }
    metrics = evaluate.evaluate(gt, postprocess.apply(results, post))
    assert metrics["average_mAP"] == pytest.approx(_last_eval(tmp_path / "work/log.json"), abs=6e-5)
