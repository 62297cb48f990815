"""The one convention of tadsweep's commands, `python -m tadsweep.<stage>.<module>`: argparse (with
subcommands where a module does several things); each module defines `main(argv) -> int` and ends
with `cli.run(main)`. Only here do exceptions become exit statuses:

- InputError (a bad config, path or file; the message names the file and the key) -> 2
- StepFailed (a step ran and failed, e.g. OpenTAD's training exited non-zero) -> 1
- Ctrl-C -> 130

Each prints one `error: ...` line on stderr, no traceback. Every main() also calls
`check_outputs` (no output may be one of its inputs, or a directory), and arguments that are
fractions use the `fraction` type.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path

from tadsweep.errors import InputError, StepFailed


def fraction(text: str) -> float:
    """argparse type of a tIoU or an IoU threshold: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and 0 < value <= 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not in (0, 1]")
    return value


# A name that becomes a file name or a run id: as config.schema.yaml's definitions.name.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


def check_name(value, where: str) -> str:
    """`value` when it is a safe name (it becomes a file name), else a one-line InputError."""
    if not (isinstance(value, str) and NAME.fullmatch(value)):
        raise InputError(
            f"{where}: {str(value)[:40]!r} is no name: at most 40 letters, digits and _ . - "
            f"(it becomes a file name)"
        )
    return value


def _paths(items) -> list[str]:
    out = []
    for item in items:
        if item is None:
            continue
        if isinstance(item, (list, tuple)):
            out += _paths(item)
        else:
            out.append(os.fspath(item))
    return out


def _same(a: str, b: str) -> bool:
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:
        return False


def check_outputs(inputs=(), outputs=(), dirs=()) -> None:
    """Refuse, before anything is written, an output file that is one of the inputs (the same
    path once resolved, or the same file), that repeats another output, or that is a directory;
    and an output folder (`dirs`) that is one of the inputs or an existing file."""
    inputs, outputs, dirs = _paths(inputs), _paths(outputs), _paths(dirs)
    for i, out in enumerate(outputs):
        if os.path.isdir(out):
            raise InputError(f"{out}: output is a directory; name the file to write")
        for other in inputs + outputs[:i]:
            if _same(out, other):
                what = "one of the inputs" if other in inputs else "given as two outputs"
                raise InputError(f"{out}: output is {what} ({other}); refusing to overwrite it")
    for out in dirs:
        if os.path.exists(out) and not os.path.isdir(out):
            raise InputError(f"{out}: output folder is an existing file")
        for other in inputs + outputs:
            if _same(out, other):
                raise InputError(f"{out}: output folder is also an input or output ({other})")


def status(main, argv=None) -> int:
    """Exit status of `main(argv)` under the convention above."""
    try:
        return main(argv) or 0
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StepFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run(main) -> None:
    """Entry point of a `python -m` module."""
    sys.exit(status(main))
