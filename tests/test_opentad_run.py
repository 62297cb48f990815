"""The train/detect wrappers against the OpenTAD test double (tests/doubles/opentad), torchrun."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tadsweep.logparse import parse_log
from tadsweep.opentad import render
from tadsweep.opentad.run import checkpoint_ok

DOUBLE_ROOT = (Path(__file__).parent / "doubles" / "opentad").resolve()
RUN_ID = "p1/lora=A+schedule=v2/seed=1"  # "=" and "+" as in real run ids


def make_run(tmp: Path, **schedule) -> dict:
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "category_idx.txt").write_text("Jump\nRun\n")
    database = {
        "video_test_0000001": {
            "subset": "validation",
            "duration": 30.0,
            "frame": 900,
            "annotations": [{"segment": [2.0, 5.5], "label": "Jump"}],
        },
        "video_test_0000002": {
            "subset": "validation",
            "duration": 40.0,
            "frame": 1200,
            "annotations": [{"segment": [10.0, 12.0], "label": "Run"}],
        },
        "video_validation_0000001": {"subset": "training", "duration": 9.0, "annotations": []},
    }
    (data / "anno.json").write_text(json.dumps({"database": database}))
    params = render.reference_params("adatad_lora_v1")
    params.update(study="t", run_id=RUN_ID, seed=1, backend="opentad")
    params["schedule"].update(
        epochs=6, cosine_epochs=8, warmup_epoch=1, val_start_epoch=2, val_interval=2
    )
    params["schedule"].update(schedule)
    run = tmp / "runs" / RUN_ID
    run.mkdir(parents=True)
    (run / "params.json").write_text(json.dumps(params))
    paths = dict(annotation_path=data / "anno.json", class_map=data / "category_idx.txt")
    render.write_config(params, run / "config.py", str(DOUBLE_ROOT), data=paths)
    return dict(run=run, params=params)


def cli(*args, env=None, popen=False):
    cmd = [sys.executable, "-m", "tadsweep.opentad", *map(str, args)]
    full_env = {**os.environ, **(env or {})}
    if popen:
        return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True)


def train(run: Path, gpus=1, env=None, popen=False):
    return cli(
        "train",
        "--params",
        run / "params.json",
        "--config",
        run / "config.py",
        "--opentad-root",
        DOUBLE_ROOT,
        "--work-dir",
        run / "work",
        "--done",
        run / "train.json",
        "--gpus",
        gpus,
        env=env,
        popen=popen,
    )


def checkpoint_names(run: Path):
    return sorted(p.name for p in (run / "work" / "checkpoint").glob("epoch_*.pth"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    setup = make_run(tmp_path_factory.mktemp("full"))
    proc = train(setup["run"])
    assert proc.returncode == 0, proc.stderr
    return setup


def test_full_run_layout_log_and_train_json(trained):
    run = trained["run"]
    work = run / "work"
    # checkpoints: (e + 1) % 2 == 0, and always the last epoch
    assert checkpoint_names(run) == ["epoch_1.pth", "epoch_3.pth", "epoch_5.pth"]
    assert (work / ".opentad" / "gpu1_id0").is_symlink()
    assert (work / ".opentad" / "gpu1_id0").resolve() == work.resolve()
    done = json.loads((run / "train.json").read_text())
    assert done["epochs"] == 6 and done["final_epoch"] == 5 and done["resumed_from"] is None
    assert done["seconds"] > 0 and done["gpus"] == 1 and done["attempts"] == 1
    curves = parse_log(work / "log.json")
    assert curves["epoch"].tolist() == [0, 1, 2, 3, 4, 5]
    # evaluations after e >= val_start_epoch (2) with (e + 1) % 2 == 0
    assert curves.dropna(subset=["average_mAP"])["epoch"].tolist() == [3, 5]
    assert curves["loss"].is_monotonic_decreasing
    assert curves["iter"].eq(99).all()  # 200 windows / global batch 2
    text = (work / "log.json").read_text()
    assert "Train INFO: Config: \n" in text and "VisionTransformerAdapterLoRA" in text


def test_second_call_after_completion_does_not_train_again(trained):
    run = trained["run"]
    log_before = (run / "work" / "log.json").read_text()
    proc = train(run)
    assert proc.returncode == 0, proc.stderr
    assert (run / "work" / "log.json").read_text() == log_before
    assert json.loads((run / "train.json").read_text())["attempts"] == 1


def test_detect_writes_candidates(trained):
    run = trained["run"]
    out = run / "candidates.json.gz"
    proc = cli(
        "detect",
        "--params",
        run / "params.json",
        "--config",
        run / "config.py",
        "--opentad-root",
        DOUBLE_ROOT,
        "--work-dir",
        run / "work",
        "--out",
        out,
    )  # --checkpoint defaults to the final epoch's
    assert proc.returncode == 0, proc.stderr
    with gzip.open(out, "rt") as f:
        results = json.load(f)["results"]
    assert sorted(results) == ["video_test_0000001", "video_test_0000002"]
    first = results["video_test_0000001"]
    assert len(first) == 3 + 30  # nms=None: every window's candidates (double: 3 windows)
    assert set(first[0]) == {"segment", "label", "score"}
    # test.py's work dir: gpu{torch.cuda.device_count()}_id0 under work/detect
    test_logs = list((run / "work" / "detect").glob("gpu*_id0/log.json"))
    assert len(test_logs) == 1
    assert "Test INFO: Checkpoint is epoch 5." in test_logs[0].read_text()


def test_resume_after_crash_and_unreadable_checkpoint(tmp_path):
    run = make_run(tmp_path)["run"]
    proc = train(run, env={"TADSWEEP_DOUBLE_CRASH_EPOCH": "4"})
    assert proc.returncode == 1
    assert not (run / "train.json").exists()
    assert checkpoint_names(run) == ["epoch_1.pth", "epoch_3.pth"]
    assert not (run / "work" / "log.json").read_text().endswith("\n")  # cut mid-line
    # a final checkpoint cut short by a kill must not be taken as "done" nor resumed from
    (run / "work" / "checkpoint" / "epoch_5.pth").write_bytes(b"PK\x03\x04 truncated")
    proc = train(run)
    assert proc.returncode == 0, proc.stderr
    done = json.loads((run / "train.json").read_text())
    assert done["resumed_from"] == 3 and done["attempts"] == 2
    log = (run / "work" / "log.json").read_text()
    assert "Resume training from: " in log and "epoch_3.pth" in log
    curves = parse_log(run / "work" / "log.json")
    assert curves["epoch"].tolist() == [0, 1, 2, 3, 4, 5]
    assert curves.dropna(subset=["average_mAP"])["epoch"].tolist() == [3, 5]


def test_sigterm_is_passed_on_and_the_rerun_resumes(tmp_path):
    run = make_run(tmp_path)["run"]
    proc = train(run, env={"TADSWEEP_DOUBLE_EPOCH_SECONDS": "0.4"}, popen=True)
    first = run / "work" / "checkpoint" / "epoch_1.pth"
    deadline = time.monotonic() + 60
    # wait for a complete checkpoint: the file exists as soon as torch.save opens it
    while not checkpoint_ok(first) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert checkpoint_ok(first)
    assert not (run / "train.json").exists()  # only after the last epoch
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert not (run / "train.json").exists()
    assert "epoch_5.pth" not in checkpoint_names(run)
    rerun = train(run)
    assert rerun.returncode == 0, rerun.stderr
    done = json.loads((run / "train.json").read_text())
    assert done["resumed_from"] in (1, 3) and done["attempts"] == 2
    assert parse_log(run / "work" / "log.json")["epoch"].tolist() == [0, 1, 2, 3, 4, 5]


def test_two_gpus_keep_the_global_batch(tmp_path):
    run = make_run(tmp_path)["run"]
    proc = train(run, gpus=2)
    assert proc.returncode == 0, proc.stderr
    work = run / "work"
    assert (work / ".opentad" / "gpu2_id0").is_symlink()
    log = (work / "log.json").read_text()
    assert "Using DDP with total 2 GPUS..." in log
    assert parse_log(work / "log.json")["iter"].eq(99).all()  # global batch still 2


def test_refusals_are_one_line_errors(tmp_path):
    setup = make_run(tmp_path, epochs=4)
    run = setup["run"]
    proc = train(run, gpus=3)  # global batch 2 cannot be split over 3 processes
    assert proc.returncode == 1 and "not divisible by 3" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    params = setup["params"]
    params["schedule"]["epochs"] = 5
    (run / "params.json").write_text(json.dumps(params))
    proc = train(run)  # config.py was rendered for 4 epochs
    assert proc.returncode == 1 and "end_epoch 4" in proc.stderr
    params["schedule"]["epochs"] = 4
    (run / "params.json").write_text(json.dumps(params))
    assert train(run).returncode == 0
    params["schedule"]["lr"] = 1e-3  # a resume must not mix training parameters
    (run / "params.json").write_text(json.dumps(params))
    proc = train(run)
    assert proc.returncode == 1 and "different training parameters" in proc.stderr
