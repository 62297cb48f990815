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
