"""CLI of the OpenTAD backend: render, train and detect (the last two inside the container)."""

import argparse

from tadsweep import cli


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help="params.json of the run")
    p.add_argument("--config", required=True, help="rendered OpenTAD config of the run")
    p.add_argument("--opentad-root", required=True, help="OpenTAD checkout (cwd of torchrun)")
    p.add_argument("--gpus", type=int, default=1, help="processes = GPUs on this node")
    p.add_argument("--work-dir", required=True, help="the run's log.json and checkpoint/")


def main(argv=None) -> int:
    from tadsweep.backends.opentad import render

    parser = argparse.ArgumentParser(prog="python -m tadsweep.backends.opentad")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="params.json -> the run's OpenTAD config")
    render.add_arguments(r)
    t = sub.add_parser("train", help="train or resume; write --done at the end")
    _common(t)
    t.add_argument("--done", required=True, help="train.json, written only after the last epoch")
    d = sub.add_parser("detect", help="pre-NMS candidates of one checkpoint")
    _common(d)
    d.add_argument("--out", required=True, help="candidates.npz")
    args = parser.parse_args(argv)
    keys = ("params", "config", "annotation_path", "class_map", "pretrain")
    cli.check_outputs(
        [getattr(args, k, None) for k in keys],
        [getattr(args, k, None) for k in ("out", "done")],
        [getattr(args, "work_dir", None), getattr(args, "reference", None)],
    )
    if args.command == "render":
        return render.command(args)
    from tadsweep.backends.opentad import run

    where = (args.params, args.config, args.opentad_root, args.work_dir)
    if args.command == "train":
        run.train(*where, args.done, gpus=args.gpus)
    else:
        run.detect(*where, args.out, gpus=args.gpus)
    return 0


if __name__ == "__main__":
    cli.run(main)
