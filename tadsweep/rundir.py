"""A run's work dir belongs to one set of parameters: a resumed training must continue the same
run, and a changed configuration must never silently resume or overwrite an old one."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tadsweep.atomic import write_json
from tadsweep.errors import ConfigError

# Keys that change what is trained; the rest (ids, post-processing) may change without retraining.
TRAINING_KEYS = (
    "seed",
    "lora",
    "schedule",
    "augment",
    "structure",
    "batch_size",
    "ema",
    "amp",
    "model",
)


def claim(params_path: str | Path, work_dir: str | Path) -> str:
    """Record the params a work dir trains with, or check they are the ones it was trained with."""
    params = json.loads(Path(params_path).read_text())
    work = Path(work_dir)
    mine = {k: params[k] for k in TRAINING_KEYS}
    stamp = work / "params.json"
    if stamp.exists():
        theirs = {k: json.loads(stamp.read_text()).get(k) for k in TRAINING_KEYS}
        if theirs != mine:
            diff = next(k for k in TRAINING_KEYS if theirs[k] != mine[k])
            raise ConfigError(
                f"{work}: was trained with different {diff} ({theirs[diff]} vs now {mine[diff]}); "
                f"move it away to keep it, or delete it to retrain"
            )
        return "resume"
    work.mkdir(parents=True, exist_ok=True)
    write_json(params, stamp)
    return "new"


def final_checkpoint(params: dict | str | Path, work_dir: str | Path) -> Path:
    """The checkpoint of the last epoch (0-based epoch numbers, as OpenTAD names them); the study's
    fixed rule for the checkpoint that detection uses."""
    if not isinstance(params, dict):
        params = json.loads(Path(params).read_text())
    return Path(work_dir) / "checkpoint" / f"epoch_{params['schedule']['epochs'] - 1}.pth"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tadsweep.rundir", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("claim", help="stamp or check a work dir's parameters")
    c.add_argument("--params", required=True)
    c.add_argument("--work-dir", required=True)
    args = ap.parse_args(argv)
    try:
        print(f"{args.work_dir}: {claim(args.params, args.work_dir)}")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
