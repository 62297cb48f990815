"""The local Slurm test cluster (tests/slurm/up.sh): the `slurm_cluster` fixture (registered in
conftest.py) and helpers to drive it.

The fixture reuses a cluster that already answers (CI or a developer may have one running) and
otherwise starts one with up.sh for the session and stops it at the end. It never skips: missing
Slurm binaries are an error, because CI installs them.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "slurm"
UP = HERE / "up.sh"
DOWN = HERE / "down.sh"
DEFAULT_STATE_DIR = Path(os.environ.get("TADSWEEP_SLURM_STATE", "/tmp/tadsweep-slurm"))
REQUIRED = ("munged", "slurmctld", "slurmd", "sinfo", "squeue", "scontrol", "sbatch", "srun")
# Base states after which a job never changes again.
FINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}


@dataclass(frozen=True)
class SlurmCluster:
    """A running test cluster: where its files are and small helpers to drive it."""

    state_dir: Path
    started_here: bool

    @property
    def jobcomp(self) -> Path:
        """Job completion log written by up.sh's jobcomp.lua (one line per finished job)."""
        return self.state_dir / "jobcomp.txt"

    def sbatch(self, *args: str, cwd: Path) -> str:
        """Submit a batch job; return its id."""
        out = _run(["sbatch", "--parsable", *args], cwd=cwd)
        return out.strip().split(";")[0]

    def job_fields(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (finished jobs stay visible for MinJobAge=600 s)."""
        text = _run(["scontrol", "show", "job", "--oneliner", job_id])
        return dict(re.findall(r"(\w+(?:/\w+)?)=(\S*)", text))

    def wait(self, job_id: str, timeout: float = 60.0) -> dict[str, str]:
        """Block until the job reached a final state; return its `scontrol show job` fields."""
        deadline = time.monotonic() + timeout
        while True:
            fields = self.job_fields(job_id)
            if fields.get("JobState") in FINAL_STATES:
                return fields
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not finished after {timeout}s: {fields}")
            time.sleep(0.2)

    def jobcomp_record(self, job_id: str, timeout: float = 10.0) -> dict[str, str]:
        """The job's completion record (written by slurmctld shortly after the job ends)."""
        deadline = time.monotonic() + timeout
        while True:
            for record in read_jobcomp(self.jobcomp):
                if record.get("job_id") == job_id:
                    return record
            if time.monotonic() > deadline:
                raise AssertionError(f"no record of job {job_id} in {self.jobcomp}")
            time.sleep(0.2)


def read_jobcomp(path: Path) -> list[dict[str, str]]:
    """Parse jobcomp.txt: tab-separated key=value fields, one finished job per line."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            records.append(dict(field.split("=", 1) for field in line.split("\t")))
    return records


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 30.0) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _controller_listens() -> bool:
    """Cheap pre-check: Slurm clients retry about 10 s against a controller that is not there."""
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
    if not conf.exists():
        return False
    text = conf.read_text()
    host = re.search(r"^\s*SlurmctldHost\s*=\s*([^\s(]+)", text, re.MULTILINE | re.IGNORECASE)
    port = re.search(r"^\s*SlurmctldPort\s*=\s*(\d+)", text, re.MULTILINE | re.IGNORECASE)
    try:
        with socket.create_connection(
            (host.group(1) if host else "localhost", int(port.group(1)) if port else 6817),
            timeout=2,
        ):
            return True
    except OSError:
        return False


def _cluster_answers() -> bool:
    if not _controller_listens():
        return False
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = proc.stdout.split()
    return proc.returncode == 0 and any(s.rstrip("*~#") in ("idle", "mixed") for s in states)


def _running_state_dir() -> Path:
    """State dir of a running cluster, from the config it reports (up.sh links /etc/slurm)."""
    text = _run(["scontrol", "show", "config"])
    match = re.search(r"^SLURM_CONF\s*=\s*(\S+)", text, re.MULTILINE)
    conf = Path(match.group(1)) if match else Path("/etc/slurm/slurm.conf")
    return conf.resolve().parent


@pytest.fixture(scope="session")
def slurm_cluster():
    """A usable single-node Slurm cluster with node `localhost`, 2 fake GPUs, partitions
    debug (default) and gpu. Reused if one answers, else started here and stopped afterwards."""
    missing = [b for b in REQUIRED if shutil.which(b) is None]
    if missing:
        pytest.fail(
            f"Slurm binaries missing: {', '.join(missing)}; install them with "
            "`apt-get install -y --no-install-recommends slurm-wlm munge` (CI does this)",
            pytrace=False,
        )
    if _cluster_answers():
        yield SlurmCluster(state_dir=_running_state_dir(), started_here=False)
        return
    proc = subprocess.run(
        [str(UP), str(DEFAULT_STATE_DIR)], capture_output=True, text=True, timeout=180
    )
    if proc.returncode != 0:
        pytest.fail(
            f"tests/slurm/up.sh failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}",
            pytrace=False,
        )
    try:
        yield SlurmCluster(state_dir=DEFAULT_STATE_DIR.resolve(), started_here=True)
    finally:
        subprocess.run([str(DOWN), str(DEFAULT_STATE_DIR)], capture_output=True, timeout=60)
