"""What the GPU jobs ask SLURM for, beyond the rule's resources: partition and account."""

from __future__ import annotations

import os


def slurm_site(cfg: dict) -> dict:
    """Partition and account of the GPU jobs: the config, else $TADSWEEP_PARTITION /
    $TADSWEEP_ACCOUNT, else nothing (the cluster's defaults)."""
    out = {}
    for key, env in (
        ("slurm_partition", "TADSWEEP_PARTITION"),
        ("slurm_account", "TADSWEEP_ACCOUNT"),
    ):
        value = cfg["resources"][key] or os.environ.get(env)
        if value:
            out[key] = value
    return out
