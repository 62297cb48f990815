"""tadsweep.report.status on a constructed study folder: one run in every state."""

import json
import os
import time

import pandas as pd
import pytest

from tadsweep import cli
from tadsweep.report import status

T0 = 1_700_000_000.0  # file times are set explicitly: states must not depend on the test's speed
NOW = T0 + 10_000


def train_log(epochs, loss=0.5, tail=""):
    lines = []
    for e in range(epochs):
        lines.append(f"2024-01-01 10:{e:02d}:00 Train INFO: [Train]: Epoch {e} started")
        for i in (1, 2):
            lines.append(
                f"2024-01-01 10:{e:02d}:0{i} Train INFO: [Train]: [{e:03d}][{i:05d}/00002]  "
                f"Loss={loss + e / 100:.4f}  cls_loss=0.2000  reg_loss=0.3000  "
                f"lr_backbone=1.0e-04  lr_det=1.0e-04  mem=100MB"
            )
    return "\n".join(lines) + "\n" + tail


def touch(path, text="", mtime=T0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime, mtime))


RUNS = [
    "p1/base/seed=1",  # done
    "p1/base/seed=2",  # trained, detection pending
    "p1/base/seed=3",  # detected, sweep pending
    "p1/lora=A/seed=1",  # running under SLURM
    "p1/lora=A/seed=2",  # queued
    "p1/lora=A/seed=3",  # failed: SLURM log
    "p1/lora=A/seed=10",  # failed: log.json traceback after the last training line
    "p2/base/seed=1",  # stopped (log idle, SLURM visible, no job)
    "p2/base/seed=2",  # planned
    "p2/base/seed=3",  # trained; an older failed SLURM log of train must not count
    "p2/base/seed=4",  # failed: the detect rule log
    "p1/lora=B/seed=1",  # failed: a SLURM array job's log
]


def build(tmp_path):
    study = tmp_path / "results" / "t"
    smk = tmp_path / ".snakemake"
    pd.DataFrame({"run_id": RUNS, "est_gpu_hours": [2.0] * len(RUNS)}).to_csv(
        study / "plan.tsv" if study.mkdir(parents=True) is None else None, sep="\t", index=False
    )
    (study / "study.json").write_text(json.dumps({"resources": {"train": {"gpus": 2}}}))

    def run(rid):
        return study / "runs" / rid

    def done_train(rid, seconds=3600.0, mtime=T0 + 100):
        touch(run(rid) / "train.json", json.dumps({"epochs": 3, "seconds": seconds}), mtime)
        touch(run(rid) / "work" / "log.json", train_log(3), mtime)

    done_train("p1/base/seed=1", seconds=1800)
    # the ledger (tadsweep.report.ledger) wins over train.json where a run has one: a failed
    # train attempt (2 configured GPUs), the successful one timed by its benchmark, a detect
    attempts = [
        {"step": "train", "start": T0, "seconds": 900.0, "gpus": None, "outcome": "failed"},
        {"step": "train", "start": T0, "seconds": 1700.0, "gpus": None, "outcome": "ok"},
        {"step": "detect", "start": T0, "seconds": 360.0, "gpus": 1, "outcome": "ok"},
    ]
    touch(run("p1/base/seed=1") / "attempts.jsonl", "".join(json.dumps(a) + "\n" for a in attempts))
    touch(study / "benchmarks" / "train" / "p1/base/seed=1.tsv", "s\th:m:s\n1800.0\t0:30:00\n")
    # running on 4 GPUs that SLURM allocated: counted up to its last heartbeat
    running = {"step": "train", "start": T0, "end": T0 + 1800, "gpus": 4, "job": "501"}
    touch(run("p1/lora=A/seed=1") / ".attempt-train.json", json.dumps(running))
    stopped = [
        {"step": "train", "start": T0, "seconds": 900.0, "gpus": None, "outcome": "stopped"},
        {"step": "train", "start": T0, "seconds": 900.0, "gpus": None, "outcome": "lost"},
    ]
    lines = "".join(json.dumps(a) + "\n" for a in stopped) + "{cut by a crash\n"
    touch(run("p2/base/seed=1") / "attempts.jsonl", lines)
    touch(run("p1/base/seed=1") / "candidates.npz", "x")
    sweep = "setting\tsigma\taverage_mAP\ndefault\t0.7\t0.41\nbetter\t0.5\t0.45\n"
    touch(run("p1/base/seed=1") / "sweep.tsv", sweep)
    done_train("p1/base/seed=2")
    done_train("p1/base/seed=3")
    touch(run("p1/base/seed=3") / "candidates.npz", "x")
    touch(run("p1/lora=A/seed=1") / "work" / "log.json", train_log(5, loss=0.8), NOW - 60)
    touch(run("p1/lora=A/seed=3") / "work" / "log.json", train_log(2), T0 + 500)
    touch(
        smk / "slurm_logs" / "rule_train" / "p1_lora=A_seed=3" / "1234.log",
        "rule train:\n    wildcards: run=p1/lora=A/seed=3\nslurmstepd: error: *** JOB 1234 ON n1 "
        "CANCELLED AT 2024-01-01 DUE TO TIME LIMIT ***\n",
        T0 + 600,
    )
    tb = "Traceback (most recent call last):\n  File x\nRuntimeError: CUDA out of memory\n"
    touch(run("p1/lora=A/seed=10") / "work" / "log.json", train_log(2, tail=tb), T0 + 700)
    touch(run("p2/base/seed=1") / "work" / "log.json", train_log(4, loss=0.6), T0 + 800)
    touch(
        smk / "slurm_logs" / "rule_train" / "p2_base_seed=3" / "99.log",
        "Error in rule train:\n    jobid: 0\n",
        T0,  # before train.json (T0 + 100): the rerun succeeded
    )
    done_train("p2/base/seed=3")
    done_train("p2/base/seed=4")
    touch(
        study / "logs" / "detect" / "p2" / "base" / "seed=4.log",
        "Traceback (most recent call last):\nFileNotFoundError: checkpoint missing\n",
        T0 + 900,
    )
    touch(
        smk / "slurm_logs" / "rule_train" / "77_3.log",
        "rule train:\n    output: results/t/runs/p1/lora=B/seed=1/train.json\n"
        "    wildcards: run=p1/lora=B/seed=1\nError in rule train:\n",
        T0 + 50,
    )
    # a successful rule log of another step must not count
    touch(study / "logs" / "curves" / "p1" / "base" / "seed=2.log", "ok\n", T0 + 900)
    return study, smk


