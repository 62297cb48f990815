"""Command line of the demo backend: data, pretrain, train, detect."""

import argparse

from tadsweep import cli
from tadsweep.plan.rundir import final_checkpoint


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tadsweep.backends.demo",
        description="Embedded demo backend: synthetic data, a small AdaTAD+LoRA detector, CPU.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="write a synthetic dataset in OpenTAD's formats")
    p.add_argument("--out", required=True, help="dataset folder")
    # bounded as the config's demo section bounds them (cli.config_value)
    p.add_argument("--seed", type=cli.config_value("demo.data_seed"), default=0)
    p.add_argument("--videos-train", type=cli.config_value("demo.videos_train"), default=40)
    p.add_argument("--videos-val", type=cli.config_value("demo.videos_val"), default=30)
    p.add_argument("--classes", type=cli.config_value("demo.classes"), default=5)

    p = sub.add_parser("pretrain", help="self-supervised pretraining of the frozen backbone")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="backbone.pt to write")
    p.add_argument("--seed", type=int, default=0)

    train = sub.add_parser("train", help="train one run (resumes from WORK/checkpoint)")
    detect = sub.add_parser("detect", help="pre-NMS candidates of the last epoch (validation set)")
    for q in (train, detect):
        for name in ("--params", "--data", "--backbone", "--work-dir"):
            q.add_argument(name, required=True)
    train.add_argument("--done", required=True, help="train.json, written after the last epoch")
    detect.add_argument("--out", required=True, help="candidates.npz")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "data":  # --out is the dataset's folder
        cli.check_outputs(dirs=[args.out])
        from tadsweep.backends.demo.data import generate

        generate(args.out, args.seed, args.videos_train, args.videos_val, args.classes)
        return 0
    ins = [getattr(args, k, None) for k in ("params", "data", "backbone")]
    outs = [getattr(args, k, None) for k in ("out", "done")]
    cli.check_outputs(ins, outs, [getattr(args, "work_dir", None)])
    if args.command == "pretrain":
        from tadsweep.backends.demo.pretrain import pretrain

        info = pretrain(args.data, args.out, args.seed)
        print(f"pretrained backbone -> {args.out} ({info})")
    elif args.command == "train":
        from tadsweep.backends.demo.train import train

        train(args.params, args.data, args.backbone, args.work_dir, args.done)
    else:
        from tadsweep.backends.demo.detect import detect

        checkpoint = final_checkpoint(args.params, args.work_dir)
        count = detect(args.params, args.data, args.backbone, checkpoint, args.out)
        print(f"{count} candidates -> {args.out}")
    return 0


if __name__ == "__main__":
    cli.run(main)
