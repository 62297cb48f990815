"""The study config's JSON Schema: schemas/config.schema.yaml, whose axis and post-processing
sections ($defs, at the end of the file) are generated from the axis registry (tadsweep/plan/axes)
and the knob registry (tadsweep/detections/knobs.py).

    python -m tadsweep.plan.schema --write    regenerate the $defs after adding or changing an axis
    python -m tadsweep.plan.schema --check    exit 1 when the file is out of date (a test runs it)

Validation always uses `build()`: the file with $defs from the registry as it is at run time, so
an axis from $TADSWEEP_EXTRA_AXES validates too.
"""

import argparse

import yaml

from tadsweep import cli
from tadsweep.detections import knobs
from tadsweep.plan import axes

MARKER = (
    "# --- generated from tadsweep/plan/axes and tadsweep/detections/knobs.py by "
    "`python -m tadsweep.plan.schema --write` ---"
)


def _head(text: str) -> str:
    return text.partition(MARKER)[0].rstrip() + "\n"


def schema_defs() -> dict:
    """The generated $defs: the axes' sections and the post-processing knobs' (their registries)."""
    return {**axes.schema_defs(), **knobs.schema_defs()}


def build() -> dict:
    schema = yaml.safe_load(_head(cli.SCHEMA.read_text()))
    schema["$defs"] = schema_defs()
    return schema


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):  # write repeated lists out, no &id anchors
        return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tadsweep.plan.schema", description=__doc__)
    ap.add_argument("--write", action="store_true", help="regenerate the axis sections")
    ap.add_argument("--check", action="store_true", help="exit 1 if they are out of date")
    args = ap.parse_args(argv)
    text = cli.SCHEMA.read_text()
    defs = {"$defs": schema_defs()}
    body = yaml.dump(defs, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=1000)
    fresh = f"{_head(text)}\n{MARKER}\n{body}"
    if args.write:
        cli.SCHEMA.write_text(fresh)
    elif args.check and fresh != text:
        print(
            f"{cli.SCHEMA}: axis sections out of date; run python -m tadsweep.plan.schema --write"
        )
        return 1
    return 0


if __name__ == "__main__":
    cli.run(main)
