"""Read study configs the way the workflow will, before Snakemake does (docs/refusals.md).

    python -m tadsweep.plan.check_config FILE ...
    python -m tadsweep.plan.check_config -- SNAKEMAKE ARGS ...   (checks each --configfile)

Snakemake reads every `--configfile` itself, before the Snakefile can stand in front of it: a bad
file stops it with a traceback or makes it wait without end. Here each is read by tadsweep's
reader and must hold a mapping; a problem is one line naming the file, exit 2.
"""

import argparse
import sys

from tadsweep import cli
from tadsweep.plan.config import read_yaml

_OPTIONS = ("--configfile", "--configfiles")


def configfiles(args: list[str]) -> list[str]:
    """The files Snakemake would read as --configfile among its arguments."""
    out, taking = [], False
    for arg in args:
        if arg.startswith("-"):
            name, _, value = arg.partition("=")
            taking = name in _OPTIONS and not value
            if name in _OPTIONS and value:
                out.append(value)
        elif taking:
            out.append(arg)
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser(
        prog="python -m tadsweep.plan.check_config",
        description="Read study configs with tadsweep's reader before Snakemake reads them.",
        epilog="After --: Snakemake's arguments, whose --configfile files are read.",
    )
    ap.add_argument("files", nargs="*", help="config files")
    files = ap.parse_args(argv[:split]).files
    for path in files + configfiles(argv[split + 1 :]):
        read_yaml(path)
    return 0


if __name__ == "__main__":
    cli.run(main)