QUEUE = (
    "501|8f1c-uuid|RUNNING|1:02:03|rule_train_wildcards_p1_lora=A_seed=1\n"
    "502|8f1c-uuid|PENDING|0:00|rule_train_wildcards_p1_lora=A_seed=2\n"
    "503|8f1c-uuid|RUNNING|0:10|rule_collect\n"
)


def test_every_state_from_disk_and_queue(tmp_path):
    study, smk = build(tmp_path)
    table, info = status.study_status(study, smk, jobs=status.parse_queue(QUEUE), now=NOW)
    st = table.set_index("run_id")
    assert dict(st["state"]) == {
        "p1/base/seed=1": "done",
        "p1/base/seed=2": "trained",
        "p1/base/seed=3": "detected",
        "p1/lora=A/seed=1": "running",
        "p1/lora=A/seed=2": "queued",
        "p1/lora=A/seed=3": "failed",
        "p1/lora=A/seed=10": "failed",
        "p2/base/seed=1": "stopped",
        "p2/base/seed=2": "planned",
        "p2/base/seed=3": "trained",
        "p2/base/seed=4": "failed",
        "p1/lora=B/seed=1": "failed",
    }
    running = st.loc["p1/lora=A/seed=1"]
    assert running["epoch"] == 4 and running["loss"] == 0.84  # last epoch, its final loss
    assert running["job"] == "501" and "rule train" in running["detail"]
    slurm_fail = st.loc["p1/lora=A/seed=3"]
    assert slurm_fail["log"].endswith("rule_train/p1_lora=A_seed=3/1234.log")
    assert "DUE TO TIME LIMIT" in slurm_fail["detail"]
    assert st.loc["p1/lora=A/seed=10", "log"].endswith("p1/lora=A/seed=10/work/log.json")
    assert "CUDA out of memory" in st.loc["p1/lora=A/seed=10", "detail"]
    assert st.loc["p2/base/seed=4", "log"].endswith("logs/detect/p2/base/seed=4.log")
    assert "FileNotFoundError: checkpoint missing" in st.loc["p2/base/seed=4", "detail"]
    array_fail = st.loc["p1/lora=B/seed=1"]
    assert array_fail["state"] == "failed" and array_fail["log"].endswith("rule_train/77_3.log")
    assert st.loc["p2/base/seed=1", "epoch"] == 3
    assert info["best"] == {"run_id": "p1/base/seed=1", "average_mAP": 0.41}
    # 2 GPUs per training. The ledger: 0.5 + 1.0 + 0.1 h (p1/base/seed=1), 2.0 h (running on
    # 4 GPUs), 0.5 + 0.5 h (stopped, lost); train.json alone: 4 runs x 1 h x 2 GPUs
    assert info["gpu_hours_spent"] == pytest.approx(1.6 + 2.0 + 1.0 + 8.0)
    assert st.loc["p1/base/seed=1", "gpu_hours"] == pytest.approx(1.6)
    assert st.loc["p1/base/seed=1", "attempts"] == 3
    assert (info["attempts"], info["failed_attempts"]) == (6, 3)
    phases = {p["phase"]: p for p in info["phases"]}
    assert phases["p1"]["gpu_hours_actual"] == pytest.approx(1.6 + 2.0 + 2 * 2.0)
    assert phases["p2"]["gpu_hours_actual"] == pytest.approx(1.0 + 2 * 2.0)
    assert phases["p1"]["gpu_hours_planned"] == 2.0 * 8
    assert info["gpu_hours_planned"] == 2.0 * len(RUNS)
    assert info["gpu_hours_planned_left"] == 2.0 * 7  # runs without a finished training
    assert info["budget"] is None
    assert info["ledger_problems"] == [
        f"{study}/runs/p2/base/seed=1/attempts.jsonl:3: not an attempt record; skipped"
    ]
    assert info["states"]["failed"] == 4


