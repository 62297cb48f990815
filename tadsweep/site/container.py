"""The OpenTAD image's Python stack, checked without building the image (`make container-check`).

python -m tadsweep.site.container check [--containers DIR] [--opentad-root R] [--index-url URL]
python -m tadsweep.site.container lock  [--containers DIR] [--index-url URL]
python -m tadsweep.site.container fingerprint OPENTAD_ROOT [--commit SHA]   (run by the image build)

Three files, in containers/: `opentad.def` (the image; its %post installs torch, torchvision and
mmcv from their own indexes, then the lock), `opentad.in` (the top-level pins of everything else)
and `opentad.lock.txt` (the full closure, one `name==version --hash=sha256:...` a line, written by
`lock`). `check` parses the .def, resolves the whole stack with pip against the package index for
the image's Python and platform (CPython 3.10, manylinux up to the base image's glibc), and fails
with one line on a conflict, a lock that is out of date or incomplete, a hash that is not the
index's, or a requirement the resolved metadata leaves broken (pip check over the resolution).

What the resolution stands in for, because the real indexes are not reachable from CI:
- torch / torchvision: PyPI's builds of the same versions. The image's +cuXXX builds declare the
  same requirements except the nvidia-*-cu11 wheels (those builds bundle the CUDA libraries), so
  those are dropped from torch's requirements.
- mmcv: OpenMMLab's binary wheel, resolved through mmcv-lite of the same version on PyPI (the same
  setup.py and runtime requirements, without the compiled ops).
- sdist-only packages (`--no-binary` in opentad.in): built here into pure-Python wheels for their
  metadata; the lock records the hash of the sdist the image builds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tadsweep import cli
from tadsweep.errors import InputError, StepFailed

REPO = Path(__file__).resolve().parents[2]
CONTAINERS = REPO / "containers"
DEF_NAME, IN_NAME, LOCK_NAME = "opentad.def", "opentad.in", "opentad.lock.txt"
INDEX_URL = "https://pypi.org/simple"
WHEELHOUSE = REPO / "build" / "container-wheels"
# installed by the .def's own commands from their own indexes, not from the lock
OWN_INDEX = ("torch", "torchvision", "mmcv")
SUBSTITUTE = {"mmcv": "mmcv-lite"}  # resolved as (same version, same runtime requirements)
PYPI_TORCH_ONLY = re.compile(r"^nvidia-.*-cu\d+$")  # bundled into the +cuXXX wheels
# OpenTAD's build record in the image; the job-start check compares the bound checkout with it
BUILD_RECORD_ENV = "TADSWEEP_OPENTAD_BUILD"
EXT_SUFFIXES = {".py", ".c", ".cc", ".cpp", ".cu", ".cuh", ".h", ".hpp"}


@dataclass(frozen=True)
class Base:
    """What a base image fixes for the resolution: Python and the glibc of manylinux wheels."""

    label: str
    python: str
    python_full: str
    glibc: tuple[int, int]


# keyed by the suffix of the .def's `From:` image
BASES = {"ubuntu22.04": Base("Ubuntu 22.04", "3.10", "3.10.12", (2, 35))}


class ContainerError(InputError):
    """A container file that is wrong, stale or inconsistent; one line naming the file."""


# --- the definition file ------------------------------------------------------------------------


@dataclass
class Definition:
    path: Path
    header: dict[str, str]
    sections: dict[str, list[str]]
    base: Base = field(init=False)
    torch: str = ""
    torchvision: str = ""
    cuda: str = ""
    mmcv: str = ""
    mmcv_index: str = ""
    lock_dest: str = ""
    commit: str = ""

    def fail(self, section: str, message: str) -> ContainerError:
        return ContainerError(f"{self.path}: {section}: {message}")

    def commands(self, section: str) -> list[str]:
        """The section's shell commands, continuation lines joined, comments dropped."""
        text = "\n".join(self.sections.get(section, []))
        text = re.sub(r"\\\n\s*", " ", text)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and ln.strip()[0] != "#"]
        # plain assignments (LOCK=/opt/...) are expanded where later commands use them
        assigned = dict(m.groups() for ln in lines if (m := re.fullmatch(r"([A-Z_]+)=(\S+)", ln)))
        for var, value in assigned.items():
            lines = [re.sub(rf"\$\{{?{var}\b\}}?", value, ln) for ln in lines]
        return lines

    def pip_installs(self) -> list[list[str]]:
        out = []
        for cmd in self.commands("post"):
            if re.search(r"-m pip install\b", cmd):
                try:
                    out.append(shlex.split(cmd))
                except ValueError as e:
                    raise self.fail("%post", f"cannot split {cmd!r} ({e})") from None
        return out


