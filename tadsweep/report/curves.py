"""Parse OpenTAD's plain-text `log.json` (Python logging output, appended by every run, resume
and test.py in the work dir) into one row per completed training epoch (curves.tsv).

Only the `Train` logger counts; lines without a timestamp (config dumps, tracebacks) are skipped.
`Epoch e started` (0-based) opens an epoch; a repeated epoch (a resume from an older checkpoint)
discards it and every later one. Iteration lines carry running means, so the `[e][n/n]` line gives
the epoch's `loss` (`loss_mean`: the mean over its printed lines); epochs never printed to their
last iteration are dropped. Evaluations (percent, stored as fractions) belong to the latest epoch
started. A last line cut by a crash is ignored. What values may be, and what is refused or kept
with a warning: docs/operations.md, "What a training log may hold".
"""

import argparse
import itertools
import math
import re
import sys
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

MAX_INDEX = 2**31 - 1  # epochs and iterations: the config's integer cap
MAX_LOG_BYTES = 1 << 28  # a 60-epoch THUMOS log with its config dumps is a few MB
MAX_LINE_BYTES = 1 << 20
LOSSES = ("Loss", "cls_loss", "reg_loss")  # never negative; NaN / inf: a diverged run
FINITE = {"lr_backbone": "a learning rate", "lr_det": "a learning rate", "mem": "memory use"}

_NUM = r"[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf)"
_STAMP = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")  # a record's first 20 bytes
_RECORD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (\S+) ([A-Z]+): (.*)$")
_GLUED = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (?:Train|Test) [A-Z]+: ")
_EPOCH_STARTED = re.compile(r"^\[Train\]: Epoch (\d+) started$")
_ITER_HEAD = re.compile(r"^\[Train\]: \[(\d+)\]\[(\d+)/(\d+)\]")
_ITER_LINE = re.compile(_ITER_HEAD.pattern + r"((?:\s+\w+=" + _NUM + r"(?:MB)?)+)\s*$")
_KEY_VALUE = re.compile(r"(\w+)=(" + _NUM + r")(MB)?")
_AVG_MAP = re.compile(r"^Average-mAP:\s*(" + _NUM + r") \(%\)$")
_TIOU_MAP = re.compile(r"^mAP at tIoU (" + _NUM + r") is\s*(" + _NUM + r")%$")


@dataclass
class _Epoch:
    epoch: int
    where: str  # file:line of its `Epoch N started`
    iters: list[dict] = field(default_factory=list)  # one dict per printed iteration line
    last_iter: int | None = None
    complete: bool = False  # its last iteration line was `[e][n/n]`
    evals: dict = field(default_factory=dict)
    kept: dict = field(default_factory=dict)  # kind -> (file:line, value): non-finite, kept


def _lines(path: Path):
    """(number, text) of each whole line; the last one, without its newline, was cut by a crash
    and is left out. Capped: a line, and the file (a pipe or /dev/zero stops at the cap)."""
    total = 0
    try:
        with open(path, "rb") as fh:
            for number in itertools.count(1):
                raw = fh.readline(MAX_LINE_BYTES + 1)
                total += len(raw)
                if total > MAX_LOG_BYTES:
                    raise InputError(f"{path}: larger than {MAX_LOG_BYTES} bytes; not a log")
                if not raw.endswith(b"\n"):
                    if len(raw) > MAX_LINE_BYTES:
                        raise InputError(
                            f"{path}:{number}: line longer than {MAX_LINE_BYTES} bytes; not a log"
                        )
                    if number == 1 and len(raw) >= 20 and not _STAMP.match(raw):
                        raise _not_a_log(f"{path}:1", raw.decode("utf-8", "replace"))
                    return  # end of file, or a last write that was cut
                try:
                    yield number, raw[:-1].decode("utf-8").rstrip("\r")
                except UnicodeDecodeError:
                    if number == 1:
                        raise _not_a_log(f"{path}:1", raw.decode("utf-8", "replace")) from None
                    raise InputError(f"{path}:{number}: log line is not UTF-8 text") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read log ({e.strerror or e})") from None


