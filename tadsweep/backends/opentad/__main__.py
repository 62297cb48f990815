"""CLI of the OpenTAD backend (train and detect run inside the OpenTAD container).

python -m tadsweep.backends.opentad render --params P --opentad-root R --out CFG [--base-config B]
    [--annotation A] [--class-map C] [--video-dir V] [--pretrained W] [--work-dir D]
python -m tadsweep.backends.opentad render --reference DIR --opentad-root R
python -m tadsweep.backends.opentad train --params P --config CFG --opentad-root R --work-dir W
    --done train.json [--gpus N]
python -m tadsweep.backends.opentad detect --params P --config CFG --opentad-root R --work-dir W
    --out candidates.npz [--gpus N] [--checkpoint CKPT]
"""

from __future__ import annotations

import argparse
import shlex

from tadsweep import cli


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help="params.json of the run")
    p.add_argument("--config", required=True, help="rendered OpenTAD config of the run")
    p.add_argument("--opentad-root", required=True, help="OpenTAD checkout (cwd of torchrun)")
    p.add_argument("--gpus", type=int, default=1, help="processes = GPUs on this node")
    p.add_argument("--torchrun", help="launcher command (default: torchrun on PATH)")


def main(argv=None) -> int:
    from tadsweep.backends.opentad import render

    parser = argparse.ArgumentParser(prog="python -m tadsweep.backends.opentad")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="params.json -> the run's OpenTAD config")
    render.add_arguments(r)
    r.set_defaults(func=render.command)
    t = sub.add_parser("train", help="train or resume; write --done at the end")
    _common(t)
    t.add_argument("--work-dir", required=True, help="log.json and checkpoint/ go here")
    t.add_argument("--done", required=True, help="train.json, written only after the last epoch")
    t.set_defaults(func=_train)
    d = sub.add_parser("detect", help="pre-NMS candidates of one checkpoint")
    _common(d)
    d.add_argument("--work-dir", required=True, help="the run's train work dir")
    d.add_argument("--out", required=True, help="candidates.npz")
    d.add_argument("--checkpoint", help="default: WORK/checkpoint/epoch_{epochs-1}.pth")
    d.set_defaults(func=_detect)
    args = parser.parse_args(argv)
    keys = ("params", "config", "checkpoint", "annotation", "class_map", "pretrained")
    cli.check_outputs(
        [getattr(args, k, None) for k in keys],
        [getattr(args, k, None) for k in ("out", "done")],
        [getattr(args, "work_dir", None), getattr(args, "reference", None)],
    )
    return args.func(args)


def _train(args) -> int:
    from tadsweep.backends.opentad import run

    run.train(
        args.params,
        args.config,
        args.opentad_root,
        args.work_dir,
        args.done,
        gpus=args.gpus,
        torchrun=shlex.split(args.torchrun) if args.torchrun else None,
    )
    return 0


def _detect(args) -> int:
    from tadsweep.backends.opentad import run

    run.detect(
        args.params,
        args.config,
        args.opentad_root,
        args.work_dir,
        args.out,
        gpus=args.gpus,
        checkpoint=args.checkpoint,
        torchrun=shlex.split(args.torchrun) if args.torchrun else None,
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
