"""A step that fails by itself marks its run failed (naming the log); a kill does not (SLURM or a
rerun retries and resumes); success clears the mark. Stale results are reported."""

import copy
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tadsweep.plan import rundir, runs
from tadsweep.plan.config import load_study

ROOT = Path(__file__).resolve().parent.parent


def step(tmp_path, code: str) -> subprocess.Popen:
    wrapper = [sys.executable, "-m", "tadsweep.plan.rundir", "run", "--run-dir", str(tmp_path),
               "--step", "train", "--log", "logs/train.log"]  # fmt: skip
    return subprocess.Popen([*wrapper, "--", sys.executable, "-c", code])


def test_failure_marks_the_run_and_success_clears_it(tmp_path):
    run = tmp_path / "runs" / "p1" / "base" / "seed=1"
    run.mkdir(parents=True)
    assert step(run, "import sys; sys.exit(3)").wait() == 3
    marker = json.loads((run / rundir.FAILED).read_text())
    assert marker["step"] == "train" and marker["status"] == 3
    assert marker["log"] == "logs/train.log"
    markers = {f"p1/base/seed={i}": tmp_path / f"runs/p1/base/seed={i}/FAILED.json" for i in (1, 2)}
    assert rundir.failed_runs(markers) == {"p1/base/seed=1": marker}
    assert step(run, "pass").wait() == 0
    assert not (run / rundir.FAILED).exists()


def wait_for(path: Path, timeout: float = 60) -> None:
    """Wait for the event (a file appears), not for a guessed time."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def test_a_killed_step_is_not_marked_failed(tmp_path):
    ready = tmp_path / "ready"
    code = f"import pathlib, time; pathlib.Path({str(ready)!r}).touch(); time.sleep(30)"
    proc = step(tmp_path, code)
    wait_for(ready)
    proc.send_signal(signal.SIGTERM)  # what SLURM sends on preemption or scancel
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    assert not (tmp_path / rundir.FAILED).exists()


def test_stale_runs_are_reported_not_retrained(tmp_path):
    cfg, _ = load_study(yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text()))
    run = runs.run_by_id(cfg)["p1/lora=A/seed=1"]
    saved = tmp_path / "runs" / run.run_id / "params.json"
    saved.parent.mkdir(parents=True)
    saved.write_text(json.dumps(runs.resolve_params(cfg, run)))
    saved_files = {r.run_id: tmp_path / "runs" / r.run_id / "params.json" for r in runs.expand(cfg)}
    winners = {ph: tmp_path / "phases" / ph / "winner.json" for ph in cfg["phases"]}
    assert runs.stale_runs(cfg, saved_files, winners) == []
    edited = copy.deepcopy(cfg)
    edited["variants"]["lora"]["A"]["r"] = 12
    stale = runs.stale_runs(edited, saved_files, winners)
    assert stale == [
        f"{saved.parent}: resolved differently now (lora); results are kept: delete that "
        "folder to retrain it"
    ]
    assert saved.exists()  # nothing is deleted or rewritten


def test_a_step_that_exits_after_a_forwarded_signal_is_not_marked(tmp_path):
    """A backend stopped by SIGTERM (SLURM's time-limit warning) exits 128 + 15 by itself."""
    ready = tmp_path / "ready"
    code = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(30)\n"
    )
    proc = step(tmp_path, code)
    wait_for(ready)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 143
    assert not (tmp_path / rundir.FAILED).exists()
