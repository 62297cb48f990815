"""The container side of the GPU jobs: what Apptainer binds, the environment jobs inherit."""

import os
from pathlib import Path

from tadsweep.site.paths import SITE_KEYS, doctor_files, site_path

JOB_ENV_FILE = "containers/job.env"


def container_binds(cfg: dict, existing: str | None = None) -> str:
    """APPTAINER_BIND for the GPU jobs: the OpenTAD checkout, base config, data and weights
    read-only (the working directory, which holds the results, is bound writable by Snakemake)."""
    paths = [cfg["paths"]["opentad_root"]] + [site_path(cfg, k) for k in SITE_KEYS]
    paths += doctor_files(cfg).values()  # the doctor reads the user's baseline config and log
    dirs = []
    for p in map(Path, paths):
        # a folder: one that is, or a path without a suffix that is not there yet
        d = str(p if p.is_dir() or not (p.exists() or p.suffix) else p.parent)
        if d and d not in dirs and not any(d.startswith(x.rstrip("/") + "/") for x in dirs):
            dirs.append(d)
    binds = [f"{d}:{d}:ro" for d in dirs]
    existing = os.environ.get("APPTAINER_BIND") if existing is None else existing
    if existing:
        binds = [b for b in existing.split(",") if b] + [b for b in binds if b not in existing]
    return ",".join(binds)


def job_environment(cfg: dict, basedir: str) -> dict[str, str]:
    """What every job inherits: PYTHONPATH led by this checkout (the image has no tadsweep), and
    for the opentad backend APPTAINER_BIND and APPTAINER_ENV_FILE (containers/job.env: under
    --cleanenv, all the container takes from the host)."""
    path = os.environ.get("PYTHONPATH")
    env = {"PYTHONPATH": os.pathsep.join(p for p in (basedir, path) if p)}
    if cfg["study"]["backend"] == "opentad":
        env["APPTAINER_BIND"] = container_binds(cfg)
        env["APPTAINER_ENV_FILE"] = str(Path(basedir, JOB_ENV_FILE))
    return env
