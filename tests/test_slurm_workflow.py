"""The workflow through SLURM (issue 6): the small study (tests/configs/slurm_small.yaml) on the
local test cluster of tests/slurm/up.sh, with the repo's profile and the test overlay:

    snakemake --profile slurm --profile tests/slurm/profile --directory <tmp> --configfile ...

run from the repository root (the profiles are found there; the profile's relative paths, e.g.
slurm-logdir, land in <tmp>). What reached SLURM is read from the cluster's job completion log
(one record per finished job, with its GPU request, memory, time limit and log path). Every
study starts from a copy of the demo data, made once by the workflow's own rules (the way a real
study starts from the site's data): the data rules are not what is tested here.

1. the study end to end: train/detect are GPU jobs, local rules never reach SLURM, and the
   summary equals a local run's on every metric;
2. a cancelled training job is resubmitted and resumes from its checkpoint, bit-identically;
3. a job killed for its memory is retried with twice the memory and more time;
4. a run failing by itself: keep-going finishes the rest, the next invocation reports it;
5. the dress rehearsal of config.yaml on upstream OpenTAD: tests/test_slurm_rehearsal.py;
6. a broken image stops the study at the preflight, before any training is submitted;
7. a study started with nohup ... & is stopped as docs/cluster.md says, its jobs cancelled;
8. an sbatch error is retried without asking for more memory or time.

These tests need the Slurm binaries and root; they fail (never skip) without them. A few minutes
on 2 cores; every snakemake call runs under a timeout that also cancels its SLURM jobs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import local_slurm
import opentad_site
import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tests" / "configs" / "slurm_small.yaml"
PROFILES = ["--profile", "slurm", "--profile", "tests/slurm/profile"]
STUDY = "results/slurm_small"
RUN = "p1/base/seed=1"  # the run the cancel and memory tests follow
# summary.tsv columns that measure time, not results (they differ between any two runs)
TIME_COLUMNS = {"train_seconds", "gpu_hours", "gpu_hours_actual"}  # measured, not computed


pytestmark = pytest.mark.slurm


# --- running snakemake -----------------------------------------------------------------------


STARTED: list[Snakemake] = []  # stopped after each test (see _stop_leftovers)


class Snakemake:
    """One snakemake invocation in the background (own process group, output in a file)."""

    def __init__(self, workdir: Path, config: Path, *args: str, slurm: bool, name: str, env=None):
        self.workdir = workdir
        self.out = workdir.parent / f"{workdir.name}.{name}.log"
        env = dict(env or os.environ)
        # the jobs' `python` (shell rules, SLURM jobs: sbatch exports PATH) is this venv's
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        # targets first: --configfile takes every argument up to the next option
        cmd = [sys.executable, "-m", "snakemake", *args]
        cmd += PROFILES if slurm else ["--cores", "2"]
        cmd += ["--directory", str(workdir), "--configfile", str(config)]
        self.cmd = cmd
        self.started = time.monotonic()
        self.started_wall = time.time()
        with open(self.out, "w") as fh:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.seconds: float | None = None
        STARTED.append(self)

    def wait(self, timeout: float) -> int:
        """Exit status; on timeout the process group is stopped, its SLURM jobs are cancelled
        and the test fails."""
        try:
            rc = self.proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(
                f"snakemake did not finish within {timeout} s: {' '.join(self.cmd)}\n{self.tail()}"
            ) from None
        self.seconds = self.out.stat().st_mtime - self.started_wall  # its last output
        return rc

    def stop(self) -> None:
        if self.proc.poll() is None:
            # Ctrl-C: Snakemake cancels its SLURM jobs and exits (SIGTERM would wait for them)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        cancel_jobs(self.workdir)

    @property
    def run_id(self) -> str:
        """Snakemake's run id, the name of each of its SLURM jobs (empty until it printed it)."""
        m = re.search(r"SLURM run ID: (\S+)", self.text())
        return m.group(1) if m else ""

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def tail(self, n: int = 6000) -> str:
        return self.text()[-n:]

    def check(self, timeout: float) -> None:
        rc = self.wait(timeout)
        assert rc == 0, f"snakemake failed ({rc}): {' '.join(self.cmd)}\n{self.tail()}"


