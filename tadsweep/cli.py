"""The one convention of tadsweep's commands, `python -m tadsweep.<stage>.<module>`: argparse
(with subcommands where a module does several things); each module defines `main(argv) -> int`
and ends with `cli.run(main)`. Only here do exceptions become exit statuses, one `error: ...`
line on stderr, no traceback: InputError and OSError -> 2, StepFailed -> 1, Ctrl-C -> 130.
Every main() also calls `check_outputs`; fractions use the `fraction` type, and an option that
stands for a config key the `config_value` type (the schema's bounds).
"""

import argparse
import math
import os
import re
import sys
from pathlib import Path
from typing import NoReturn

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


SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


def config_schema(key: str) -> dict:
    """The config schema of the dotted key `key` (e.g. "demo.classes"), $refs followed."""
    import yaml

    root = yaml.safe_load(SCHEMA.read_text())

    def resolve(node: dict) -> dict:
        while "$ref" in node or "allOf" in node:
            if "$ref" in node:
                ref, node = node["$ref"], root
                for part in ref.lstrip("#/").split("/"):
                    node = node[part]
            else:
                node = node["allOf"][0]
        return node

    node = root
    for part in key.split("."):
        node = resolve(node)["properties"][part]
    return resolve(node)


def config_value(key: str):
    """argparse type of an option that stands for the config key `key` (dotted): typed and
    bounded as the config schema types and bounds it."""

    def parse(text: str):
        import jsonschema

        node = config_schema(key)
        integer = "integer" in (node["type"] if isinstance(node["type"], list) else [node["type"]])
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            what = "an integer" if integer else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(node).iter_errors(value)
        )
        if error is not None:
            raise argparse.ArgumentTypeError(f"{error.message} (as the config's {key})")
        return value

    parse.__name__ = key  # argparse names the type in its message
    return parse


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
        if isinstance(item, (list, tuple)):
            out += _paths(item)
        elif item is not None:
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
    except (InputError, StepFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InputError) else 1
    except OSError as exc:  # a folder not writable, a disk full: the file and why, one line
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def run(main) -> None:
    """Entry point of a `python -m` module."""
    sys.exit(status(main))


def stop(problem) -> NoReturn:
    """Stop the workflow while Snakemake parses it (a refused config): one line and exit 2.
    SystemExit passes Snakemake's handler untouched; WorkflowError would add two lines."""
    print(f"error: {problem}", file=sys.stderr)
    raise SystemExit(2)
