"""What the plan (`snakemake -n`) says of the doctor, at no cost: the launch against the recipe,
the annotation, class map and which videos exist (none is opened), and the findings of the last
doctor run. Severe data faults stop the plan unless doctor.allow accepts them."""

import re
from pathlib import Path

from tadsweep.site import doctor
from tadsweep.site.doctor import config, data
from tadsweep.site.paths import site_path


def findings(study: dict, results: str) -> list[doctor.Finding]:
    out = []
    if study["study"]["backend"] == "opentad":
        recipe = {"solver": {"train": {"batch_size": 2}}}  # upstream's global batch
        ours = {"solver": {"train": {"batch_size": study["model"]["batch_size"]}}}
        out += config.diff("resources.train", ours, recipe, study["resources"]["train"]["gpus"])
        annotation, class_map, videos = (
            Path(site_path(study, k)) for k in ("annotation", "class_map", "video_dir")
        )
        if annotation.is_file():
            cm = class_map if class_map.is_file() else None
            db, found = data.check_annotation(annotation, cm, study["doctor"]["expect"])
            out += found + (data.listing(db, videos) if videos.is_dir() else [])
    last = Path(results, "doctor", "findings.json")
    if last.is_file():
        seen = {(f.id, f.subject) for f in out}
        out += [f for f in doctor.read(last) if (f.id, f.subject) not in seen]
    return doctor.allow(out, study["doctor"]["allow"])


def stop_line(found: list[doctor.Finding]) -> str | None:
    """The one line that stops the plan: the first data error (a severe fault) not accepted."""
    for f in found:
        if f.severity == "error" and f.group == "data":
            tail = re.sub(r"[^A-Za-z0-9_.=+-]", "", re.split(r"/|: ", f.subject)[-1])
            return (
                f"doctor: {f.subject}: {f.found} ({f.why}); accept it with doctor.allow: "
                f"['{f.id}:*{tail}'] if it is meant"
            )
    return None
