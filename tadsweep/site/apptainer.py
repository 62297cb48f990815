"""The container side of the GPU jobs: what Apptainer binds, the environment jobs inherit."""

from __future__ import annotations

import os
from pathlib import Path

from tadsweep.site.paths import doctor_files, site_path

JOB_ENV_FILE = "containers/job.env"


def container_binds(cfg: dict, existing: str | None = None) -> str:
    """APPTAINER_BIND for the GPU jobs: the OpenTAD checkout, base config, data and weights
    read-only (the working directory, which holds the results, is bound writable by Snakemake)."""
    keys = ("base_config", "annotation", "class_map", "video_dir", "pretrained")
    paths = [cfg["paths"]["opentad_root"]] + [site_path(cfg, k) for k in keys]
    paths += doctor_files(cfg).values()  # the doctor reads the user's baseline config and log
    dirs = []
    for p in paths:
        d = str(Path(p) if _looks_like_dir(p) else Path(p).parent)
        if d and d not in dirs and not any(d.startswith(x.rstrip("/") + "/") for x in dirs):
            dirs.append(d)
    binds = [f"{d}:{d}:ro" for d in dirs]
    existing = os.environ.get("APPTAINER_BIND") if existing is None else existing
    if existing:
        binds = [b for b in existing.split(",") if b] + [b for b in binds if b not in existing]
    return ",".join(binds)


def job_environment(cfg: dict, basedir: str) -> dict[str, str]:
    """What every job inherits: PYTHONPATH led by this checkout's package (the image has no
    tadsweep of its own), and for the opentad backend's GPU jobs APPTAINER_BIND and
    APPTAINER_ENV_FILE -- containers/job.env, which Apptainer evaluates at each exec on the host:
    under --cleanenv it is all the container takes from the host (PYTHONPATH, CUDA_VISIBLE_DEVICES,
    SLURM_*, NCCL_*, thread counts) plus per-job caches in $TMPDIR."""
    path = os.environ.get("PYTHONPATH")
    env = {"PYTHONPATH": os.pathsep.join(p for p in (basedir, path) if p)}
    if cfg["study"]["backend"] == "opentad":
        env["APPTAINER_BIND"] = container_binds(cfg)
        env["APPTAINER_ENV_FILE"] = str(Path(basedir, JOB_ENV_FILE))
    return env


def _looks_like_dir(path: str) -> bool:
    """Treat a path as a folder when it is one, or when it has no file suffix (not there yet)."""
    p = Path(path)
    return p.is_dir() or (not p.exists() and not p.suffix)
