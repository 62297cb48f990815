"""What the GPU jobs ask SLURM for, beyond the rule's resources: partition and account."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from tadsweep.errors import ConfigError

# What the schema allows for resources.slurm_partition / slurm_account: the values reach sbatch.
SAFE = re.compile(r"[A-Za-z0-9_.,-]{1,64}")


def slurm_site(cfg: dict) -> dict:
    """Partition and account of the GPU jobs: the config, else $TADSWEEP_PARTITION /
    $TADSWEEP_ACCOUNT, else nothing (the cluster's defaults)."""
    out = {}
    for key, env in (
        ("slurm_partition", "TADSWEEP_PARTITION"),
        ("slurm_account", "TADSWEEP_ACCOUNT"),
    ):
        value = cfg["resources"][key] or os.environ.get(env)
        if value and not SAFE.fullmatch(value):
            raise ConfigError(f"${env}: {value[:40]!r} may only use letters, digits and _ . , -")
        if value:
            out[key] = value
    return out


def check_site(site: dict) -> list[str]:
    """Before the first submission: the partition exists (sinfo) and, where accounting answers,
    the account is one of the user's (sacctmgr). An sbatch that can never succeed would fail
    every job, and each retry would ask twice the memory and time. Raises ConfigError naming the
    value; returns warnings when SLURM cannot be asked (planning on a laptop)."""
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
                f"{', '.join(known[:12]) or 'none'}); set it in the config or "
                f"${'TADSWEEP_PARTITION' if key == 'slurm_partition' else 'TADSWEEP_ACCOUNT'}"
            )
    return warnings
