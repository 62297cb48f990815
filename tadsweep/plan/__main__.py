"""python -m tadsweep.plan CONFIG [--tsv plan.tsv]: validate a study and print its plan."""

import argparse

from tadsweep import cli
from tadsweep.plan.config import load_study
from tadsweep.plan.summary import plan_rows, plan_summary, write_plan


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tadsweep.plan", description=__doc__)
    ap.add_argument("configfile", help="study config (YAML)")
    ap.add_argument("--tsv", help="also write the runs table (plan.tsv) here")
    args = ap.parse_args(argv)
    cli.check_outputs([args.configfile], [args.tsv])
    cfg, warnings = load_study(args.configfile)
    print(plan_summary(cfg, warnings))
    if args.tsv:
        write_plan(plan_rows(cfg), args.tsv)
    return 0


if __name__ == "__main__":
    cli.run(main)