def test_without_a_queue_a_fresh_log_counts_as_running(tmp_path):
    study, smk = build(tmp_path)
    table, info = status.study_status(study, smk, jobs=None, now=NOW)
    st = table.set_index("run_id")["state"]
    assert st["p1/lora=A/seed=1"] == "running"  # log written a minute ago
    assert st["p2/base/seed=1"] == "stopped"  # idle for hours
    assert st["p1/lora=A/seed=2"] == "planned"  # nothing on disk, no queue to say otherwise
    assert info["queue"] == "not visible (no squeue)"


def test_seed_boundaries_in_wildcard_matching():
    assert status.matches("p1/base/seed=1", "p1_base_seed=1")
    assert status.matches("p1/base/seed=1", "demo_p1_base_seed=1_x")
    assert not status.matches("p1/base/seed=1", "p1_base_seed=10")
    assert not status.matches("p1/base/seed=1", "xp1_base_seed=1")
    assert status.rule_of_comment("rule_post_sweep_wildcards_p1_base_seed=1") == (
        "post_sweep",
        "p1_base_seed=1",
    )
    assert status.rule_of_comment("rule_collect") == ("collect", "")


def test_cli_prints_states_best_and_hours(tmp_path, capsys):
    study, smk = build(tmp_path)
    sj = json.loads((study / "study.json").read_text())
    (study / "study.json").write_text(json.dumps({**sj, "budget": {"gpu_hours": 40}}))
    rc = status.main(
        [str(study), "--snakemake-dir", str(smk), "--no-queue", "--tsv", str(tmp_path / "s.tsv")]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "done      p1/base/seed=1  average mAP 41.00" in out
    assert "failed    p1/lora=A/seed=3" in out and "log: " in out
    assert "best so far: p1/base/seed=1 at 41.00" in out
    assert "GPU-hours: spent 12.6 / planned 24.0 (estimate) / budget 40.0;" in out
    assert "(6 attempts, 3 failed, stopped or lost)" in out
    assert "  p2        spent 5.0 of planned 8.0 (2 attempts, 2 not ok)" in out
    assert "attempts.jsonl:3: not an attempt record; skipped" in out
    assert len(pd.read_csv(tmp_path / "s.tsv", sep="\t")) == len(RUNS)


def test_empty_study_and_missing_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    table, info = status.study_status(tmp_path / "empty", tmp_path, jobs=None, now=time.time())
    assert table.empty and info["best"] is None
    assert cli.status(status.main, [str(tmp_path / "nope"), "--no-queue"]) == 2
    assert "no such study folder" in capsys.readouterr().err