@pytest.fixture(autouse=True)
def _stop_leftovers():
    """A test that fails half-way leaves no snakemake process and no SLURM job behind."""
    before = len(STARTED)
    yield
    for run in STARTED[before:]:
        run.stop()
    del STARTED[before:]


def queued_jobs(workdir: Path) -> list[tuple[str, str, str, str]]:
    """(job id, state, name, comment) of the jobs squeue shows for a workflow directory."""
    proc = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i|%T|%j|%Z|%k"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    jobs = []
    for line in proc.stdout.splitlines():
        parts = line.split("|", 4)
        if len(parts) == 5 and Path(parts[3]) == workdir:
            jobs.append((parts[0], parts[1], parts[2], parts[4]))
    return jobs


def cancel_jobs(workdir: Path) -> None:
    live = [j[0] for j in queued_jobs(workdir) if j[1] in ("PENDING", "RUNNING")]
    if live:
        subprocess.run(["scancel", *live], capture_output=True, timeout=30)


# --- what SLURM saw ---------------------------------------------------------------------------

_LOG_PATH = re.compile(r"/rule_([^/]+)/(?:([^/]+)/)?%j\.log$")


def slurm_jobs(cluster, *runs: Snakemake) -> list[dict[str, str]]:
    """Finished SLURM jobs of these snakemake invocations (by run id: the job log outlives
    workflow directories), oldest first, with `rule` and `wildcards` from the job's log path
    (logs/slurm/rule_<rule>/<wildcards>/%j.log)."""
    ids = {run.run_id for run in runs} - {""}
    out = []
    for rec in local_slurm.read_jobcomp(cluster.jobcomp):
        if rec.get("name") not in ids:
            continue
        assert rec["work_dir"] in {str(run.workdir) for run in runs}, rec
        m = _LOG_PATH.search(rec.get("std_out", ""))
        assert m, f"unexpected job log path: {rec}"
        out.append(dict(rec, rule=m.group(1), wildcards=m.group(2) or ""))
    return sorted(out, key=lambda r: int(r["job_id"]))


def wildcards_of(run_id: str) -> str:
    """The plugin's log folder name of a run (slashes become underscores)."""
    return run_id.replace("/", "_")


# --- study configs and data -------------------------------------------------------------------