def _not_a_log(where: str, line: str) -> InputError:
    head = line[:40]
    shown = repr(head) if head.isprintable() else "binary data (gzip, npz?)"
    return InputError(
        f"{where}: not an OpenTAD log: its lines start 'YYYY-MM-DD HH:MM:SS <logger> <LEVEL>: ' "
        f"(is this the run's work/log.json?), not {shown}"
    )


def _index(text: str, what: str, where: str) -> int:
    """An epoch or iteration number, at most MAX_INDEX (checked before int(): a 5000-digit number
    is beyond Python's int() of text)."""
    if len(text) > len(str(MAX_INDEX)) or int(text) > MAX_INDEX:
        raise InputError(f"{where}: {what} {text[:30]} is beyond any schedule (at most 2^31 - 1)")
    return int(text)


def _parse_iter(message: str, where: str) -> tuple[int, int, int, dict]:
    m = _ITER_LINE.match(message)
    if not m:
        raise InputError(f"{where}: malformed training line: {message[:120]!r}")
    values = {key: float(value) for key, value, _unit in _KEY_VALUE.findall(m.group(4))}
    if "Loss" not in values:
        raise InputError(f"{where}: training line without Loss=: {message[:120]!r}")
    epoch = _index(m.group(1), "epoch", where)
    i, n = _index(m.group(2), "iteration", where), _index(m.group(3), "iteration", where)
    if i > n:
        raise InputError(f"{where}: iteration {i} of an epoch whose last is {n}")
    for key in LOSSES:
        if values.get(key, 0.0) < 0:
            raise InputError(f"{where}: {key}={values[key]:g} is negative; a loss cannot be")
    for key, what in FINITE.items():
        value = values.get(key, 0.0)
        if not (math.isfinite(value) and value >= 0):
            raise InputError(f"{where}: {key}={value:g}: {what} is finite and not negative")
    return epoch, i, n, values


def _percent(text: str, what: str, where: str) -> float:
    """A printed mAP as a fraction: 0 to 100 %, or NaN (the evaluator found no ground truth)."""
    value = float(text)
    if not (math.isnan(value) or 0 <= value <= 100):
        raise InputError(f"{where}: {what} is {value:g}%: not a percentage in [0, 100]")
    return value / 100.0


def _evaluation(message: str, where: str) -> tuple[str, float]:
    """(column, fraction) of an Average-mAP or a mAP-at-tIoU line."""
    if message.startswith("Average-mAP:"):
        m = _AVG_MAP.match(message)
        if not m:
            raise InputError(f"{where}: malformed Average-mAP line: {message[:120]!r}")
        return "average_mAP", _percent(m.group(1), "Average-mAP", where)
    m = _TIOU_MAP.match(message)
    if not m:
        raise InputError(f"{where}: malformed mAP-at-tIoU line: {message[:120]!r}")
    tiou = float(m.group(1))
    if not 0 < tiou <= 1:
        raise InputError(f"{where}: tIoU {tiou:g} is not in (0, 1]")
    return f"mAP@{round(tiou, 2):g}", _percent(m.group(2), f"mAP at tIoU {tiou:g}", where)


def _read(path: Path) -> tuple[list[_Epoch], int]:
    """Every epoch started, complete or not, in epoch order; and the number of whole lines."""
    epochs: dict[int, _Epoch] = {}
    current: _Epoch | None = None
    number = 0
    for number, line in _lines(path):
        where = f"{path}:{number}"
        if glued := _GLUED.search(line, 1):
            # A run killed mid-write left a fragment; the next run's first record follows it.
            line = line[glued.start() :]
        record = _RECORD.match(line)
        if number == 1 and not record:
            raise _not_a_log(where, line)
        if "\x00" in line:
            raise InputError(f"{where}: NUL bytes in log line")
        if not record or record.group(2) != "Train":
            continue  # config dump / traceback continuation, or another logger (Test)
        message = record.group(4)
        if m := _EPOCH_STARTED.match(message):
            epoch = _index(m.group(1), "epoch", where)
            for stale in [e for e in epochs if e >= epoch]:
                del epochs[stale]
            current = epochs[epoch] = _Epoch(epoch, where)
        elif _ITER_HEAD.match(message):
            epoch, i, n, values = _parse_iter(message, where)
            if current is None or current.epoch != epoch:
                raise InputError(f"{where}: iteration line of epoch {epoch} outside that epoch")
            current.iters.append(values)
            current.last_iter, current.complete = i, i == n
            if not math.isfinite(values["Loss"]):
                current.kept.setdefault("loss", (where, values["Loss"]))
        elif message.startswith(("Average-mAP:", "mAP at tIoU")):
            key, value = _evaluation(message, where)
            if current is not None:
                current.evals[key] = value
                if math.isnan(value):
                    current.kept.setdefault("mAP", (where, value))
    return [epochs[e] for e in sorted(epochs)], number


