"""After a crash (Hardening II, 7): `make demo` killed at random points and run again ends with
the same results as a run never interrupted, and the rerun clears the lock a killed Snakemake
leaves (tadsweep/site/unlock.py) instead of stopping on it.

The crash test runs `make demo` itself -- the unlock, the study, the report -- on a small study
(tests/configs/slurm_small.yaml: 6 runs in 2 phases, sweep, ensemble, statistics) in temporary
folders: once straight through, then killed as a user's machine would kill it (`kill -9` of one
training; SIGKILL of the whole process group at seeded random times), rerun after each kill, and
compared file by file without the columns that time the runs."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tadsweep.site import unlock

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tests" / "configs" / "slurm_small.yaml"
STUDY = Path("results", "slurm_small")
VENV = os.path.relpath(sys.prefix, ROOT)  # the Makefile's VENV: this interpreter's
SEED = 7  # the kill times; printed with every failure
TIMED = re.compile(r"seconds|gpu_hours|attempts|spend|spent")  # how long, not what
CLEARED = "tadsweep: cleared a stale Snakemake lock in"


# ----------------------------------------------------------------------------- the stale lock


def snakemake_args(work: Path) -> list[str]:
    return ["--configfile", str(CONFIG), "--directory", str(work)]


def run_unlock(work: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tadsweep.site.unlock", "--", *snakemake_args(work)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def stale_lock(work: Path) -> Path:
    locks = work / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text(f"{work}/results/slurm_small/plan.tsv\n")
    (locks / "0.output.lock").write_text(f"{work}/results/slurm_small/summary.tsv\n")
    return locks


def fake_snakemake(folder: Path, cwd: Path, *args: str) -> subprocess.Popen:
    """A process that looks like a running Snakemake (a console script named snakemake)."""
    script = folder / "bin" / "snakemake"
    script.parent.mkdir(exist_ok=True)
    script.write_text("import time\ntime.sleep(120)\n")
    return subprocess.Popen([sys.executable, str(script), *args], cwd=cwd)


def test_no_lock_no_output(tmp_path):
    res = run_unlock(tmp_path)
    assert res.returncode == 0 and res.stdout == "" and res.stderr == "", res.stderr


def test_a_stale_lock_is_cleared_in_one_line(tmp_path):
    """No Snakemake alive in the folder: `snakemake --unlock` with the same arguments, one line.
    A shell whose command merely mentions snakemake, in that folder, is no Snakemake."""
    work = tmp_path / "work"
    locks = stale_lock(work)
    shell = subprocess.Popen(["bash", "-c", "sleep 120; snakemake --help"], cwd=work)
    try:
        res = run_unlock(work)
    finally:
        shell.kill()
        shell.wait()
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.splitlines() == [
        f"{CLEARED} {locks.resolve()} (2 lock files): no Snakemake of this working directory is "
        "running (the last one was killed)"
    ]
    assert not unlock.locks(work)


def test_a_failed_unlock_is_one_line_and_keeps_the_lock(tmp_path):
    work = tmp_path / "work"
    locks = stale_lock(work)
    missing = tmp_path / "missing.yaml"
    cmd = [sys.executable, "-m", "tadsweep.site.unlock", "--", "--configfile", str(missing),
           "--directory", str(work)]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and res.stdout == "" and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith(f"error: snakemake --unlock in {work.resolve()} failed (exit 1):")
    assert res.stderr.count("\n") == 1 and "missing.yaml" in res.stderr, res.stderr
    assert sorted(p.name for p in locks.iterdir()) == ["0.input.lock", "0.output.lock"]


@pytest.mark.parametrize("how", ["cwd", "directory"])
def test_a_lock_held_by_a_live_snakemake_stays(tmp_path, how):
    work = tmp_path / "work"
    locks = stale_lock(work)
    if how == "cwd":  # Snakemake runs in its working directory
        proc = fake_snakemake(tmp_path, work, "--cores", "2")
    else:  # or was started elsewhere with --directory (relative to where it started)
        proc = fake_snakemake(tmp_path, tmp_path, "--cores", "2", "-d", "work")
    try:
        deadline = time.monotonic() + 30
        while not unlock.running(work.resolve()) and time.monotonic() < deadline:
            time.sleep(0.05)  # until it has started
        res = run_unlock(work)
    finally:
        proc.kill()
        proc.wait()
    assert res.returncode == 0, res.stderr
    held = f"tadsweep: {locks.resolve()} is held by a running Snakemake (pid {proc.pid}: "
    assert res.stdout.startswith(held), res.stdout
    assert res.stdout.count("\n") == 1 and "left as it is" in res.stdout
    assert sorted(p.name for p in locks.iterdir()) == ["0.input.lock", "0.output.lock"]


def test_the_working_directory_is_snakemakes():
    assert unlock.workdir(["--configfile", "c.yaml"], Path("/a")) == Path("/a")
    assert unlock.workdir(["-d", "x", "--cores", "2"], Path("/a")) == Path("/a/x")
    assert unlock.workdir(["--directory=/b", "--directory", "c"], Path("/a")) == Path("/a/c")
    assert unlock._is_snakemake(["/venv/bin/python", "/venv/bin/snakemake", "--cores", "2"])
    assert unlock._is_snakemake(["python3", "-m", "snakemake"])
    assert unlock._is_snakemake(["snakemake", "--profile", "slurm"])
    assert not unlock._is_snakemake(["/bin/bash", "-c", "snakemake --cores 2"])
    assert not unlock._is_snakemake(["python", "-m", "tadsweep.site.unlock", "--", "snakemake"])


# ----------------------------------------------------------------------------- killed and rerun


def make_demo(work: Path, out) -> subprocess.Popen:
    """`make demo` on the small study in `work`: the unlock, the study, the report; in its own
    process group (what a terminal's Ctrl-\\ or a machine's OOM killer would hit)."""
    cmd = ["make", "--no-print-directory", "-o", f"{VENV}/.installed", "demo", f"VENV={VENV}",
           "DEMO=" + " ".join(snakemake_args(work)), f"DEMO_REPORT={work}/report.html"]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def group(pgid: int) -> dict[int, list[bytes]]:
    """Live (not zombie) processes of a process group, with their command lines."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[2]) == pgid and stat[0] != "Z":
            found[int(proc.name)] = argv
    return found


