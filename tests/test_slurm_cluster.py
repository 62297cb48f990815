"""The local Slurm test cluster (tests/slurm/up.sh) gives jobs fake GPUs and records them.

These tests need the Slurm and munge binaries and root; they fail (never skip) without them.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slurm


def test_gpu_job_runs_with_a_visible_device(slurm_cluster, tmp_path):
    job = slurm_cluster.sbatch(
        "--gpus=1", "--mem=100", "--wrap", "echo $CUDA_VISIBLE_DEVICES > out", cwd=tmp_path
    )
    fields = slurm_cluster.wait(job)
    assert fields["JobState"] == "COMPLETED", fields
    # The gres file list has two entries, so Slurm hands out device index 0 or 1.
    assert (tmp_path / "out").read_text().strip() in {"0", "1"}
    # The request stays visible after the job ended (MinJobAge=600 s; no slurmdbd here).
    assert fields["TresPerJob"] == "gres:gpu:1", fields
    record = slurm_cluster.jobcomp_record(job)
    assert record["state"] == "COMPLETED"
    assert record["gres_used"] == "gpu:1"
    assert record["min_mem_per_node"] == "100"


def test_two_gpus_and_a_cpu_only_job(slurm_cluster, tmp_path):
    both = slurm_cluster.sbatch(
        "--gres=gpu:2", "--wrap", "echo $CUDA_VISIBLE_DEVICES > two", cwd=tmp_path
    )
    none = slurm_cluster.sbatch("--wrap", "echo ${CUDA_VISIBLE_DEVICES-unset} > none", cwd=tmp_path)
    assert slurm_cluster.wait(both)["JobState"] == "COMPLETED"
    assert slurm_cluster.wait(none)["JobState"] == "COMPLETED"
    assert (tmp_path / "two").read_text().strip() == "0,1"
    assert (tmp_path / "none").read_text().strip() == "unset"
    assert slurm_cluster.jobcomp_record(both)["tres_per_node"] == "gres:gpu:2"
    assert slurm_cluster.jobcomp_record(none)["gres_used"] == "nil"


def test_job_over_its_memory_is_killed(slurm_cluster, tmp_path):
    # Without cgroups, slurmstepd samples RSS each second (JobAcctGatherParams=OverMemoryKill) and
    # kills a step over --mem: the stand-in for an out-of-memory kill on a real cluster.
    hog = "python3 -c 'import time; b = bytearray(400 << 20); time.sleep(5)'"
    job = slurm_cluster.sbatch("--mem=100", "-o", "hog.log", "--wrap", hog, cwd=tmp_path)
    fields = slurm_cluster.wait(job)
    assert fields["JobState"] == "FAILED", fields
    assert fields["ExitCode"] == "0:9", fields  # killed by SIGKILL
    assert "Exceeded job memory limit" in (tmp_path / "hog.log").read_text()


def test_status_source_without_accounting_is_detected(slurm_cluster):
    """snakemake-executor-plugin-slurm asks sacct for a status check whenever MinJobAge is below
    3 x its first status delay or cannot be read (slurmctld down); without accounting (this
    cluster: accounting_storage/none) that check never sees a job end. Detected before the first
    submission: one line saying what to set."""
    from tadsweep.errors import ConfigError
    from tadsweep.site import slurm

    assert slurm.min_job_age("MinJobAge               = 600 sec\n") == 600
    assert slurm.min_job_age("MinJobAge = 1h\n") == 3600 and slurm.min_job_age("") is None
    assert slurm.status_source_problem("sacct", 40, 600, accounting=True) is None
    assert slurm.status_source_problem("squeue", 40, None, accounting=False) is None  # outage
    # the live cluster: MinJobAge=600 (up.sh), sacct fails ("accounting storage is disabled")
    warnings = slurm.check_status_source("squeue", 1)  # the test profile's settings: fine
    assert len(warnings) == 1 and "no job accounting" in warnings[0], warnings
    below = r"^MinJobAge=600 s is below 3 x slurm-init-seconds-before-status-checks \(300 s\)"
    with pytest.raises(ConfigError, match=below + ".*at most 200 in your profile$"):
        slurm.check_status_source("squeue", 300)
    with pytest.raises(ConfigError, match="set slurm-status-command: squeue in your profile$"):
        slurm.check_status_source("sacct", 1)


def test_resources_scale_with_attempts_that_started(tmp_path):
    """An attempt counts towards attempt-scaled memory and time only if its job started (SLURM
    wrote its log); a submission sbatch refused has no log and does not escalate."""
    import os

    from tadsweep.site import slurm

    run = {"run": "p1/base/seed=1"}
    logs = tmp_path / "rule_train" / "p1_base_seed=1"  # the plugin's layout
    assert slurm.jobs_started(tmp_path, "train", run, since=0) == 0
    logs.mkdir(parents=True)
    (logs / "100.log").write_text("an earlier invocation's job")
    os.utime(logs / "100.log", (1000, 1000))
    (logs / "101.log").write_text("this invocation's job, killed for memory")
    started = slurm.jobs_started(tmp_path, "train", run, since=2000)
    assert started == 1
    assert [slurm.resource_attempt(a, 0) for a in (1, 2, 3)] == [1, 1, 1]  # sbatch refused
    assert [slurm.resource_attempt(a, started) for a in (1, 2, 3)] == [1, 2, 2]
    assert slurm.resource_attempt(3, 2) == 3
