"""The ledger of GPU-hours (tadsweep.plan.spend, tadsweep.report.ledger): every attempt of a step
recorded by rundir, whatever its outcome; benchmarks for successful attempts; minutes_per_epoch
checked against the first finished epochs of a training log."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tadsweep import cli
from tadsweep.plan import costs, rundir, runs
from tadsweep.plan.config import load_study
from tadsweep.plan.spend import run_files, run_ledger
from tadsweep.report import collect, ledger

ROOT = Path(__file__).resolve().parent.parent
GPUS = {"train": 2, "detect": 1}


def wrapper(run_dir: Path, step: str, *cmd: str, **kw) -> subprocess.Popen:
    args = [sys.executable, "-m", "tadsweep.plan.rundir", "run", "--run-dir", str(run_dir),
            "--step", step, "--log", "x.log", "--", *cmd]  # fmt: skip
    return subprocess.Popen(args, **kw)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / rundir.ATTEMPTS).read_text().splitlines()]


def test_every_attempt_is_recorded_whatever_its_outcome(tmp_path):
    run = tmp_path / "runs" / "p1" / "base" / "seed=1"
    assert wrapper(run, "train", "false").wait() == 1  # fails by itself
    ready = tmp_path / "ready"
    code = f"import pathlib, time; pathlib.Path({str(ready)!r}).touch(); time.sleep(30)"
    proc = wrapper(run, "train", sys.executable, "-c", code)
    while not ready.exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # preemption: stopped, not failed
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    ready.unlink()
    # killed with its wrapper (a node failure): its own process group, all of it
    proc = wrapper(run, "train", sys.executable, "-c", code, start_new_session=True)
    while not ready.exists():
        time.sleep(0.02)
    assert (run / ".attempt-train.json").exists()  # the open record a hard kill leaves
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert wrapper(run, "train", "true").wait() == 0  # closes the lost attempt, then succeeds
    assert wrapper(run, "detect", "true").wait() == 0
    recs = records(run)
    assert [(r["step"], r["outcome"]) for r in recs] == [
        ("train", "failed"),
        ("train", "stopped"),
        ("train", "lost"),
        ("train", "ok"),
        ("detect", "ok"),
    ]
    assert [r["status"] for r in recs if "status" in r] == [1, -signal.SIGTERM, 0, 0]
    assert all(r["seconds"] >= 0 and r["gpus"] is None for r in recs)  # not under SLURM
    assert not list(run.glob(".attempt-*.json"))
    spend = run_ledger(run_files(tmp_path, "p1/base/seed=1"), GPUS)
    assert (spend["attempts"], spend["failed_attempts"]) == (5, 3)
    train_s = sum(r["seconds"] for r in recs if r["step"] == "train")
    assert spend["gpu_hours_train"] == pytest.approx(train_s * 2 / 3600)


def test_a_running_attempt_refreshes_its_end_time(tmp_path, monkeypatch):
    """The heartbeat: what a kill of the wrapper loses is at most HEARTBEAT_S."""
    monkeypatch.setattr(rundir, "HEARTBEAT_S", 0.05)
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "4")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    seen = tmp_path / "seen.json"
    code = (  # the step waits until its open record has been refreshed, and keeps a copy
        "import json, pathlib, time\n"
        f"p, out = pathlib.Path({str(tmp_path / '.attempt-train.json')!r}), {str(seen)!r}\n"
        "for _ in range(2000):\n"
        "    r = json.loads(p.read_text())\n"
        "    if r['end'] > r['start']:\n"
        "        pathlib.Path(out).write_text(json.dumps(r)); break\n"
        "    time.sleep(0.01)\n"
    )
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    try:
        assert rundir.run_step(tmp_path, "train", "x.log", [sys.executable, "-c", code]) == 0
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    beat = json.loads(seen.read_text())
    assert beat["end"] > beat["start"] and beat["gpus"] == 4 and beat["job"] == "77"
    (rec,) = records(tmp_path)
    assert rec["outcome"] == "ok" and rec["gpus"] == 4 and rec["seconds"] >= 0.05


def test_gpu_hours_from_attempts_benchmarks_and_train_json(tmp_path):
    study = tmp_path / "results" / "s"
    rid = "p1/base/seed=1"
    run = study / "runs" / rid
    run.mkdir(parents=True)
    attempts = [
        {"step": "train", "seconds": 3600.0, "gpus": None, "outcome": "failed"},  # 2 configured
        {"step": "train", "seconds": 1800.0, "gpus": 4, "outcome": "stopped"},  # 4 allocated
        {"step": "train", "seconds": 100.0, "gpus": None, "outcome": "ok"},  # its benchmark wins
        {"step": "detect", "seconds": 720.0, "gpus": None, "outcome": "ok"},
    ]
    bad = '{"step": "train", "seconds": -1}\n{"step": "detect", "seconds": 5, "gpus": "2"}\n'
    text = "".join(json.dumps(a) + "\n" for a in attempts) + bad
    (run / rundir.ATTEMPTS).write_text(text)
    bench = study / "benchmarks" / "train" / f"{rid}.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text("s\th:m:s\tmax_rss\n5400.0\t1:30:00\t100\n")
    problems = []
    spend = run_ledger(run_files(study, rid), GPUS, problems=problems)
    assert spend["gpu_hours_train"] == pytest.approx(1.0 * 2 + 0.5 * 4 + 1.5 * 2)
    assert spend["gpu_hours_detect"] == pytest.approx(0.2)
    assert spend["gpu_hours_actual"] == pytest.approx(7.2)
    assert (spend["attempts"], spend["failed_attempts"], spend["source"]) == (4, 2, "ledger")
    assert problems == [
        f"{run / rundir.ATTEMPTS}:{n}: not an attempt record; skipped" for n in (5, 6)
    ]
    # a run trained before the ledger: its benchmark alone, else its train.json
    old = study / "runs" / "p1" / "base" / "seed=2"
    old.mkdir(parents=True)
    (old / "train.json").write_text(json.dumps({"seconds": 900.0, "gpu_seconds": 3600.0}))
    spend = run_ledger(run_files(study, "p1/base/seed=2"), GPUS, old / "train.json")
    assert (spend["gpu_hours_actual"], spend["source"]) == (1.0, "train.json")
    bench2 = study / "benchmarks" / "detect" / "p1/base/seed=2.tsv"
    bench2.parent.mkdir(parents=True)
    bench2.write_text("s\th:m:s\n36.0\t0:00:36\n")
    spend = run_ledger(run_files(study, "p1/base/seed=2"), GPUS, old / "train.json")
    assert (spend["gpu_hours_actual"], spend["attempts"]) == (pytest.approx(0.01), 1)
    # the study: per run and per phase, beside the plan
    (study / "study.json").write_text(json.dumps({"resources": {"train": {"gpus": 2}}}))
    table = ledger.study_ledger(study, [rid, "p1/base/seed=2", "p2/base/seed=1"])
    assert table["gpu_hours_actual"].tolist() == pytest.approx([7.2, 0.01, 0.0])
    spent = ledger.study_ledger(study, [rid, "p1/base/seed=2"])["gpu_hours_actual"].sum()
    assert spent == pytest.approx(7.21)
    plan = pd.DataFrame({"run_id": table["run_id"], "est_gpu_hours": [3.0, 3.0, 5.0]})
    phases = ledger.phase_table(table, plan).set_index("phase")
    assert phases.loc["p1", "gpu_hours_planned"] == 6.0 and phases.loc["p2", "attempts"] == 0
    assert ledger.spend_line(7.21, 11.0, None) == "spent 7.2 / planned 11.0 (estimate) / no budget"
    assert (
        ledger.spend_line(0.0123, 0.5, 20) == "spent 0.012 / planned 0.500 (estimate) / budget 20.0"
    )


def log_lines(starts: list[tuple[int, int]], over: int | None = None) -> str:
    """A training log: (epoch, second of the day) per `Epoch started`, then Training Over."""

    def stamp(sec):
        return f"2026-01-01 {sec // 3600:02d}:{sec % 3600 // 60:02d}:{sec % 60:02d}"

    out = []
    for epoch, sec in starts:
        out.append(f"{stamp(sec)} Train INFO: [Train]: Epoch {epoch} started")
        out.append(f"{stamp(sec + 1)} Train INFO: [Train]: [{epoch:03d}][00001/00001]  Loss=0.5")
    if over is not None:
        out.append(f"{stamp(over)} Train INFO: Training Over...")
    return "\n".join(out) + "\n"


def test_epoch_seconds_from_the_first_launch(tmp_path):
    log = tmp_path / "log.json"
    # epochs of 200 s, killed in epoch 4, resumed from epoch 3 much slower: the first launch counts
    log.write_text(
        log_lines([(0, 0), (1, 200), (2, 400), (3, 600), (4, 800), (3, 5000), (4, 9000)])
    )
    assert ledger.epoch_seconds(log) == (200.0, 3)  # the first 3 finished epochs suffice
    # short epochs: more of them, until they span a minute; Training Over ends the last one
    log.write_text(log_lines([(e, 10 * e) for e in range(8)], over=80))
    assert ledger.epoch_seconds(log) == (10.0, 6)
    log.write_text(log_lines([(0, 0), (1, 4)], over=8))
    assert ledger.epoch_seconds(log) == (4.0, 2)  # all there is
    log.write_text(log_lines([(0, 0)]))
    assert ledger.epoch_seconds(log) is None  # no epoch finished yet
    assert ledger.epoch_seconds(tmp_path / "missing.json") is None


def test_minutes_per_epoch_is_checked_against_the_first_runs(tmp_path):
    cfg, _ = load_study(yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text()))
    cfg["resources"]["minutes_per_epoch"] = 2.0
    study = tmp_path / "results" / "demo"
    assert ledger.estimate_warnings(cfg, study) == []  # nothing measured yet
    by_id = runs.run_by_id(cfg)
    for rid in ("p1/base/seed=1", "p1/lora=A+schedule=v2/seed=1"):  # other cost and epochs
        params = runs.resolve_params(cfg, by_id[rid])
        run = study / "runs" / rid
        (run / "work").mkdir(parents=True)
        (run / "params.json").write_text(json.dumps(params))
        # what the estimate gives this run per epoch (its LoRA cost factor included), x 1.5
        per_epoch = costs.gpu_hours(cfg, params["variants"]) / params["schedule"]["epochs"]
        sec = round(per_epoch * 3600 / cfg["resources"]["train"]["gpus"] * 1.5)
        (run / "work" / "log.json").write_text(log_lines([(e, e * sec) for e in range(4)]))
    check = ledger.epoch_check(cfg, study)
    assert check["ratio"] == pytest.approx(1.5, rel=0.01) and check["off"]
    assert check["measured"] == pytest.approx(3.0, rel=0.01)
    assert sorted(check["runs"]) == ["p1/base/seed=1", "p1/lora=A+schedule=v2/seed=1"]
    (warning,) = ledger.estimate_warnings(cfg, study)
    assert warning.startswith("resources.minutes_per_epoch 2 is off by +50%")
    assert "measured 3 min per epoch" in warning
    cfg["resources"]["minutes_per_epoch"] = 2.5  # within 25%: no warning
    assert not ledger.epoch_check(cfg, study)["off"]
    assert ledger.estimate_warnings(cfg, study) == []


def test_summary_counts_the_spend_of_failed_runs(tmp_path, capsys):
    """A run that failed three times costs GPU-hours too: summary.tsv says how many."""
    cfg, _ = load_study(yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text()))
    study = tmp_path / "results" / "demo"
    run = study / "runs" / "p1" / "lora=A" / "seed=1"
    run.mkdir(parents=True)
    params = runs.resolve_params(cfg, runs.run_by_id(cfg)["p1/lora=A/seed=1"])
    (run / "params.json").write_text(json.dumps(params))
    (run / rundir.FAILED).write_text(json.dumps({"step": "train", "status": 1, "log": "x.log"}))
    fail = {"step": "train", "seconds": 600.0, "gpus": None, "outcome": "failed"}
    (run / rundir.ATTEMPTS).write_text((json.dumps(fail) + "\n") * 3)
    (study / "study.json").write_text(json.dumps(cfg))
    files = run_files(study, "p1/lora=A/seed=1")  # no benchmark: no attempt succeeded
    argv = ["--failed-params", str(run / "params.json"), "--failed", str(run / rundir.FAILED),
            "--gpus", "1", "--study-json", str(study / "study.json"), "--attempts",
            str(files["attempts"]), "--bench-train", str(files["train"]), "--bench-detect",
            str(files["detect"]), "--out", str(study / "summary.tsv")]  # fmt: skip
    assert collect.main(argv) == 0
    (row,) = pd.read_csv(study / "summary.tsv", sep="\t").to_dict("records")
    gpus = cfg["resources"]["train"]["gpus"]
    assert row["status"] == "failed" and row["gpu_hours_actual"] == pytest.approx(0.5 * gpus)
    assert (row["attempts"], row["failed_attempts"]) == (3, 3)
    assert row["gpu_hours_estimate"] == pytest.approx(costs.gpu_hours(cfg, params["variants"]))
    assert cli.status(collect.main, argv[:-4] + ["--out", str(tmp_path / "s.tsv")]) == 2
    assert "need one per run" in capsys.readouterr().err