def trainings(pgid: int, cwd: Path) -> dict[int, Path]:
    """The group's demo trainings (`python -m tadsweep.backends.demo train`, not their rundir
    wrapper), with their work folders."""
    found = {}
    for pid, argv in group(pgid).items():
        if argv[1:4] == [b"-m", b"tadsweep.backends.demo", b"train"] and b"--work-dir" in argv:
            found[pid] = cwd / argv[argv.index(b"--work-dir") + 1].decode()
    return found


def wait_gone(pgid: int) -> None:
    deadline = time.monotonic() + 60
    while group(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group(pgid), group(pgid)


def locked(work: Path) -> bool:
    return bool(unlock.locks(work))


def progress(work: Path) -> str:
    runs = work / STUDY / "runs"
    trained = len(list(runs.glob("**/train.json"))) if runs.exists() else 0
    return f"{trained} of 6 runs trained, summary: {(work / STUDY / 'summary.tsv').exists()}"


def comparable(study: Path) -> dict[str, object]:
    """Every result that must not depend on a crash, without what times the runs: summary,
    winners and rankings, the ensemble, statistics, the headline, each run's curves."""
    out = {}
    for path in sorted(study.glob("**/*.tsv")):
        rel = str(path.relative_to(study))
        if rel.startswith(("benchmarks/", "logs/")):
            continue
        frame = pd.read_csv(path, sep="\t")
        drop = [c for c in frame.columns if TIMED.search(c) or c == "mem_mb"]
        out[rel] = frame.drop(columns=drop)
    for rel in ("phases/p1/winner.json", "phases/p2/winner.json", "ensemble/crossfit.json",
                "postprocess_best.json", "stats/headline.json"):  # fmt: skip
        out[rel] = _untimed(json.loads((study / rel).read_text()))
    return out


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not TIMED.search(k)}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


