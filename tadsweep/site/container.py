"""The OpenTAD image's Python stack, locked with uv and checked by locking it again
(containers/README.md, `make container-lock` / `make container-check`).

python -m tadsweep.site.container lock  [--containers DIR] [--upgrade]
python -m tadsweep.site.container check [--containers DIR] [--opentad-root R]

PyPI's builds stand in for the image's own indexes (not reachable here) and are left out of the
lock: torch and torchvision minus the CUDA wheels their +cuXXX builds bundle, mmcv-lite for mmcv.
"""

import argparse
import difflib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from uv import find_uv_bin

from tadsweep import cli
from tadsweep.backends.opentad.fingerprint import BUILD_RECORD_ENV, extension_dirs
from tadsweep.errors import InputError

CONTAINERS = Path(__file__).resolve().parents[2] / "containers"
DEF, IN, OVERRIDES, LOCK = "opentad.def", "opentad.in", "opentad.overrides.txt", "opentad.lock.txt"
# the base image's CPython and glibc; RULES hold the .def to that base
TARGET = ["--python-version", "3.10", "--python-platform", "x86_64-manylinux_2_35"]
ENTRY = re.compile(r"^(\w[\w.-]*)==(\S+)", re.M)  # a lock entry's first line
PIP_INDEX = r"\bPIP_(EXTRA_INDEX_URL|INDEX_URL|FIND_LINKS)="
# what containers/README.md relies on: (section, pattern, must match, why); %post is read with its
# continuation lines joined
RULES = [
    ("header", r"^From: \S+-ubuntu22\.04$", True, "the lock targets Ubuntu 22.04's CPython 3.10"),
    ("arguments", r"^\s*OPENTAD_COMMIT=[0-9a-f]{40}$", True, "OPENTAD_COMMIT must be 40-hex"),
    ("labels", r"^\s*opentad\.commit \{\{ OPENTAD_COMMIT \}\}$", True,
     "opentad.commit must be the template {{ OPENTAD_COMMIT }}"),
    ("files", rf"^\s*containers/{LOCK} ", True, f"does not copy containers/{LOCK} in"),
    ("environment", r"\bOPENTAD_ROOT=", False, "sets OPENTAD_ROOT: jobs run the bound checkout"),
    ("environment", rf"\b{BUILD_RECORD_ENV}=", True, f"no {BUILD_RECORD_ENV} (job-start check)"),
    ("environment", PIP_INDEX, False, "sets a pip index for every pip call: pass it to one call"),
    ("post", PIP_INDEX, False, "sets a pip index for every pip call: pass it to one call"),
    ("post", r"\b(mim|openmim)\b", False, "uses mim (it pulls openxlab's old pins into the image)"),
    ("post", r"pip install --no-deps .*-r \"?\$LOCK\"?$", True, "lock installed without --no-deps"),
    ("test", r"\bpip check\b", True, "does not run pip check"),
]  # fmt: skip


def def_pins(path: Path) -> dict[str, str]:
    """The .def's torch, torchvision (and their CUDA) and mmcv pins, once RULES hold."""
    try:
        parts = re.split(r"^%(\w+)[ \t]*$", path.read_text(), flags=re.M)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    sections = {"header": parts[0], **dict(zip(parts[1::2], parts[2::2]))}
    sections["post"] = post = re.sub(r"\s*\\\n\s*", " ", sections.get("post", ""))
    for section, pattern, wanted, why in RULES:
        if bool(re.search(pattern, sections.get(section, ""), re.M)) != wanted:
            raise InputError(f"{path}: %{section}: {why}")
    torch = re.search(
        r"pip install --no-deps --only-binary :all: --index-url https://download\.pytorch\.org/"
        r"whl/(cu\d+) torch==([\w.]+)\+\1 torchvision==([\w.]+)\+\1$", post, re.M
    )  # fmt: skip
    if not torch:
        raise InputError(
            f"{path}: %post: torch and torchvision must be `pip install --no-deps --only-binary "
            ":all: --index-url https://download.pytorch.org/whl/cuXXX torch==X+cuXXX "
            "torchvision==Y+cuXXX`"
        )
    cuda, version, vision = torch.groups()
    minor = ".".join(version.split(".")[:2])
    index = f"https://download.openmmlab.com/mmcv/dist/{cuda}/torch{minor}/index.html"
    mmcv = re.search(
        rf"--no-index --only-binary :all: --find-links {index} mmcv==(\S+)$", post, re.M
    )
    if not mmcv:  # binary-only: a missing wheel must fail the build, not compile mmcv without ops
        raise InputError(
            f"{path}: %post: mmcv must be binary-only (`pip install --no-deps --no-index "
            f"--only-binary :all: --find-links {index}` for torch {version}, {cuda})"
        )
    return {"torch": version, "torchvision": vision, "cuda": cuda, "mmcv": mmcv.group(1)}