def _row(ep: _Epoch) -> dict:
    last = ep.iters[-1]
    losses = [v["Loss"] for v in ep.iters]
    row = {"epoch": ep.epoch, "iter": ep.last_iter, "loss": last["Loss"]}
    row["loss_mean"] = sum(losses) / len(losses)
    # the rest as the last line prints them (mem_mb: "mem=..MB")
    row |= {c: last.get(c.removesuffix("_mb"), math.nan) for c in COLUMNS[4:]}
    return row | ep.evals


def _frame(epochs: list[_Epoch]) -> pd.DataFrame:
    rows = [_row(ep) for ep in epochs]
    per_tiou = tiou_columns({c for row in rows for c in row})
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "average_mAP", *per_tiou])
    return frame.astype({c: "int64" if c in ("epoch", "iter") else "float64" for c in frame})


def parse_log(path: str | Path) -> pd.DataFrame:
    """One row per completed epoch (0-based, as printed): losses, LRs, memory, evaluations. A log
    with no completed epoch gives no rows; a diverged run's NaN or infinite losses are kept."""
    return _frame([ep for ep in _read(Path(path))[0] if ep.complete])


def curves(path: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """What the CLI writes: the rows of parse_log, and one warning line per kind of non-finite
    value kept (a diverged loss, an evaluation that gave no number), naming its first line. A log
    with no completed epoch is an InputError naming the file and, where one started, its line."""
    epochs, lines = _read(Path(path))
    done = [ep for ep in epochs if ep.complete]
    if not done:
        if epochs:
            ep = epochs[-1]
            raise InputError(
                f"{ep.where}: epoch {ep.epoch} started here never completed, and no epoch did "
                f"(no [{ep.epoch:03d}][n/n] line): no curves to write"
            )
        what = f"no '[Train]: Epoch N started' in its {lines} lines" if lines else "empty"
        raise InputError(f"{path}: {what}: not a training log with a completed epoch")
    warnings = []
    for kind, text in (
        ("loss", "non-finite loss ({value}) at epoch {epoch}: a diverged run; kept as {value}"),
        ("mAP", "mAP {value} at epoch {epoch}: the evaluation gave no number; kept as NaN"),
    ):
        hits = [(ep, ep.kept[kind]) for ep in done if kind in ep.kept]
        if hits:
            (ep, (where, value)), more = hits[0], len(hits) - 1
            line = f"{where}: " + text.format(value=value, epoch=ep.epoch)
            warnings.append(line + (f" (and {more} later epoch(s))" if more else ""))
    return _frame(done), warnings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tadsweep.report.curves",
        description="OpenTAD training log (log.json) -> per-epoch curves (TSV). Refuses a log "
        "with no completed epoch or with values that cannot be; keeps a diverged run's NaN loss "
        "with a warning.",
    )
    ap.add_argument("log", help="the run's log.json")
    ap.add_argument("out", help="curves.tsv to write")
    args = ap.parse_args(argv)
    cli.check_outputs([args.log], [args.out])
    frame, warnings = curves(args.log)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    with atomic_path(args.out) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, na_rep="NaN")
    return 0


if __name__ == "__main__":
    cli.run(main)