def parse_definition(path: Path) -> Definition:
    """Header, sections and the pins of an Apptainer definition file; every rule this project
    relies on is checked here (one line naming the file and the section)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ContainerError(f"{path}: cannot read ({e.strerror})") from None
    header, sections, current = {}, {}, None
    for line in text.splitlines():
        if m := re.match(r"^%(\w+)\s*$", line):
            current = m.group(1)
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
        elif ":" in line and not line.lstrip().startswith("#"):
            key, value = line.split(":", 1)
            header[key.strip()] = value.strip()
    d = Definition(path, header, sections)
    for key in ("Bootstrap", "From"):
        if key not in header:
            raise d.fail("header", f"no {key}:")
    for sec in ("arguments", "files", "environment", "post", "test", "labels", "runscript"):
        if sec not in sections:
            raise d.fail(f"%{sec}", "missing section")
    suffix = header["From"].rsplit("-", 1)[-1]
    if suffix not in BASES:
        raise d.fail("From", f"{header['From']!r}: unknown base (known: {', '.join(BASES)})")
    d.base = BASES[suffix]
    args = dict(
        ln.strip().split("=", 1) for ln in sections["arguments"] if "=" in ln and ln.strip()
    )
    d.commit = args.get("OPENTAD_COMMIT", "")
    if not re.fullmatch(r"[0-9a-f]{40}", d.commit):
        raise d.fail("%arguments", "OPENTAD_COMMIT must be a full 40-hex commit")
    labels = {" ".join(ln.split()) for ln in sections["labels"]}
    if "opentad.commit {{ OPENTAD_COMMIT }}" not in labels:
        raise d.fail("%labels", "opentad.commit must be the template {{ OPENTAD_COMMIT }}")
    env = "\n".join(sections["environment"])
    if re.search(r"\bOPENTAD_ROOT=", env):
        raise d.fail("%environment", "sets OPENTAD_ROOT: jobs run the bound checkout they name")
    if f"{BUILD_RECORD_ENV}=" not in env:
        raise d.fail("%environment", f"does not export {BUILD_RECORD_ENV} (the job-start check)")
    for sec in ("environment", "post"):
        for var in ("PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_FIND_LINKS"):
            if re.search(rf"\b{var}=", "\n".join(sections[sec])):
                raise d.fail(f"%{sec}", f"sets {var} for every pip call; pass it to one call")
    if any(re.search(r"\b(mim|openmim)\b", c) for c in d.commands("post")):
        raise d.fail("%post", "uses mim/openmim (it pulls openxlab's old pins into the image)")
    if not any(re.search(r"\bpip check\b", c) for c in d.commands("test")):
        raise d.fail("%test", "does not run pip check")
    files = {}
    for ln in sections["files"]:
        parts = ln.split()
        if len(parts) == 2 and not parts[0].startswith("#"):
            files[parts[0]] = parts[1]
    _pip_pins(d, files)
    return d


def _opt(argv: list[str], *names: str) -> list[str]:
    """Values of an option given as `--name value` or `--name=value`."""
    vals = []
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                vals.append(argv[i + 1])
            elif a.startswith(n + "="):
                vals.append(a.split("=", 1)[1])
    return vals


def _pip_pins(d: Definition, files: dict[str, str]) -> None:
    installs = d.pip_installs()
    lock_src = f"containers/{LOCK_NAME}"
    d.lock_dest = files.get(lock_src, "")
    if not d.lock_dest:
        raise d.fail("%files", f"does not copy {lock_src} into the image")
    kinds = {}
    for argv in installs:
        pins = [a for a in argv if re.match(r"^[A-Za-z0-9_.-]+==", a)]
        if any(a.startswith("torch==") for a in pins):
            kinds["torch"] = argv
            idx = _opt(argv, "--index-url", "-i")
            m = re.fullmatch(r"https://download\.pytorch\.org/whl/(cu\d+)", idx[0] if idx else "")
            if not m:
                raise d.fail("%post", "torch must come from --index-url .../whl/cuXXX only")
            d.cuda = m.group(1)
            for name in ("torch", "torchvision"):
                pin = next((a for a in pins if a.startswith(name + "==")), "")
                ver = re.fullmatch(rf"{name}==(\S+)\+{d.cuda}", pin)
                if not ver:
                    raise d.fail("%post", f"{name} must be pinned as {name}==X+{d.cuda}")
                setattr(d, name, ver.group(1))
        elif any(a.startswith("mmcv==") for a in pins):
            kinds["mmcv"] = argv
            d.mmcv = next(a for a in pins if a.startswith("mmcv==")).split("==", 1)[1]
            links = _opt(argv, "--find-links", "-f")
            d.mmcv_index = links[0] if links else ""
            if "--no-index" not in argv or not _binary_only(argv, "mmcv"):
                raise d.fail("%post", "mmcv must be binary-only from its --find-links, --no-index")
        elif d.lock_dest in _opt(argv, "-r", "--requirement"):
            kinds["lock"] = argv
        if "--no-deps" not in argv and any(a.startswith(("torch==", "mmcv==")) for a in pins):
            raise d.fail("%post", f"{' '.join(argv[:6])} ...: needs --no-deps (the lock has them)")
    for kind in ("torch", "mmcv", "lock"):
        if kind not in kinds:
            raise d.fail("%post", f"no pip install of {kind} (see containers/README.md)")
    if "--no-deps" not in kinds["lock"]:
        raise d.fail("%post", "the lock must be installed with --no-deps (it is the closure)")
    torch_mm = ".".join(d.torch.split(".")[:2])
    want = f"https://download.openmmlab.com/mmcv/dist/{d.cuda}/torch{torch_mm}/index.html"
    if d.mmcv_index != want:
        raise d.fail("%post", f"mmcv index {d.mmcv_index!r} is not {want!r} (torch {d.torch})")
    if any(a.startswith("/opt/tadsweep") and "lock" not in a for argv in installs for a in argv):
        raise d.fail("%post", "pip-installs tadsweep: jobs run the bound checkout's (PYTHONPATH)")


def _binary_only(argv: list[str], name: str) -> bool:
    return any(v in (":all:", name) for v in _opt(argv, "--only-binary"))


# --- opentad.in and the lock --------------------------------------------------------------------


@dataclass
class Inputs:
    path: Path
    requirements: list  # packaging Requirement
    no_binary: set[str]

    def names(self) -> set[str]:
        return {canon(r.name) for r in self.requirements}


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_inputs(path: Path) -> Inputs:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ContainerError(f"{path}: cannot read ({e.strerror})") from None
    reqs, no_binary = [], set()
    for n, raw in enumerate(lines, 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--no-binary"):
            no_binary |= {canon(x) for x in line.split(None, 1)[1].split(",") if x}
            continue
        if line.startswith("-"):
            raise ContainerError(f"{path}:{n}: only requirements and --no-binary belong here")
        try:
            req = Requirement(line)
        except InvalidRequirement as e:
            raise ContainerError(f"{path}:{n}: {e}") from None
        if canon(req.name) in OWN_INDEX:
            raise ContainerError(f"{path}:{n}: {req.name} is pinned in {DEF_NAME}, not here")
        reqs.append(req)
    inputs = Inputs(path, reqs, no_binary)
    for name in sorted(no_binary):
        pin = next((r for r in reqs if canon(r.name) == name), None)
        if pin is None or _exact(pin) is None:
            raise ContainerError(f"{path}: --no-binary {name}: pin it here with == (sdist-only)")
    return inputs


def _exact(req) -> str | None:
    specs = list(req.specifier)
    return specs[0].version if len(specs) == 1 and specs[0].operator == "==" else None


@dataclass
class Lock:
    path: Path
    digest: str
    options: list[str]
    entries: dict[str, tuple[str, set[str]]]  # canonical name -> (version, sha256 hashes)


ENTRY = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)\s*(?:#.*)?$")


def parse_lock(path: Path) -> Lock:
    if not path.is_file():
        raise ContainerError(f"{path}: missing: run `make container-lock`")
    digest, options, entries = "", [], {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if m := re.match(r"^# input: sha256:([0-9a-f]{64})$", line):
            digest = m.group(1)
        elif not line.strip() or line.startswith("#"):
            continue
        elif line.startswith("--"):
            options.append(line.strip())
        elif m := ENTRY.match(line):
            hashes = set(re.findall(r"sha256:([0-9a-f]{64})", m.group(3)))
            entries[canon(m.group(1))] = (m.group(2), hashes)
        else:
            raise ContainerError(f"{path}:{n}: not `name==version --hash=sha256:...`: {line!r}")
    if not digest:
        raise ContainerError(f"{path}: no `# input: sha256:` line: run `make container-lock`")
    if "--require-hashes" not in options:
        raise ContainerError(f"{path}: no --require-hashes line")
    return Lock(path, digest, options, entries)


def lock_options(inputs: Inputs) -> list[str]:
    """The lock's own pip options: hashes required, wheels only except the declared sdists."""
    opts = ["--require-hashes", "--only-binary :all:"]
    if inputs.no_binary:
        opts.append("--no-binary " + ",".join(sorted(inputs.no_binary)))
    return opts


