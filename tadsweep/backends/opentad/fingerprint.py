"""OpenTAD's build record: which extension sources the image compiled, checked at job start. Run at
build time by containers/opentad.def and imported by every job inside the image (Python 3.10), so
it is stdlib-only and apart from the lock tooling (tadsweep.site.container)."""

import argparse
import hashlib
import json
import os
from pathlib import Path

from tadsweep import cli
from tadsweep.errors import InputError

# set in the image's %environment to the record written at build time
BUILD_RECORD_ENV = "TADSWEEP_OPENTAD_BUILD"
EXT_SUFFIXES = {".py", ".c", ".cc", ".cpp", ".cu", ".cuh", ".h", ".hpp"}


def extension_dirs(root: Path) -> list[str]:
    """OpenTAD's compiled extensions: the local packages of its requirements.txt."""
    path = Path(root) / "requirements.txt"
    try:
        lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}): not an OpenTAD checkout") from None
    return [ln for ln in lines if "/" in ln and (Path(root) / ln).is_dir()]


def fingerprint(root: Path) -> str:
    """sha256 over the source files of OpenTAD's compiled extensions (build outputs excluded):
    equal fingerprints mean the checkout's Python code calls the extensions it was built with."""
    root = Path(root)
    h = hashlib.sha256()
    for rel in extension_dirs(root):
        for p in sorted((root / rel).rglob("*")):
            skip = {"build", "__pycache__"} & set(p.parts) or any(
                part.endswith(".egg-info") for part in p.parts
            )
            if p.is_file() and p.suffix in EXT_SUFFIXES and not skip:
                h.update(p.relative_to(root).as_posix().encode() + b"\0")
                h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def check_opentad_build(root, record: str | None = None) -> None:
    """Inside the image, the bound OpenTAD checkout must be the code its extensions were compiled
    from; outside it (no build record) there is nothing to compare with."""
    record = os.environ.get(BUILD_RECORD_ENV) if record is None else record
    if not record:
        return
    try:
        built = json.loads(Path(record).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{record}: cannot read the image's OpenTAD build record ({e})") from None
    if fingerprint(Path(root)) != built["fingerprint"]:
        raise InputError(
            f"{root}: OpenTAD's extension sources differ from those compiled into the image "
            f"(commit {built['commit']}, {record}): check out that commit, or rebuild the image "
            "with --build-arg OPENTAD_COMMIT=<the checkout's commit>"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tadsweep.backends.opentad.fingerprint",
        description="the image's build record, JSON",
    )
    parser.add_argument("root", type=Path)
    parser.add_argument("--commit", required=True)
    args = parser.parse_args(argv)
    record = {"commit": args.commit, "fingerprint": fingerprint(args.root)}
    record["extensions"] = extension_dirs(args.root)
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    cli.run(main)
