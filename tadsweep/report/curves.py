"""Parse OpenTAD's plain-text `log.json` into one row per training epoch (curves.tsv).

The file is not JSON: it is Python logging output,
`%(asctime)s %(name)s %(levelname)s: %(message)s`, appended by every run that uses the work dir
(first run, each resume, test.py with the same work dir). Lines that do not start with a timestamp
are continuations (the merged config dump, tracebacks) and are skipped. What is read, from the
`Train` logger only:

- `[Train]: Epoch {e} started` -- e is 0-based (the loop is `range(resume_epoch + 1, end_epoch)`).
  A repeated epoch (training resumed from an older checkpoint) discards what was recorded for that
  epoch and every later one: the latest attempt wins.
- `[Train]: [{e:03d}][{i:05d}/{n:05d}]  Loss=..  cls_loss=..  reg_loss=..  lr_backbone=..  lr_det=..
  mem=..MB` -- losses are running means over the epoch so far, so the line with i == n is the
  epoch's mean loss (`loss`); `loss_mean` is the mean over the epoch's printed lines. Epochs whose
  last iteration was never printed (killed mid-epoch) are dropped.
- `Average-mAP: {:.2f} (%)` and `mAP at tIoU {:.2f} is {:.2f}%` -- evaluations carry no epoch and
  belong to the latest `Epoch N started`; printed percentages become fractions.

`Test` logger lines (tools/test.py appending to the same file) never touch the training curves.
A last line without a newline was cut by a crash and is ignored, as is a cut fragment that the next
run's first record was appended to; a malformed line anywhere else is an InputError naming file
and line.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tadsweep import cli
from tadsweep.atomic import atomic_path
from tadsweep.detections.evaluate import tiou_columns
from tadsweep.errors import InputError

# then "average_mAP" and one mAP@t per tIoU the log evaluates (the study's evaluation.tious)
COLUMNS = [
    "epoch",
    "iter",
    "loss",
    "loss_mean",
    "cls_loss",
    "reg_loss",
    "lr_backbone",
    "lr_det",
    "mem_mb",
]

_NUM = r"[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf)"
_RECORD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (\S+) ([A-Z]+): (.*)$")
_GLUED = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (?:Train|Test) [A-Z]+: ")
_EPOCH_STARTED = re.compile(r"^\[Train\]: Epoch (\d+) started$")
_ITER_HEAD = re.compile(r"^\[Train\]: \[(\d+)\]\[(\d+)/(\d+)\]")
_ITER_LINE = re.compile(
    r"^\[Train\]: \[(\d+)\]\[(\d+)/(\d+)\]((?:\s+\w+=" + _NUM + r"(?:MB)?)+)\s*$"
)
_KEY_VALUE = re.compile(r"(\w+)=(" + _NUM + r")(MB)?")
_AVG_MAP_HEAD = "Average-mAP:"
_AVG_MAP = re.compile(r"^Average-mAP:\s*(" + _NUM + r") \(%\)$")
_TIOU_HEAD = "mAP at tIoU"
_TIOU_MAP = re.compile(r"^mAP at tIoU (" + _NUM + r") is\s*(" + _NUM + r")%$")


@dataclass
class _Epoch:
    epoch: int
    iters: list[dict] = field(default_factory=list)  # one dict per printed iteration line
    last_iter: int | None = None
    num_iters: int | None = None  # n as printed: index of the epoch's last iteration
    evals: dict = field(default_factory=dict)

    def complete(self) -> bool:
        return self.last_iter is not None and self.last_iter == self.num_iters


def _read_lines(path: Path) -> list[str]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read log ({e.strerror})") from None
    lines = data.split(b"\n")
    # A file ending in "\n" splits into [..., b""]; anything else means the last write was cut.
    lines.pop()
    out = []
    for number, raw in enumerate(lines, start=1):
        try:
            out.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError:
            raise InputError(f"{path}:{number}: log line is not UTF-8 text") from None
    return out


def _parse_iter(message: str, where: str) -> tuple[int, int, int, dict]:
    m = _ITER_LINE.match(message)
    if not m:
        raise InputError(f"{where}: malformed training line: {message[:120]!r}")
    values = {key: float(value) for key, value, _unit in _KEY_VALUE.findall(m.group(4))}
    if "Loss" not in values:
        raise InputError(f"{where}: training line without Loss=: {message[:120]!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), values


def _parse_messages(path: Path) -> list[_Epoch]:
    epochs: dict[int, _Epoch] = {}
    current: _Epoch | None = None
    for number, line in enumerate(_read_lines(path), start=1):
        where = f"{path}:{number}"
        if "\x00" in line:
            raise InputError(f"{where}: NUL bytes in log line")
        if glued := _GLUED.search(line, 1):
            # A run killed mid-write left a fragment; the next run's first record follows it.
            line = line[glued.start() :]
        record = _RECORD.match(line)
        if not record or record.group(2) != "Train":
            continue  # config dump / traceback continuation, or another logger (Test)
        message = record.group(4)
        if m := _EPOCH_STARTED.match(message):
            epoch = int(m.group(1))
            for stale in [e for e in epochs if e >= epoch]:
                del epochs[stale]
            current = epochs[epoch] = _Epoch(epoch)
        elif _ITER_HEAD.match(message):
            epoch, i, n, values = _parse_iter(message, where)
            if current is None or current.epoch != epoch:
                raise InputError(f"{where}: iteration line of epoch {epoch} outside that epoch")
            current.iters.append(values)
            current.last_iter, current.num_iters = i, n
        elif message.startswith(_AVG_MAP_HEAD):
            m = _AVG_MAP.match(message)
            if not m:
                raise InputError(f"{where}: malformed Average-mAP line: {message[:120]!r}")
            if current is not None:
                current.evals["average_mAP"] = float(m.group(1)) / 100.0
        elif message.startswith(_TIOU_HEAD):
            m = _TIOU_MAP.match(message)
            if not m:
                raise InputError(f"{where}: malformed mAP-at-tIoU line: {message[:120]!r}")
            column = f"mAP@{round(float(m.group(1)), 2):g}"
            if current is not None:
                current.evals[column] = float(m.group(2)) / 100.0
    return [epochs[e] for e in sorted(epochs)]


def _row(ep: _Epoch) -> dict:
    last = ep.iters[-1]
    losses = [v["Loss"] for v in ep.iters]
    row = {
        "epoch": ep.epoch,
        "iter": ep.last_iter,
        "loss": last["Loss"],
        "loss_mean": sum(losses) / len(losses),
        "cls_loss": last.get("cls_loss", math.nan),
        "reg_loss": last.get("reg_loss", math.nan),
        "lr_backbone": last.get("lr_backbone", math.nan),
        "lr_det": last.get("lr_det", math.nan),
        "mem_mb": last.get("mem", math.nan),
    }
    return row | ep.evals


def parse_log(path: str | Path) -> pd.DataFrame:
    """One row per completed epoch (0-based, as printed): losses, LRs, memory, evaluations."""
    rows = [_row(ep) for ep in _parse_messages(Path(path)) if ep.complete()]
    per_tiou = tiou_columns({c for row in rows for c in row})
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "average_mAP", *per_tiou])
    frame["epoch"] = frame["epoch"].astype("int64")
    frame["iter"] = frame["iter"].astype("int64")
    for column in frame.columns[2:]:
        frame[column] = frame[column].astype("float64")
    return frame


def write_tsv(frame: pd.DataFrame, out: str | Path) -> None:
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, na_rep="NaN")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tadsweep.report.curves",
        description="OpenTAD training log (log.json) -> per-epoch curves (TSV).",
    )
    ap.add_argument("log", help="the run's log.json")
    ap.add_argument("out", help="curves.tsv to write")
    args = ap.parse_args(argv)
    cli.check_outputs([args.log], [args.out])
    write_tsv(parse_log(args.log), args.out)
    return 0


if __name__ == "__main__":
    cli.run(main)