@pytest.mark.e2e
def test_killed_at_random_points_and_rerun_gives_the_same_results(tmp_path):
    rng = random.Random(SEED)
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    logs = tmp_path / "logs"
    logs.mkdir()

    def run(work: Path, name: str) -> tuple[subprocess.Popen, Path]:
        log = logs / f"{name}.log"
        with log.open("w") as out:
            return make_demo(work, out), log

    start = time.monotonic()
    proc, log = run(straight, "straight")
    assert proc.wait(timeout=1800) == 0, log.read_text()[-4000:]
    duration = time.monotonic() - start
    assert "demo finished in" in log.read_text() and (straight / "report.html").exists()

    events = []  # what was killed when: the message of every assertion below
    # 1. `kill -9` of one training a random moment after its first checkpoint (epoch_1.pth,
    # before epoch_3.pth): Snakemake sees the job fail and stops (no --keep-going); the rerun
    # resumes that training from the checkpoint and repeats the epochs after it.
    proc, log = run(crashed, "kill-one-training")
    delay, killed, seen = rng.uniform(0, 1.5), None, {}
    deadline = time.monotonic() + 2 * duration
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        for pid, work in trainings(proc.pid, crashed).items():
            ckpt = work / "checkpoint"
            between = (ckpt / "epoch_1.pth").exists() and not (ckpt / "epoch_3.pth").exists()
            if between and time.monotonic() - seen.setdefault(pid, time.monotonic()) >= delay:
                os.kill(pid, signal.SIGKILL)  # a live child of rundir: no pid reused
                killed = work
                break
        time.sleep(0.02)
    assert killed is not None, f"no training was killed: {log.read_text()[-3000:]}"
    assert proc.wait(timeout=1800) != 0
    wait_gone(proc.pid)
    events.append(f"kill -9 of the training in {killed} {delay:.1f} s after its epoch_1.pth")
    # 2-3. SIGKILL of `make demo`'s whole process group (make, Snakemake, every job) at seeded
    # random times (together at most 60% of a straight run: each lands before the study ends);
    # each leaves Snakemake's lock, which the next `make demo` must clear and say so.
    for k, fraction in enumerate([rng.uniform(0.05, 0.3) for _ in range(2)], start=2):
        stale = locked(crashed)
        proc, log = run(crashed, f"sigkill-{k}")
        delay = fraction * duration
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:  # still running: the kill lands
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        else:
            pytest.fail(f"the study ended before the kill at {delay:.0f} s: {events}")
        wait_gone(proc.pid)
        text = log.read_text()
        assert (CLEARED in text) == stale, (events, text[-3000:])
        events.append(f"SIGKILL of the group after {delay:.0f} s: {progress(crashed)}, lock "
                      f"left: {locked(crashed)}")  # fmt: skip
    assert locked(crashed), events  # the last kill hit a Snakemake holding its lock
    proc, log = run(crashed, "final")
    assert proc.wait(timeout=1800) == 0, (events, log.read_text()[-4000:])
    text = log.read_text()
    assert CLEARED in text and "demo finished in" in text, (events, text[-3000:])
    assert (crashed / "report.html").exists()

    want, got = comparable(straight / STUDY), comparable(crashed / STUDY)
    assert sorted(got) == sorted(want), events
    assert len([f for f in want if f.startswith("runs/")]) == 6 * 2  # curves.tsv, sweep.tsv
    for rel, value in want.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(got[rel], value, check_exact=True, obj=rel)
        else:
            assert got[rel] == value, (rel, events)
    resumed = (killed / "log.json").read_text()  # the killed training went on from epoch_1
    assert "Resume epoch is 1" in resumed, events
    attempts = [json.loads(line) for p in (crashed / STUDY / "runs").glob("**/attempts.jsonl")
                for line in p.read_text().splitlines()]  # fmt: skip
    assert any(a["outcome"] != "ok" for a in attempts), events  # the kills hit real work
