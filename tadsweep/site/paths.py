"""Site paths of a real study (config.paths): relative ones live inside the OpenTAD checkout; all
must exist before the first GPU job."""

import shutil
from pathlib import Path

from tadsweep.atomic import atomic_path, write_json
from tadsweep.errors import ConfigError

SITE_KEYS = ("base_config", "annotation", "class_map", "video_dir", "pretrained")  # all must exist


def site_path(cfg: dict, key: str, section: dict | None = None) -> str:
    """A site path from config.paths (or the given section, e.g. doctor); relative ones live
    inside the OpenTAD checkout."""
    value = (cfg["paths"] if section is None else section)[key]
    return value if Path(value).is_absolute() else str(Path(cfg["paths"]["opentad_root"], value))


def doctor_files(cfg: dict) -> dict:
    """The doctor's site files (config keys doctor.*) that are set."""
    keys = ("reference", "baseline_config", "baseline_log")
    return {f"doctor.{k}": site_path(cfg, k, cfg["doctor"]) for k in keys if cfg["doctor"][k]}


def check_site_paths(cfg: dict, out: str, annotations: str) -> None:
    """Before any GPU job: every site path of a real study exists (one line naming the key).
    Writes the checked paths (`out`) and a copy of the annotation file (`annotations`): the
    ground truth every evaluation of the study reads, a rule's output like the demo's."""
    root = cfg["paths"]["opentad_root"]
    if not root or not Path(root, "tools", "train.py").is_file():
        raise ConfigError(
            f"paths.opentad_root: {root!r} is not an OpenTAD checkout (no tools/train.py)"
        )
    for key in SITE_KEYS:
        if not Path(path := site_path(cfg, key)).exists():
            raise ConfigError(f"paths.{key}: {path} does not exist")
    for key, path in doctor_files(cfg).items():
        if not Path(path).is_file():
            raise ConfigError(f"{key}: {path} does not exist")
    image = cfg["container"]["image"]
    if "://" not in image and not Path(image).is_file():
        raise ConfigError(
            f"container.image: {image} does not exist (build it with `make container`)"
        )
    with atomic_path(annotations) as tmp:
        shutil.copyfile(site_path(cfg, "annotation"), tmp)
    write_json({k: site_path(cfg, k) for k in cfg["paths"] if k != "opentad_root"}, out)
