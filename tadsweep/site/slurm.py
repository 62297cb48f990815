"""What the GPU jobs ask SLURM for, beyond the rule's resources: partition and account."""

import os
import re
import shutil
import subprocess
from pathlib import Path

from tadsweep.errors import ConfigError

# What the schema allows for resources.slurm_partition / slurm_account: the values reach sbatch.
SAFE = re.compile(r"[A-Za-z0-9_.,-]{1,64}")
ENV = {"slurm_partition": "TADSWEEP_PARTITION", "slurm_account": "TADSWEEP_ACCOUNT"}


def slurm_site(cfg: dict) -> dict:
    """Partition and account of the GPU jobs: the config, else $TADSWEEP_PARTITION /
    $TADSWEEP_ACCOUNT, else nothing (the cluster's defaults)."""
    out = {}
    for key, env in ENV.items():
        value = cfg["resources"][key] or os.environ.get(env)
        if value and not SAFE.fullmatch(value):
            raise ConfigError(f"${env}: {value[:40]!r} may only use letters, digits and _ . , -")
        if value:
            out[key] = value
    return out


def check_site(site: dict) -> list[str]:
    """Before the first submission (an sbatch that can never succeed fails every job): the
    partition exists (sinfo), the account is the user's (sacctmgr). Raises ConfigError; returns
    warnings when SLURM cannot be asked (planning on a laptop)."""
    warnings = []
    checks = [
        ("slurm_partition", ["sinfo", "-h", "-o", "%P"], lambda line: line.rstrip("*")),
        ("slurm_account", ["sacctmgr", "-n", "-P", "show", "associations",
                           f"user={os.environ.get('USER', '')}", "format=account"], str.strip),
    ]  # fmt: skip
    for key, cmd, clean in checks:
        value = site.get(key)
        if not value:
            continue
        if shutil.which(cmd[0]) is None:
            warnings.append(f"resources.{key}: {cmd[0]} not found; {value!r} is not checked")
            continue
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except subprocess.TimeoutExpired:
            res = None
        if res is None or res.returncode != 0:
            why = "timed out" if res is None else (res.stderr.strip().splitlines() or ["failed"])[0]
            warnings.append(f"resources.{key}: {cmd[0]} {why[:120]}; {value!r} is not checked")
            continue
        known = sorted({clean(line) for line in res.stdout.split() if clean(line)})
        if value not in known:
            raise ConfigError(
                f"resources.{key}: {value!r} is not known to SLURM ({cmd[0]} lists "
                f"{', '.join(known[:12]) or 'none'}); set it in the config or ${ENV[key]}"
            )
    return warnings


def min_job_age(config_text: str) -> int | None:
    """MinJobAge in seconds from `scontrol show config` (None when it does not say)."""
    m = re.search(r"^MinJobAge\s*=\s*(\d+)\s*(h|hours?)?", config_text, re.MULTILINE | re.I)
    return None if m is None else int(m.group(1)) * (3600 if m.group(2) else 1)


def status_source_problem(
    status_command: str | None, init_seconds: int, age: int | None, accounting: bool
) -> str | None:
    """What would make snakemake-executor-plugin-slurm (2.8) ask sacct, which answers nothing
    without accounting, at every status check: wait forever (docs/cluster.md)."""
    if accounting:
        return None
    fix = "set slurm-status-command: squeue in your profile"
    if status_command == "sacct":
        return f"slurm-status-command is sacct but SLURM has no job accounting here: {fix}"
    if age is not None and age < 3 * init_seconds:
        return (
            f"MinJobAge={age} s is below 3 x slurm-init-seconds-before-status-checks "
            f"({init_seconds} s), so the SLURM plugin would ask sacct, and SLURM has no job "
            f"accounting here: set slurm-init-seconds-before-status-checks to at most "
            f"{age // 3} in your profile"
        )
    return None


def check_status_source(status_command: str | None, init_seconds: int) -> list[str]:
    """Before the first submission: ConfigError when the plugin's status checks could never see
    a job end; the warning about slurmctld outages when accounting is absent."""
    if shutil.which("sacct") is None:
        return []  # the plugin then always uses squeue
    probe = ["sacct", "-n", "-X", "-j", "1", "--format=JobIdRaw"]
    try:
        acct = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
        conf = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ["sacct / scontrol did not answer: the status source is not checked"]
    accounting = acct.returncode == 0
    problem = status_source_problem(
        status_command, init_seconds, min_job_age(conf.stdout), accounting
    )
    if problem:
        raise ConfigError(problem)
    if accounting:
        return []
    return [
        "SLURM has no job accounting (sacct: "
        f"{(acct.stderr.strip().splitlines() or ['fails'])[0][:80]}): during a slurmctld "
        "outage job states are unknown; jobs that end then are seen once it answers, within "
        "MinJobAge"
    ]


def jobs_started(logdir, rule: str, wildcards: dict, since: float) -> int:
    """SLURM jobs of a rule's job started since `since`: their logs, which SLURM creates when a
    job starts, <logdir>/rule_<rule>/<wildcard values joined by _, / as _>/<jobid>.log."""
    folder = Path(logdir, f"rule_{rule}", "_".join(map(str, wildcards.values())).replace("/", "_"))
    try:
        return sum(1 for p in folder.glob("*.log") if p.stat().st_mtime >= since)
    except OSError:
        return 0


def resource_attempt(attempt: int, started: int) -> int:
    """The attempt memory and wall time scale with: only attempts that ran count (asking twice
    as much cures no sbatch refusal)."""
    return max(1, min(attempt, started + 1))
