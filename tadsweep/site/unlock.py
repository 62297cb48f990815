"""Clear Snakemake's lock when no Snakemake of that working directory is alive on this machine
(docs/operations.md): `python -m tadsweep.site.unlock -- [SNAKEMAKE ARGS ...]`, which `make demo`
runs first."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

from tadsweep import cli
from tadsweep.errors import StepFailed

LOCKS = Path(".snakemake", "locks")


def workdir(args: list[str], base: Path | None = None) -> Path:
    """The working directory Snakemake uses with these arguments (the last --directory given),
    relative to `base` (here by default)."""
    found = "."
    for i, arg in enumerate(args):
        if arg in ("--directory", "-d") and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith("--directory="):
            found = arg.split("=", 1)[1]
    return Path(os.path.realpath(Path(base or os.getcwd(), found)))


def locks(work: Path) -> list[Path]:
    return sorted((work / LOCKS).glob("*.lock"))


def _is_snakemake(argv: list[str]) -> bool:
    """`snakemake ...`, `python /venv/bin/snakemake ...` (a console script) or `python -m
    snakemake ...`; not a shell whose command line merely mentions it."""
    head = argv[:4]
    if any(os.path.basename(a) == "snakemake" for a in head[:2]):
        return True
    return any(a == "-m" and b == "snakemake" for a, b in zip(head, head[1:]))


def _ancestors() -> set[int]:
    """This process and its parents (the shell of a Makefile recipe names snakemake too)."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: ppid
    return out


def running(work: Path) -> list[tuple[int, str]]:
    """(pid, command line) of each live Snakemake of this user working in `work`."""
    found, skip = [], _ancestors()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in skip:
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:  # gone meanwhile, or another user's
            continue
        if not _is_snakemake(argv):
            continue
        if work in (Path(os.path.realpath(cwd)), workdir(argv[1:], base=cwd)):
            found.append((int(proc.name), " ".join(argv)))
    return found


def _why(stderr: str) -> str:
    """What Snakemake said went wrong: a traceback's last line (the exception), else the first
    error line and the one after it (`WorkflowError in file ...:` then the message)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if any(ln.startswith("Traceback") for ln in lines):
        return lines[-1]
    for i, line in enumerate(lines):
        if "Error" in line or "error" in line:
            return " ".join(lines[i : i + 2])
    return lines[-1] if lines else "no output"


def unlock_if_stale(args: list[str]) -> str | None:
    """Clear a stale lock of the working directory these Snakemake arguments name; the line to
    print (None when there is no lock)."""
    work = workdir(args)
    held = locks(work)
    if not held:
        return None
    if alive := running(work):
        pid, command = alive[0]
        return (
            f"tadsweep: {work / LOCKS} is held by a running Snakemake (pid {pid}: "
            f"{command[:120]}); left as it is"
        )
    cmd = [sys.executable, "-m", "snakemake", "--unlock", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0 or locks(work):
        raise StepFailed(
            f"snakemake --unlock in {work} failed (exit {res.returncode}): {_why(res.stderr)}"
        )
    return (
        f"tadsweep: cleared a stale Snakemake lock in {work / LOCKS} ({len(held)} lock "
        f"file{'s' if len(held) > 1 else ''}): no Snakemake of this working directory is running "
        "(the last one was killed)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tadsweep.site.unlock", description=__doc__)
    ap.add_argument(
        "snakemake_args", nargs=argparse.REMAINDER, help="-- then snakemake's arguments"
    )
    args = ap.parse_args(argv)
    rest = args.snakemake_args[1:] if args.snakemake_args[:1] == ["--"] else args.snakemake_args
    if line := unlock_if_stale(rest):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    cli.run(main)