def small_config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def write_config(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_dir(workdir: Path, run_id: str) -> Path:
    return workdir / STUDY / "runs" / run_id


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """The demo's data set (synthetic videos and the pretrained frozen backbone), made once
    locally by the workflow's own rules; every study below starts from a copy of it, the way a
    real study starts from the site's data. Deterministic: a copy equals a rebuild."""
    work = tmp_path_factory.mktemp("data")
    run = Snakemake(work, CONFIG, f"{STUDY}/data/backbone.pt", slurm=False, name="data")
    run.check(timeout=300)
    return work / STUDY / "data"


def new_workdir(path: Path, demo_data: Path) -> Path:
    """A workflow directory holding a copy of the demo data (timestamps kept: nothing to
    rebuild, so the first jobs are the runs' own)."""
    shutil.copytree(demo_data, path / STUDY / "data")
    return path


def equal_tables(a: Path, b: Path, drop: set[str] = frozenset()) -> None:
    """Exact equality of two TSV files as text cells (no float tolerance), minus `drop`."""
    ta = pd.read_csv(a, sep="\t", dtype=str, keep_default_na=False)
    tb = pd.read_csv(b, sep="\t", dtype=str, keep_default_na=False)
    assert list(ta.columns) == list(tb.columns)
    assert drop <= set(ta.columns), f"{a}: no columns {drop - set(ta.columns)}"
    keep = [c for c in ta.columns if c not in drop]
    pd.testing.assert_frame_equal(ta[keep], tb[keep])


# --- 1. the study end to end ------------------------------------------------------------------


def test_small_study_through_slurm_equals_a_local_run(slurm_cluster, demo_data, tmp_path):
    work = new_workdir(tmp_path / "slurm", demo_data)
    local = new_workdir(tmp_path / "local", demo_data)
    study = Snakemake(work, CONFIG, slurm=True, name="slurm")
    # alongside it, the reference: the same study with --cores 2, as far as the numbers compared
    winners = [f"{STUDY}/phases/{phase}/winner.json" for phase in ("p1", "p2")]
    reference = Snakemake(
        local, CONFIG, f"{STUDY}/summary.tsv", *winners, slurm=False, name="local"
    )
    study.check(timeout=600)
    reference.check(timeout=300)
    jobs = slurm_jobs(slurm_cluster, study)

    runs = sorted(p.parent.relative_to(work / STUDY / "runs").as_posix()
                  for p in (work / STUDY / "runs").glob("*/*/*/params.json"))  # fmt: skip
    assert len(runs) == 6, runs
    for rule in ("train", "detect"):
        mine = [j for j in jobs if j["rule"] == rule]
        # one GPU job per run, each asking for (and given) one GPU
        assert sorted(j["wildcards"] for j in mine) == sorted(map(wildcards_of, runs)), mine
        for j in mine:
            assert j["state"] == "COMPLETED", j
            assert j["tres_per_job"] == "gres:gpu:1", j
            assert j["gres_used"] == "gpu:1", j
            assert j["total_cpus"] == "1", j  # cpus_per_gpu: 1
    # Only the GPU rules went to SLURM; every other rule ran on the submit host.
    assert len(jobs) == 2 * len(runs), [(j["job_id"], j["rule"]) for j in jobs]
    text = study.text()
    local_rules = ("resolve", "curves", "sweep", "select", "collect", "ensemble", "stats", "plots")
    for rule in (*local_rules, "plan", "study", "headline"):
        assert f"localrule {rule}:" in text, rule
    for rule in ("train", "detect"):
        assert f"localrule {rule}:" not in text
    assert (work / STUDY / "stats" / "headline.html").exists()

    # Same numbers as the local run: the demo backend is deterministic, so exact equality.
    summary = work / STUDY / "summary.tsv"
    equal_tables(summary, local / STUDY / "summary.tsv", drop=TIME_COLUMNS)
    table = pd.read_csv(summary, sep="\t")
    assert len(table) == 6 * 4 and set(table["status"]) == {"done"}  # runs x pp settings
    assert table["average_mAP"].notna().all() and table["average_mAP"].gt(0).any()
    assert table["gpu_hours_actual"].gt(0).all()  # the ledger counted every SLURM attempt
    for winner in winners:
        assert json.loads((work / winner).read_text()) == json.loads((local / winner).read_text())
    print(f"\nSLURM study {study.seconds:.0f} s, local reference {reference.seconds:.0f} s")


# --- 2. cancel and resume ---------------------------------------------------------------------


def epochs_started(log_text: str) -> list[int]:
    return [int(m) for m in re.findall(r"\[Train\]: Epoch (\d+) started", log_text)]


def test_cancelled_training_resumes_from_its_checkpoint(slurm_cluster, demo_data, tmp_path):
    # 8 epochs with a checkpoint every 2: epoch_1.pth appears early and training goes on for
    # several seconds after it, time enough to cancel the job in the middle.
    epochs = 8
    cfg = small_config()
    cfg["variants"]["schedule"]["v1"].update(epochs=epochs, cosine_epochs=epochs + 2)
    config = write_config(cfg, tmp_path / "long.yaml")
    targets = [f"{STUDY}/runs/{RUN}/curves.tsv"]
    work = new_workdir(tmp_path / "slurm", demo_data)
    ref = new_workdir(tmp_path / "local", demo_data)
    reference = Snakemake(ref, config, *targets, slurm=False, name="local")  # uninterrupted
    study = Snakemake(work, config, *targets, slurm=True, name="slurm")

    rdir = run_dir(work, RUN)
    checkpoint = rdir / "work" / "checkpoint" / "epoch_1.pth"
    cancelled = None
    deadline = time.monotonic() + 300
    while cancelled is None:
        assert not (rdir / "train.json").exists(), "training finished before it was cancelled"
        assert study.proc.poll() is None, f"snakemake ended early:\n{study.tail()}"
        assert time.monotonic() < deadline, (
            f"no running train job with a checkpoint:\n{study.tail()}"
        )
        running = [
            job
            for job, state, name, comment in queued_jobs(work)
            if state == "RUNNING" and name == study.run_id and "rule_train" in comment
        ]
        if running and checkpoint.exists():
            subprocess.run(["scancel", running[0]], check=True, timeout=30)
            cancelled = running[0]
        time.sleep(0.2)
    study.check(timeout=400)  # the profile's retries resubmit the cancelled job
    reference.check(timeout=300)

    trains = [j for j in slurm_jobs(slurm_cluster, study) if j["rule"] == "train"]
    assert [(j["job_id"], j["state"]) for j in trains] == [
        (cancelled, "CANCELLED"),
        (trains[-1]["job_id"], "COMPLETED"),
    ], trains
    assert "SLURM status is: 'CANCELLED'" in study.text()
    assert not (rdir / "FAILED.json").exists()  # a kill is not a failure of the run

    # log.json (appended by every launch, OpenTAD style) shows the resume ...
    log = (rdir / "work" / "log.json").read_text()
    resumed = re.findall(r"Resume training from: \S*epoch_(\d+)\.pth", log)
    assert len(resumed) == 1, log[-3000:]
    resume_epoch = int(resumed[0])
    assert resume_epoch >= 1 and f"Resume epoch is {resume_epoch}" in log
    assert json.loads((rdir / "train.json").read_text())["resumed_from"] == resume_epoch
    # ... and no checkpointed epoch trained twice: the first launch started epochs 0..k (k >= the
    # checkpoint's epoch; the cancel may cut the epoch after it), the resumed one the rest.
    before, after = log.split("Resume training from:")
    first, second = epochs_started(before), epochs_started(after)
    assert first == list(range(len(first))) and len(first) > resume_epoch, first
    assert second == list(range(resume_epoch + 1, epochs)), second
    for epoch in range(resume_epoch + 1):
        assert (first + second).count(epoch) == 1, (epoch, first, second)

    # The same run as the uninterrupted one: every logged loss, learning rate and evaluation
    # (the resident memory column aside), and bit-identical final weights, which detect uses.
    rref = run_dir(ref, RUN)
    equal_tables(rdir / "curves.tsv", rref / "curves.tsv", drop={"mem_mb"})
    final = f"work/checkpoint/epoch_{epochs - 1}.pth"
    mine, theirs = (torch.load(d / final, weights_only=False) for d in (rdir, rref))
    for key in ("state_dict", "state_dict_ema"):
        assert mine[key].keys() == theirs[key].keys() and mine[key], key
        for name, tensor in mine[key].items():
            assert torch.equal(tensor, theirs[key][name]), (key, name)
    print(f"\ncancelled job {cancelled} resumed from epoch {resume_epoch}; {study.seconds:.0f} s")


def test_training_near_its_time_limit_checkpoints_on_the_signal_and_resumes(
    slurm_cluster, demo_data, tmp_path
):
    """A 3-minute job asks SLURM for SIGTERM 1 minute before its limit (--signal=TERM@60; SLURM
    sends it up to a minute early). The signal reaches every process of the job step: the job's
    snakemake waits (SIGTERM is its graceful stop), rundir and the training catch it, and the
    training saves the epoch it is in -- no checkpoint interval falls there -- and exits before
    the limit. The retry (3 x 2 minutes) resumes from that checkpoint. The run is far too long
    to finish: once the retry has resumed, the study is stopped."""
    epochs = 5000
    cfg = small_config()
    cfg["variants"]["schedule"]["v1"].update(epochs=epochs, cosine_epochs=epochs + 2)
    cfg["model"].update(checkpoint_interval=epochs, val_interval=epochs)
    cfg["resources"]["train"]["runtime_min"] = 3
    cfg["resources"]["signal_lead_min"] = 1
    config = write_config(cfg, tmp_path / "limit.yaml")
    work = new_workdir(tmp_path / "slurm", demo_data)
    study = Snakemake(work, config, f"{STUDY}/runs/{RUN}/train.json", slurm=True, name="slurm")
    rdir = run_dir(work, RUN)
    log = rdir / "work" / "log.json"
    deadline = time.monotonic() + 400
    while "Resume epoch is" not in (log.read_text() if log.exists() else ""):
        assert study.proc.poll() is None, f"snakemake ended early:\n{study.tail()}"
        assert time.monotonic() < deadline, f"no resumed training:\n{study.tail()}"
        time.sleep(0.5)
    study.stop()

    text = log.read_text()
    first, second = text.split("Resume training from:", 1)
    saved = re.findall(r"Stop requested \(SIGTERM\): saved epoch_(\d+)\.pth", first)
    assert len(saved) == 1, first[-3000:]
    stopped_at = int(saved[0])
    assert 0 <= stopped_at < epochs - 1
    # the first launch trained whole epochs up to the one it saved, the retry goes on after it
    assert epochs_started(first) == list(range(stopped_at + 1))
    assert f"Resume epoch is {stopped_at}" in second
    assert epochs_started(second)[:1] == [stopped_at + 1]

    trains = [j for j in slurm_jobs(slurm_cluster, study) if j["rule"] == "train"]
    # the first job ended by itself before its limit: FAILED (the step's exit), not TIMEOUT
    assert (trains[0]["state"], trains[0]["time_limit"]) == ("FAILED", "3"), trains[0]
    records = [json.loads(x) for x in (rdir / "attempts.jsonl").open()]
    assert (records[0]["step"], records[0]["outcome"], records[0]["status"]) == (
        "train",
        "stopped",
        143,
    ), records
    assert records[0]["job"] == trains[0]["job_id"]
    assert not (rdir / "FAILED.json").exists()  # a stop is not a failure of the run
    print(f"\nstopped at epoch {stopped_at} on the time-limit signal, resumed by the retry")


# --- 3. out of memory: retried with more memory and time --------------------------------------


def test_job_killed_for_memory_is_retried_with_more(slurm_cluster, demo_data, tmp_path):
    # The job's step holds the job's inner snakemake (~170 MB RSS), tadsweep.plan.rundir (~15 MB)
    # and the demo's training (~440 MB): it passes 450 MB while training starts and slurmstepd
    # kills it; the retry asks 2 x 450 MB and 2 x 5 min (rules/train.smk: x attempt) and finishes.
    cfg = small_config()
    cfg["resources"]["train"].update(mem_mb=450, runtime_min=5)
    config = write_config(cfg, tmp_path / "oom.yaml")
    work = new_workdir(tmp_path / "slurm", demo_data)
    study = Snakemake(work, config, f"{STUDY}/runs/{RUN}/train.json", slurm=True, name="slurm")

    # Between the attempts: the killed attempt left no output that looks complete.
    rdir = run_dir(work, RUN)
    seen_between = False
    deadline = time.monotonic() + 300
    while study.proc.poll() is None and time.monotonic() < deadline:
        trains = [j for j in slurm_jobs(slurm_cluster, study) if j["rule"] == "train"]
        if len(trains) == 1 and not seen_between:
            assert not (rdir / "train.json").exists()
            assert not (rdir / "FAILED.json").exists()  # killed, not failed by itself
            seen_between = True
        time.sleep(0.2)
    study.check(timeout=300)
    assert seen_between, "never saw the state between the two attempts"

    # How many attempts a kill needs depends on the machine's resident sizes (one CI machine
    # needed three); what must hold is the pattern: each killed attempt asks attempt x the
    # memory and time of the first, and the last one completes.
    trains = [j for j in slurm_jobs(slurm_cluster, study) if j["rule"] == "train"]
    first, last = trains[0], trains[-1]
    assert 2 <= len(trains) <= 3, trains  # retries: 2
    for attempt, job in enumerate(trains, 1):
        asked = (job["min_mem_per_node"], job["time_limit"])
        assert asked == (str(450 * attempt), str(5 * attempt)), (attempt, job)
    for job in trains[:-1]:
        # Without cgroups the kill ends the job FAILED (derived exit: signal 9); with cgroups a
        # real cluster says OUT_OF_MEMORY. Snakemake treats both as a failed attempt.
        assert job["state"] in ("FAILED", "OUT_OF_MEMORY"), job
        assert job["derived_exit"] == "0:9", job
    assert last["state"] == "COMPLETED", last
    first_log = Path(first["std_out"].replace("%j", first["job_id"])).read_text()
    assert "Exceeded job memory limit" in first_log
    assert json.loads((rdir / "train.json").read_text())["epochs"] == 4
    assert not (rdir / "FAILED.json").exists()
    print(f"\nmemory retry: {study.seconds:.0f} s")


# --- 4. keep-going, and a run that fails by itself --------------------------------------------


def test_failed_run_is_reported_and_the_rest_finishes(slurm_cluster, demo_data, tmp_path):
    # One phase (base, lora=A; 2 seeds). p1/lora=A/seed=2 fails by itself at start: its work dir
    # holds a checkpoint of other parameters (a stale work dir of an earlier configuration), which
    # the demo backend refuses with a one-line error (exit status 2).
    cfg = small_config()
    del cfg["phases"]["p2"]
    cfg["claims"] = [c for c in cfg["claims"] if c["axis"] != "augment"]
    config = write_config(cfg, tmp_path / "fail.yaml")
    bad = "p1/lora=A/seed=2"
    work = new_workdir(tmp_path / "slurm", demo_data)
    stale = run_dir(work, bad) / "work" / "checkpoint" / "epoch_1.pth"
    stale.parent.mkdir(parents=True)
    torch.save({"epoch": 1, "fingerprint": "an-earlier-config"}, stale)

    first = Snakemake(work, config, slurm=True, name="first")
    rc = first.wait(timeout=500)
    assert rc != 0, first.tail()
    marker = run_dir(work, bad) / "FAILED.json"
    failed = json.loads(marker.read_text())
    assert failed["step"] == "train" and failed["status"] == 2, failed
    assert failed["log"] == f"{STUDY}/logs/train/{bad}.log"
    assert "trained with other parameters" in (work / failed["log"]).read_text()
    # keep-going: every other run of the grid was trained, detected and swept
    others = ["p1/base/seed=1", "p1/base/seed=2", "p1/lora=A/seed=1"]
    for rid in others:
        assert (run_dir(work, rid) / "sweep.tsv").exists(), rid
    assert not (work / STUDY / "summary.tsv").exists()  # the first invocation cannot collect
    # the profile's retries resubmitted the failing job; each attempt failed the same way
    retries = yaml.safe_load((ROOT / "slurm" / "config.v8+.yaml").read_text())["retries"]
    bad_jobs = [j for j in slurm_jobs(slurm_cluster, first) if j["wildcards"] == wildcards_of(bad)]
    assert [(j["rule"], j["state"]) for j in bad_jobs] == [("train", "FAILED")] * (1 + retries)

    # The next invocation leaves the failed run out of selection and reports it.
    second = Snakemake(work, config, slurm=True, name="second")
    second.check(timeout=300)
    # nothing left to train: no cluster job (in particular, the failed run was not retried)
    assert second.run_id and slurm_jobs(slurm_cluster, second) == []
    summary = pd.read_csv(work / STUDY / "summary.tsv", sep="\t")
    rows = summary[summary["run_id"] == bad]
    assert len(rows) >= 1 and set(rows["status"]) == {"failed"}, rows
    assert set(rows["log"]) == {failed["log"]}, rows
    done = summary[summary["run_id"] != bad]
    assert sorted(set(done["run_id"])) == sorted(others) and set(done["status"]) == {"done"}
    headline = json.loads((work / STUDY / "stats" / "headline.json").read_text())
    assert headline["failed_runs"] == [bad]
    assert headline["runs"]["failed"] == 1 and headline["runs"]["done"] == 3
    ranking = pd.read_csv(work / STUDY / "phases" / "p1" / "ranking.tsv", sep="\t")
    assert bad not in ranking.to_string()
    print(f"\nfailing run: first {first.seconds:.0f} s, second {second.seconds:.0f} s")


# --- 4b. a partition SLURM does not know: one line before any submission ------------------------


def test_unknown_partition_stops_before_any_submission(slurm_cluster, demo_data, tmp_path):
    """An sbatch that can never succeed would fail every job, and each retry would ask twice the
    memory and time: the partition is checked with sinfo before the first submission."""
    config = write_config(small_config(), tmp_path / "part.yaml")
    work = new_workdir(tmp_path / "slurm", demo_data)
    env = dict(os.environ, TADSWEEP_PARTITION="nosuchpart")
    study = Snakemake(work, config, slurm=True, name="partition", env=env)
    assert study.wait(timeout=120) != 0
    lines = [ln for ln in study.tail().splitlines() if "nosuchpart" in ln and "not known" in ln]
    assert len(lines) == 1, study.tail()
    assert "resources.slurm_partition: 'nosuchpart' is not known to SLURM" in lines[0]
    assert "debug" in lines[0] and "gpu" in lines[0]  # what sinfo lists
    assert slurm_jobs(slurm_cluster, study) == [] and not queued_jobs(work)

    env["TADSWEEP_PARTITION"] = "gpu"  # a partition it knows: the study runs
    fine = Snakemake(work, config, f"{STUDY}/runs/{RUN}/train.json", slurm=True, name="gpu",
                     env=env)  # fmt: skip
    fine.check(timeout=300)
    assert {j["partition"] for j in slurm_jobs(slurm_cluster, fine)} == {"gpu"}


# --- config.yaml on upstream OpenTAD (the dress rehearsal: tests/test_slurm_rehearsal.py) ------


def smoke_study(tiny_site, opentad_root, tmp_path: Path, name: str, **doctor) -> tuple[Path, Path]:
    """config.yaml on the tiny site with "the image" (any file: the apptainer double runs on the
    host), and an empty workflow directory."""
    image = tmp_path / "opentad.sif"
    image.write_text("image")
    study = opentad_site.smoke_study(tiny_site, opentad_root, image, name=name)
    study["doctor"] = doctor
    config = write_config(study, tmp_path / f"{name}.yaml")
    work = tmp_path / "work"
    work.mkdir()
    return config, work


# --- 6. preflight: a broken image stops the study before any training is submitted -------------


@pytest.mark.opentad
@pytest.mark.slurm
def test_broken_image_stops_the_study_at_the_preflight(
    slurm_cluster, opentad_root, tiny_site, tmp_path
):
    """The user's config.yaml on the live cluster, "the container" told to be broken (the
    apptainer double's APPTAINER_SHIM_BROKEN_IMPORT: OpenTAD's compiled NMS does not import).
    The preflight job fails in seconds, with one line; no train job reaches SLURM."""
    # the doctor as a SLURM CPU job here (doctor.submit, on the test node's 2 CPUs): it passes,
    # without a GPU
    config, work = smoke_study(tiny_site, opentad_root, tmp_path, "broken", submit=True, cpus=2)
    env = opentad_site.environment(opentad_root, APPTAINER_SHIM_BROKEN_IMPORT="nms_1d_cpu")
    target = "results/broken/runs/p1/base/seed=1/train.json"  # one run: fewer renders
    study = Snakemake(
        work, config, target, "--sdm", "apptainer", slurm=True, name="broken", env=env
    )
    assert study.wait(timeout=300) != 0
    jobs = slurm_jobs(slurm_cluster, study)
    # the doctor, then one preflight job (retries: 0), failed; nothing else was submitted, nothing
    # left queued
    states = [(j["rule"], j["state"], j.get("tres_per_job", "")) for j in jobs]
    assert states[0][:2] == ("doctor", "COMPLETED") and "gpu" not in states[0][2], states
    assert [s[:2] for s in states[1:]] == [("preflight", "FAILED")], jobs
    assert [j for j in queued_jobs(work) if j[1] in ("PENDING", "RUNNING")] == []
    assert not list((work / "results" / "broken" / "runs").glob("*/*/*/work"))
    lines = [ln for ln in study.text().splitlines() if "tadsweep: preflight failed" in ln]
    assert lines == [
        "tadsweep: preflight failed, no training submitted: OpenTAD's compiled NMS extension "
        "(nms_1d_cpu) does not import: ImportError: libcudart.so.11.0: cannot open shared "
        "object file: No such file or directory (results/broken/logs/preflight/default.log)"
    ], study.tail()
    print(f"\nbroken image stopped at the preflight: {study.seconds:.0f} s")


# --- 7. a study started in the background: stopped the documented way ---------------------------


def test_backgrounded_study_is_stopped_and_its_jobs_cancelled(slurm_cluster, demo_data, tmp_path):
    """`nohup snakemake ... &` from a script ignores SIGINT (a background job of a shell without
    job control), and SIGTERM alone waits for the running jobs. docs/cluster.md's way: SIGTERM (no
    new submissions), then `scancel --name <its SLURM run ID>`; snakemake exits, nothing is left."""
    cfg = small_config()
    cfg["variants"]["schedule"]["v1"].update(epochs=8, cosine_epochs=10)  # long enough to stop
    config = write_config(cfg, tmp_path / "bg.yaml")
    work = new_workdir(tmp_path / "slurm", demo_data)
    log = tmp_path / "study.log"
    targets = [f"{STUDY}/runs/p1/base/seed={s}/train.json" for s in (1, 2)]
    cmd = [sys.executable, "-m", "snakemake", *targets, *PROFILES, "--directory", str(work),
           "--configfile", str(config)]  # fmt: skip
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    shell = f"nohup {' '.join(map(shlex.quote, cmd))} > {shlex.quote(str(log))} 2>&1 & echo $!"
    pid = int(subprocess.run(["bash", "-c", shell], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=30, check=True).stdout)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not [j for j in queued_jobs(work) if j[1] == "RUNNING"]:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        run_id = re.search(r"SLURM run ID: (\S+)", log.read_text()).group(1)
        os.kill(pid, signal.SIGINT)  # what Ctrl-C would send: ignored here
        time.sleep(3)
        assert _alive(pid) and [j for j in queued_jobs(work) if j[1] == "RUNNING"]
        # the documented way (docs/cluster.md)
        os.kill(pid, signal.SIGTERM)
        subprocess.run(["scancel", "--name", run_id], check=True, timeout=30)
        deadline = time.monotonic() + 120
        while _alive(pid):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        cancel_jobs(work)
    jobs = queued_jobs(work)
    assert jobs and all(name == run_id for _, _, name, _ in jobs), jobs
    assert {state for _, state, _, _ in jobs} <= {"CANCELLED", "COMPLETED"}, jobs
    assert "CANCELLED" in {state for _, state, _, _ in jobs}
    assert not any((work / t).exists() for t in targets)  # stopped before training finished


def _alive(pid: int) -> bool:
    """The backgrounded snakemake still runs (a zombie -- exited, not yet reaped -- does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# --- 8. an sbatch error is retried without asking for more -------------------------------------


def test_submission_error_is_not_retried_with_more(slurm_cluster, demo_data, tmp_path):
    """Memory and wall time scale with the attempts that ran (a job killed for memory or time),
    not with submissions sbatch refused: here sbatch refuses 400 GB on the 21 GB node, and each
    of the profile's retries asks the same (before: 400, 800, 1200 GB)."""
    cfg = small_config()
    cfg["resources"]["train"].update(mem_mb=400_000, runtime_min=5)
    config = write_config(cfg, tmp_path / "big.yaml")
    work = new_workdir(tmp_path / "slurm", demo_data)
    study = Snakemake(work, config, f"{STUDY}/runs/{RUN}/train.json", slurm=True, name="big")
    assert study.wait(timeout=180) != 0
    calls = re.findall(r"sbatch call:\s*\n\s*(.*)", study.text())
    retries = yaml.safe_load((ROOT / "slurm" / "config.v8+.yaml").read_text())["retries"]
    assert len(calls) == 1 + retries, study.tail()
    asked = {(re.search(r"--mem[ =](\d+)", c).group(1), re.search(r"-t (\d+)", c).group(1))
             for c in calls}  # fmt: skip
    assert asked == {("400000", "5")}, calls
    # slurmctld records each refused submission (no CPUs allocated): the same request each time
    refused = [(j["min_mem_per_node"], j["time_limit"], j["total_cpus"])
               for j in slurm_jobs(slurm_cluster, study)]  # fmt: skip
    assert refused == [("400000", "5", "0")] * (1 + retries), refused
    assert [j for j in queued_jobs(work) if j[1] in ("PENDING", "RUNNING")] == []
