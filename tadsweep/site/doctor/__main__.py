"""python -m tadsweep.site.doctor --out DIR [--opentad-root R] [--config C.py ...]
    [--reference REF.py] [--log LOG] [--annotation A.json --category-idx F --videos DIR]
    [--features DIR] [--checkpoint P.pth] [--gpus N] [--allow ID[:SUBJECT] ...]

Writes DIR/findings.json (and DIR/videos.tsv with --videos/--features), prints the findings as a
table. Exit 0: no error finding; 1: at least one; 2: an input it cannot use (one line)."""

import argparse
import os
from pathlib import Path

from tadsweep import cli
from tadsweep.errors import InputError
from tadsweep.site import doctor
from tadsweep.site.doctor import config as config_check
from tadsweep.site.doctor import data

OPTIONS = (  # flag, help; every option names a file, a folder or a value given once unless noted
    ("--opentad-root", "an OpenTAD checkout (default: $OPENTAD_ROOT)"),
    ("--config", "an OpenTAD config to compare with upstream's (repeatable)"),
    ("--reference", "upstream's config to compare with (default: the AdaTAD THUMOS config of the "
                    "same backbone)"),
    ("--gpus", "GPUs the configs train on (default: the log's world size)"),
    ("--log", "the baseline's training log (OpenTAD's log.json)"),
    ("--annotation", "OpenTAD's annotation JSON"),
    ("--category-idx", "category_idx.txt, one class per line"),
    ("--videos", "the folder of <video>.mp4 files"),
    ("--features", "a folder of <video>.npy features instead (the demo)"),
    ("--expect", "the data's known shape: thumos14 (default) or none"),
    ("--checkpoint", "the pretrained backbone checkpoint"),
    ("--checkpoint-sha256", "the checkpoint's recorded SHA-256"),
    ("--allow", "an accepted error, ID or ID:SUBJECT (shell patterns; repeatable)"),
    ("--jobs", "parallel video probes (default: the CPUs this process may use)"),
)  # fmt: skip


def _label(path: str) -> str:
    """A rendered run's id (runs/<phase>/<arm>/seed=<n>/config.py), else the file's name."""
    p = Path(path)
    if p.name == "config.py" and p.parent.name.startswith("seed="):
        return "/".join(p.parts[-4:-1])
    return p.name


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tadsweep.site.doctor", description=__doc__)
    ap.add_argument("--out", required=True, help="folder for findings.json (and videos.tsv)")
    kinds = {"--gpus": int, "--jobs": int}
    for flag, text in OPTIONS:
        repeat = flag in ("--config", "--allow")
        kw = dict(action="append", default=[]) if repeat else dict(type=kinds.get(flag, str))
        ap.add_argument(flag, help=text, **kw)
    ap.set_defaults(
        opentad_root=os.environ.get("OPENTAD_ROOT"),
        expect="thumos14",
        jobs=len(os.sched_getaffinity(0)),
    )
    return ap


def run(args) -> list[doctor.Finding]:
    root = args.opentad_root
    if (
        (args.config or args.log or args.checkpoint)
        and not args.reference
        and not (root and Path(root, "tools", "train.py").is_file())
    ):
        raise InputError(f"--opentad-root: {root!r} is not an OpenTAD checkout (no tools/train.py)")
    findings: list[doctor.Finding] = []
    configs = {_label(p): config_check.load(p, root) for p in args.config}
    scanned = None
    if args.log:
        from tadsweep.site.doctor import log

        scanned = log.scan(args.log)
        if not configs and scanned.config:
            configs = {f"{Path(args.log).name} (its config)": scanned.config}
    first = next(iter(configs.values()), {})
    if configs or args.log or args.checkpoint:
        ref_path = Path(args.reference or config_check.reference_path(first, root))
        ref = config_check.load(ref_path, root)
        if scanned:
            findings += log.check(scanned, ref)
        gpus = args.gpus or (scanned.world_size if scanned else None)
        findings += config_check.check(configs, ref, gpus)
        print(f"compared {len(configs)} config(s) with {ref_path}")
    if args.annotation:
        db, found = data.check_annotation(args.annotation, args.category_idx, args.expect)
        findings += found
        rows = None
        if args.videos:
            found, rows = data.check_videos(db, args.videos, args.jobs)
        elif args.features:
            found, rows = data.check_features(db, args.features)
        if rows is not None:
            findings += found
            data.write_table(rows, Path(args.out, "videos.tsv"))
    elif args.videos or args.features or args.category_idx:
        raise InputError("--videos, --features and --category-idx need --annotation")
    if args.checkpoint:
        from tadsweep.site.doctor import checkpoint

        findings += checkpoint.check(args.checkpoint, first or ref, root, args.checkpoint_sha256)
    return doctor.allow(findings, args.allow)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    inputs = [args.reference, args.log, args.annotation, args.category_idx, args.checkpoint]
    outputs = [Path(args.out, "findings.json"), Path(args.out, "videos.tsv")]
    cli.check_outputs([*args.config, *inputs], outputs, [args.out])
    findings = run(args)
    doctor.write(findings, Path(args.out, "findings.json"))
    print(doctor.table(findings))
    errors = sum(f.severity == "error" for f in findings)
    print(f"\n{errors} error(s), {sum(f.severity == 'warning' for f in findings)} warning(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    cli.run(main)