def relock(containers: Path, upgrade: bool = False) -> str:
    """uv's lock of the stack, as text; one line on a conflict."""
    pins = def_pins(containers / DEF)
    # PyPI's stand-ins for the image's own-index builds (module docstring)
    stand_ins = "torch=={torch}\ntorchvision=={torchvision}\nmmcv-lite=={mmcv}\n".format(**pins)
    lock = containers / LOCK
    with tempfile.TemporaryDirectory(prefix="tadsweep-lock-") as tmp:
        out = Path(tmp, LOCK)
        if lock.is_file() and not upgrade:
            # versions only: uv would keep the locked hashes too, and those are to be checked
            out.write_text("".join(f"{n}=={v}\n" for n, v in ENTRY.findall(lock.read_text())))
        cmd = [find_uv_bin(), "pip", "compile", "--quiet", "--no-config"]
        cmd += ["--python", sys.executable]  # builds the sdists, for their metadata
        cmd += [f"{containers.name}/{IN}", "-", "--override", f"{containers.name}/{OVERRIDES}"]
        cmd += [*TARGET, "--generate-hashes", "--emit-build-options", "-o", str(out)]
        cmd += ["--custom-compile-command", "make container-lock (tadsweep/site/container.py)"]
        for name in ("torch", "torchvision", "mmcv-lite"):
            cmd += ["--no-emit-package", name]
        # relative paths: uv writes them into the lock (`# via -r containers/opentad.in`)
        res = subprocess.run(cmd, input=stand_ins, cwd=containers.parent, capture_output=True,
                             text=True, check=False)  # fmt: skip
        if res.returncode:
            said = re.sub(r"[×╰─▶│]|^\s*error:", " ", res.stderr)  # uv's own layout
            raise InputError(f"{containers / IN}: uv cannot lock the stack: {said}")
        text = out.read_text()
    if m := re.search(r"^(nvidia-\S+-cu\d+)==", text, re.M):
        raise InputError(
            f"{containers / OVERRIDES}: torch {pins['torch']} from PyPI pulls in {m.group(1)}, "
            f"which its +{pins['cuda']} build bundles: drop it here"
        )
    # pip applies a file's options in order, and `--only-binary :all:` cancels the --no-binary
    # names given before it: uv writes it after them, so it goes first
    if "\n--only-binary :all:\n" in text:
        text = text.replace("\n--only-binary :all:\n", "\n")
        text = re.sub(r"^(?!#)", "--only-binary :all:\n", text, count=1, flags=re.M)
    return text


def check_upstream(opentad_root: Path, containers: Path) -> int:
    """OpenTAD's requirements.txt: its local packages (the compiled extensions) built by the .def,
    the others satisfied by the lock; returns how many of those."""
    path, exts = opentad_root / "requirements.txt", extension_dirs(opentad_root)
    post = (containers / DEF).read_text()
    for ext in exts:
        if ext not in post:
            raise InputError(f"{containers / DEF}: %post: does not build {ext} (from {path})")
    lock = containers / LOCK
    locked = {canonicalize_name(n): v for n, v in ENTRY.findall(lock.read_text())}
    lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    wanted = [ln for ln in lines if ln and ln not in exts]
    for line in wanted:
        try:
            req = Requirement(line)
        except InvalidRequirement as e:
            raise InputError(f"{path}: {line!r}: {e}") from None
        have = locked.get(canonicalize_name(req.name))
        if have is None:
            raise InputError(f"{path}: {req} is not in {lock}")
        if not req.specifier.contains(have, prereleases=True):
            raise InputError(f"{path}: {req}, but {lock} has {req.name}=={have}")
    return len(wanted)


def check(containers: Path, opentad_root: Path) -> str:
    """The whole check; returns the summary line, raises InputError with one line."""
    start = time.monotonic()
    lock = containers / LOCK
    if not lock.is_file():
        raise InputError(f"{lock}: missing: run `make container-lock`")
    covered = check_upstream(opentad_root, containers)
    text, fresh = lock.read_text(), relock(containers)
    if text != fresh:
        diff = difflib.unified_diff(text.splitlines(), fresh.splitlines(), lineterm="", n=0)
        first = next(ln for ln in diff if ln[:1] in "+-" and ln[:3] not in ("+++", "---"))
        first = first.rstrip(" \\")
        raise InputError(
            f"{lock}: differs from uv's lock of {IN}, {OVERRIDES} and {DEF}'s pins (first: "
            f"{first!r}): run `make container-lock`"
        )
    pins = def_pins(containers / DEF)
    return (
        f"container-check: {LOCK} is uv's lock for CPython 3.10 / manylinux_2_35 x86_64 "
        f"({len(ENTRY.findall(text))} packages, hashed), covering OpenTAD's {covered} "
        f"requirements; torch {pins['torch']} as PyPI's build, mmcv {pins['mmcv']} as mmcv-lite "
        f"({time.monotonic() - start:.0f} s)"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tadsweep.site.container")
    sub = parser.add_subparsers(dest="command", required=True)
    check_p, lock_p = sub.add_parser("check"), sub.add_parser("lock")
    for p in (check_p, lock_p):
        p.add_argument("--containers", type=Path, default=CONTAINERS)
    root = os.environ.get("OPENTAD_ROOT")
    check_p.add_argument("--opentad-root", type=Path, default=root and Path(root))
    lock_p.add_argument("--upgrade", action="store_true", help="today's versions, not the locked")
    args = parser.parse_args(argv)
    if args.command == "lock":
        (args.containers / LOCK).write_text(relock(args.containers, args.upgrade))
        print(f"wrote {args.containers / LOCK}")
    elif args.opentad_root is None:
        raise InputError("no OpenTAD checkout: pass --opentad-root or set $OPENTAD_ROOT")
    else:
        print(check(args.containers, args.opentad_root))
    return 0


if __name__ == "__main__":
    cli.run(main)