def input_digest(defn: Definition, inputs: Inputs) -> str:
    """What the lock was generated from: the .def's base and pins and opentad.in's
    requirements, normalised (comments and order do not count)."""
    data = {
        "from": defn.header["From"],
        "torch": defn.torch,
        "torchvision": defn.torchvision,
        "cuda": defn.cuda,
        "mmcv": defn.mmcv,
        "requirements": sorted(str(r) for r in inputs.requirements),
        "no_binary": sorted(inputs.no_binary),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# --- resolution ---------------------------------------------------------------------------------


@dataclass
class Dist:
    name: str  # canonical
    version: str
    requires: list[str]
    sha256: str
    filename: str


def platforms(base: Base) -> list[str]:
    """manylinux tags the image's pip accepts, best first (as packaging orders them)."""
    major, top = base.glibc
    tags = []
    for minor in range(top, 4, -1):
        tags.append(f"manylinux_{major}_{minor}_x86_64")
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}.get(minor)
        if legacy:
            tags.append(f"{legacy}_x86_64")
    return [*tags, "linux_x86_64"]


def marker_env(base: Base) -> dict[str, str]:
    return {
        "implementation_name": "cpython",
        "implementation_version": base.python_full,
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": base.python_full,
        "python_version": base.python,
        "sys_platform": "linux",
    }


