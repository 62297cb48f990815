"""What the GPU jobs ask SLURM for, beyond the rule's resources: partition and account."""

from __future__ import annotations

import os
import re

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