def _pip(*args: str) -> list[str]:
    # --isolated: this machine's pip config (extra indexes, global constraints) must not leak in
    return [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", *args]


def _sdist_hash(name: str, version: str, index_url: str) -> str:
    """sha256 of NAME-VERSION.tar.gz from the index's simple page (PEP 503 URL fragments)."""
    url = f"{index_url.rstrip('/')}/{canon(name)}/"
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            page = resp.read().decode()
    except OSError as e:
        raise StepFailed(f"{url}: cannot read the index ({e})") from None
    for fname, sha in re.findall(r'href="[^"#]*/([^/"#]+)#sha256=([0-9a-f]{64})"', page):
        stem = fname.removesuffix(".tar.gz")
        if stem != fname and "-" in stem:
            project, ver = stem.rsplit("-", 1)
            if canon(project) == canon(name) and ver == version:
                return sha
    raise StepFailed(f"{url}: no sdist {name}-{version}.tar.gz with a sha256")


def build_sdist_wheels(inputs: Inputs, index_url: str, wheelhouse: Path = WHEELHOUSE) -> None:
    """Pure-Python wheels of the sdist-only pins, for their metadata (cached by name-version)."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    todo = []
    for r in inputs.requirements:
        if canon(r.name) in inputs.no_binary:
            stem = f"{canon(r.name).replace('-', '_')}-{_exact(r)}-"
            if not any(p.name.lower().startswith(stem) for p in wheelhouse.glob("*.whl")):
                todo.append(f"{r.name}=={_exact(r)}")
    if todo:
        cmd = _pip("wheel", "--no-deps", "-q", "--index-url", index_url, "-w", str(wheelhouse))
        res = subprocess.run([*cmd, *todo], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise StepFailed(f"building {', '.join(todo)}: {_pip_error(res.stderr)}")
    for whl in wheelhouse.glob("*.whl"):
        if not re.search(r"-py[23.]*[23]-none-any\.whl$", whl.name):
            raise ContainerError(
                f"{inputs.path}: --no-binary {whl.name.split('-')[0]}: not pure Python ({whl.name})"
            )


def _pip_error(stderr: str) -> str:
    """pip's reason for failing, on one line: the conflict lines, else its ERROR lines."""
    lines = [ln.strip() for ln in stderr.splitlines()]
    if "The conflict is caused by:" in lines:
        i = lines.index("The conflict is caused by:")
        cause = []
        for ln in lines[i + 1 :]:
            if not ln:
                break
            cause.append(ln)
        return "conflict: " + "; ".join(cause)
    errors = [ln.removeprefix("ERROR: ") for ln in lines if ln.startswith("ERROR:")]
    return "; ".join(errors[:3]) or (lines[-1] if lines else "pip failed")


def resolve(
    defn: Definition,
    inputs: Inputs,
    extra: list[str],
    index_url: str,
    who: Path,
) -> dict[str, Dist]:
    """pip's resolution of the whole stack for the image's Python and platform (`extra`: more
    top-level requirements). pip evaluates environment markers for the Python running it, not for
    --python-version, so `walk` re-evaluates them for the image and callers add what it lacks."""
    build_sdist_wheels(inputs, index_url)
    top = [str(r) for r in inputs.requirements] + extra
    top += [f"torch=={defn.torch}", f"torchvision=={defn.torchvision}"]
    top += [f"{SUBSTITUTE['mmcv']}=={defn.mmcv}"]
    base = defn.base
    with tempfile.TemporaryDirectory(prefix="tadsweep-container-") as tmp:
        reqs, report = Path(tmp, "requirements.txt"), Path(tmp, "report.json")
        reqs.write_text("\n".join(top) + "\n")
        cmd = _pip("install", "--dry-run", "--ignore-installed", "--report", str(report))
        cmd += ["--python-version", base.python, "--implementation", "cp"]
        cmd += ["--abi", "cp" + base.python.replace(".", ""), "--only-binary", ":all:"]
        for p in platforms(base):
            cmd += ["--platform", p]
        cmd += ["--target", str(Path(tmp, "target")), "--index-url", index_url]
        cmd += ["--find-links", str(WHEELHOUSE), "-r", str(reqs)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            # pip names top-level requirements by their line in the file it was given
            said = re.sub(
                r"-r \S+ \(line (\d+)\)",
                lambda m: top[int(m.group(1)) - 1],
                res.stdout + "\n" + res.stderr,
            )
            raise ContainerError(f"{who}: the stack does not resolve: {_pip_error(said)}")
        data = json.loads(report.read_text())
    dists = {}
    for item in data["install"]:
        meta = item["metadata"]
        name = canon(meta["name"])
        requires = list(meta.get("requires_dist") or [])
        if name == "torch":  # the image's +cuXXX build: CUDA libraries bundled, not required
            requires = [r for r in requires if not PYPI_TORCH_ONLY.match(canon(_req_name(r)))]
        if name == SUBSTITUTE["mmcv"]:
            name = "mmcv"
        url = item["download_info"]["url"]
        sha = item["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256", "")
        dists[name] = Dist(name, meta["version"], requires, sha, url.rsplit("/", 1)[-1])
    return dists


def _req_name(spec: str) -> str:
    return re.match(r"\s*([A-Za-z0-9._-]+)", spec).group(1)


def walk(dists: dict[str, Dist], top: list, env: dict) -> tuple[set[str], list[str], list]:
    """What the top-level requirements reach in the resolution, and every requirement the
    resolved metadata leaves broken -- `pip check` over the resolution, markers evaluated for
    the image's Python and platform, extras followed where requested."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    reached: dict[str, set[str]] = {}
    problems: list[str] = []
    lacking = []
    queue = [("the image", r) for r in top]
    while queue:
        who, req = queue.pop(0)
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        name = canon(req.name)
        d = dists.get(name)
        if d is None:
            problems.append(f"{who} requires {req}, which the stack lacks")
            lacking.append(req)
            continue
        if not req.specifier.contains(Version(d.version), prereleases=True):
            problems.append(f"{who} requires {req}, but the stack has {name}=={d.version}")
        new = set(req.extras) - reached.get(name, set())
        if name in reached and not new:
            continue
        first = name not in reached
        reached.setdefault(name, set()).update(new)
        for spec in d.requires:
            dep = Requirement(spec)
            extras = ({""} if first else set()) | new
            if dep.marker is None:
                if first:
                    queue.append((f"{name}=={d.version}", dep))
            elif any(dep.marker.evaluate({**env, "extra": e}) for e in extras):
                dep.marker = None
                queue.append((f"{name}=={d.version}", dep))
    return set(reached), problems, lacking


# --- check and lock -----------------------------------------------------------------------------


def _top(defn: Definition, inputs: Inputs) -> list:
    from packaging.requirements import Requirement

    own = [f"torch=={defn.torch}", f"torchvision=={defn.torchvision}", f"mmcv=={defn.mmcv}"]
    return list(inputs.requirements) + [Requirement(r) for r in own]


def _load(containers: Path) -> tuple[Definition, Inputs]:
    return parse_definition(containers / DEF_NAME), parse_inputs(containers / IN_NAME)


def lock(containers: Path = CONTAINERS, index_url: str = INDEX_URL) -> Path:
    """Resolve opentad.in + the .def's pins today and write the full lock with hashes."""
    defn, inputs = _load(containers)
    path = containers / LOCK_NAME
    extra: list[str] = []
    for _ in range(5):  # each round adds what only the image's Python needs (e.g. tomli on 3.10)
        dists = resolve(defn, inputs, extra, index_url, containers / IN_NAME)
        reached, problems, lacking = walk(dists, _top(defn, inputs), marker_env(defn.base))
        if not lacking:
            break
        extra += [f"{r.name}{r.specifier}" for r in lacking]
    if problems:
        raise ContainerError(f"{containers / IN_NAME}: pip check: {problems[0]}")
    lines = [
        f"# The Python stack of containers/{DEF_NAME} (CPython {defn.base.python}, "
        f"{defn.base.label}, x86_64), closed over every dependency.",
        "# Generated by `make container-lock` (python -m tadsweep.site.container lock) from "
        f"containers/{IN_NAME} and the .def's pins; do not edit.",
        f"# input: sha256:{input_digest(defn, inputs)}",
        f"# Installed by {DEF_NAME}'s own commands from their own indexes (no hashes known here):",
        f"#   torch=={defn.torch}+{defn.cuda} torchvision=={defn.torchvision}+{defn.cuda}"
        f"  (https://download.pytorch.org/whl/{defn.cuda})",
        f"#   mmcv=={defn.mmcv}  ({defn.mmcv_index})",
        *lock_options(inputs),
    ]
    for name in sorted(reached - set(OWN_INDEX)):
        d = dists[name]
        sha = _sdist_hash(name, d.version, index_url) if name in inputs.no_binary else d.sha256
        note = "  # sdist: no wheel on the index, built in the image" * (name in inputs.no_binary)
        lines.append(f"{name}=={d.version} --hash=sha256:{sha}{note}")
    path.write_text("\n".join(lines) + "\n")
    return path


def upstream_requirements(root: Path, defn: Definition) -> tuple[list, list[str]]:
    """OpenTAD's requirements.txt: its named requirements, and its local packages (the compiled
    extensions), which the .def must install."""
    from packaging.requirements import InvalidRequirement, Requirement

    path = root / "requirements.txt"
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ContainerError(f"{path}: cannot read ({e.strerror}): set --opentad-root") from None
    reqs, local = [], []
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "/" in line and (root / line).is_dir():
            local.append(line)
            continue
        try:
            reqs.append(Requirement(line))
        except InvalidRequirement as e:
            raise ContainerError(f"{path}: {line!r}: {e}") from None
    post = " ".join(a for argv in defn.pip_installs() for a in argv)
    for ext in local:
        if ext not in post:
            raise defn.fail("%post", f"does not build {ext} (listed in {path})")
    return reqs, local


def check(
    containers: Path = CONTAINERS, opentad_root: Path | None = None, index_url: str = INDEX_URL
) -> str:
    """The whole check; returns the summary line, raises ContainerError with one line."""
    from packaging.version import Version

    start = time.monotonic()
    defn, inputs = _load(containers)
    lk = parse_lock(containers / LOCK_NAME)
    if lk.digest != input_digest(defn, inputs):
        raise ContainerError(
            f"{lk.path}: out of date with {IN_NAME} / {DEF_NAME}: run `make container-lock`"
        )
    want = lock_options(inputs)
    if sorted(lk.options) != sorted(want):
        raise ContainerError(f"{lk.path}: options {lk.options} are not {want}")
    upstream = []
    if opentad_root is not None:
        upstream, _ = upstream_requirements(opentad_root, defn)
    # every locked version is a top-level pin: one resolution installs exactly the lock
    dists = resolve(
        defn, inputs, [f"{n}=={v}" for n, (v, _) in lk.entries.items()], index_url, lk.path
    )
    reached, problems, lacking = walk(dists, _top(defn, inputs), marker_env(defn.base))
    if lacking:
        raise ContainerError(f"{lk.path}: out of date: {problems[0]} (not locked)")
    if problems:
        raise ContainerError(f"{lk.path}: pip check: {problems[0]}")
    expected = reached - set(OWN_INDEX)
    extra = sorted(set(lk.entries) - expected)
    if extra:
        raise ContainerError(f"{lk.path}: out of date: nothing needs {extra[0]}")
    for name, (version, hashes) in sorted(lk.entries.items()):
        d = dists[name]
        if d.version != version:
            raise ContainerError(f"{lk.path}: {name}=={version} resolved as {d.version}")
        sha = _sdist_hash(name, version, index_url) if name in inputs.no_binary else d.sha256
        if sha not in hashes:
            raise ContainerError(f"{lk.path}: {name}=={version}: hash is not {d.filename}'s")
    for req in upstream:
        name = canon(req.name)
        d = dists.get(name)
        if name not in reached or d is None:
            raise ContainerError(f"{opentad_root}/requirements.txt: {req} is not in the stack")
        if not req.specifier.contains(Version(d.version), prereleases=True):
            raise ContainerError(
                f"{opentad_root}/requirements.txt: {req}, but the stack has {d.version}"
            )
    seconds = time.monotonic() - start
    covers = f", covering OpenTAD's {len(upstream)} requirements" if upstream else ""
    return (
        f"container-check: {len(reached)} packages for CPython {defn.base.python} "
        f"({defn.base.label}, manylinux_2_{defn.base.glibc[1]}_x86_64) resolve with no conflict; "
        f"pip check clean; {LOCK_NAME} up to date ({len(lk.entries)} hashed{covers}); torch "
        f"{defn.torch} checked as PyPI's build, mmcv {defn.mmcv} through mmcv-lite's metadata "
        f"({seconds:.0f} s)"
    )


# --- OpenTAD's build record (the job-start check) -----------------------------------------------


def extension_dirs(root: Path) -> list[str]:
    """OpenTAD's compiled extensions: the local packages of its requirements.txt."""
    path = Path(root) / "requirements.txt"
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}): not an OpenTAD checkout") from None
    return [
        ln.split("#", 1)[0].strip()
        for ln in lines
        if "/" in ln.split("#", 1)[0] and (Path(root) / ln.split("#", 1)[0].strip()).is_dir()
    ]


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
    """At job start, inside the image: the bound OpenTAD checkout must be the code the image's
    extensions were compiled from. Outside the image (no build record) there is nothing to
    compare with. One line if they differ."""
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


# --- CLI ----------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tadsweep.site.container")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("check", "lock"):
        p = sub.add_parser(name)
        p.add_argument("--containers", type=Path, default=CONTAINERS)
        p.add_argument("--index-url", default=os.environ.get("TADSWEEP_INDEX_URL", INDEX_URL))
        if name == "check":
            default = os.environ.get("OPENTAD_ROOT")
            p.add_argument("--opentad-root", type=Path, default=default and Path(default))
    f = sub.add_parser("fingerprint", help="the image's OpenTAD build record, as JSON")
    f.add_argument("root", type=Path)
    f.add_argument("--commit", required=True)
    args = parser.parse_args(argv)
    if args.command == "check":
        if args.opentad_root is None:
            raise InputError("no OpenTAD checkout: pass --opentad-root or set $OPENTAD_ROOT")
        print(check(args.containers, args.opentad_root, args.index_url))
    elif args.command == "lock":
        print(f"wrote {lock(args.containers, args.index_url)}")
    else:
        record = {"commit": args.commit, "fingerprint": fingerprint(args.root)}
        record["extensions"] = extension_dirs(args.root)
        print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    cli.run(main)
