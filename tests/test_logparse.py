"""tadsweep.report.curves on logs in OpenTAD's exact formats (train_engine, mAP, logger)."""

import math
import subprocess
import sys

import pandas as pd
import pytest
from mmengine.config import Config

from tadsweep.errors import InputError
from tadsweep.report.curves import COLUMNS, parse_log

# the log evaluates at upstream's THUMOS thresholds: one column each
EVALUATED = [*COLUMNS, "average_mAP", *(f"mAP@{t}" for t in (0.3, 0.4, 0.5, 0.6, 0.7))]

TS = "2024-12-23 09:48:10"


def rec(message, logger="Train"):
    # logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    return f"{TS} {logger} INFO: {message}\n"


def config_dump(logger="Train"):
    cfg = Config(
        dict(
            workflow=dict(end_epoch=4, val_start_epoch=1, val_eval_interval=2),
            dataset=dict(train=dict(pipeline=[dict(type="mmaction.ImgAug", transforms="default")])),
            work_dir="exps/x/gpu1_id0/",
        )
    )
    return (
        rec("Using torch version: 2.0.1+cu118, CUDA version: 11.8", logger)
        + rec(f"Config: \n{cfg.pretty_text}", logger)
        + rec("Using DDP with total 1 GPUS...", logger)
        + rec("Using Model EMA...", logger)
    )


def iter_line(e, i, n, loss, cls, reg, lr_bb=2e-4, lr_det=1e-4, mem=5123.4):
    block1 = f"[Train]: [{e:03d}][{i:05d}/{n:05d}]"
    block2 = f"Loss={loss:.4f}"
    block3 = [f"{k:s}={v:.4f}" for k, v in (("cls_loss", cls), ("reg_loss", reg))]
    block4 = f"lr_backbone={lr_bb:.1e}" + "  " + f"lr_det={lr_det:.1e}"
    block5 = f"mem={mem:.0f}MB"
    return rec("  ".join([block1, block2, "  ".join(block3), block4, block5]))


def eval_lines(avg, maps, logger="Train"):
    out = rec("Evaluation starts...", logger)
    out += rec("Loaded annotations from validation subset.", logger)
    out += rec("Number of ground truth instances: 3325", logger)
    out += rec("Number of predictions: 422000", logger)
    out += rec("Fixed threshold for tiou score: [0.3, 0.4, 0.5, 0.6, 0.7]", logger)
    out += rec(f"Average-mAP: {avg * 100:>4.2f} (%)", logger)
    for t, m in zip([0.3, 0.4, 0.5, 0.6, 0.7], maps):
        out += rec(f"mAP at tIoU {t:.2f} is {m * 100:>4.2f}%", logger)
    return out


def epoch_block(e, base, n=99, interval=50):
    out = rec(f"[Train]: Epoch {e:d} started")
    for i in range(n + 1):
        if (i != 0 and i % interval == 0) or i == n:
            out += iter_line(e, i, n, base + i / 1000, base / 2, base / 4)
    return out


def first_run(epochs=4):
    text = config_dump() + rec("Training Starts...\n")
    for e in range(epochs):
        text += epoch_block(e, 1.0 - e * 0.1)
        if e >= 1 and (e + 1) % 2 == 0:
            text += eval_lines(0.40 + e / 100, [0.6, 0.55, 0.45, 0.35, 0.25])
    return text + rec("Training Over...\n")


def test_full_log_one_row_per_epoch(tmp_path):
    log = tmp_path / "log.json"
    log.write_text(first_run())
    df = parse_log(log)
    assert list(df.columns) == EVALUATED
    assert df["epoch"].tolist() == [0, 1, 2, 3]  # 0-based, as printed
    assert df["iter"].tolist() == [99] * 4
    row = df.set_index("epoch").loc[1]
    assert row["loss"] == pytest.approx(0.9 + 0.099)  # the i == n line (epoch running mean)
    assert row["loss_mean"] == pytest.approx(((0.9 + 0.05) + (0.9 + 0.099)) / 2)
    assert row["cls_loss"] == pytest.approx(0.45) and row["reg_loss"] == pytest.approx(0.225)
    assert row["lr_backbone"] == pytest.approx(2e-4) and row["lr_det"] == pytest.approx(1e-4)
    assert row["mem_mb"] == 5123
    assert row["average_mAP"] == pytest.approx(0.41)
    assert row["mAP@0.3"] == pytest.approx(0.60) and row["mAP@0.7"] == pytest.approx(0.25)
    # epochs 0 and 2 were not evaluated
    assert df["average_mAP"].isna().tolist() == [True, False, True, False]


def test_resume_keeps_latest_attempt_and_test_log_is_ignored(tmp_path):
    # run 1 dies during epoch 3 (after evaluating epoch 1 and finishing epoch 2); the last
    # line is cut mid-write. Run 2 resumes from epoch_1.pth, so epochs 2.. are repeated.
    text = config_dump() + rec("Training Starts...\n")
    text += epoch_block(0, 1.0) + epoch_block(1, 0.9) + eval_lines(0.30, [0.5] * 5)
    text += epoch_block(2, 0.8) + rec("[Train]: Epoch 3 started")
    text += iter_line(3, 50, 99, 0.7, 0.3, 0.2)
    text += f"{TS} Train INFO: [Train]: [003][00060/00099]  Loss=0.6"  # cut, no newline:
    # the resumed run's first record is glued onto the fragment
    text += config_dump() + rec("Resume training from: exps/x/gpu1_id0/checkpoint/epoch_1.pth")
    text += rec("Resume epoch is 1") + rec("Training Starts...\n")
    text += epoch_block(2, 0.5) + epoch_block(3, 0.4) + eval_lines(0.52, [0.7, 0.6, 0.5, 0.4, 0.3])
    text += rec("Training Over...\n")
    # tools/test.py appending to the same work dir: other logger, its own config dump and eval
    text += config_dump("Test") + rec("Loading checkpoint from: x/epoch_3.pth", "Test")
    text += rec("Checkpoint is epoch 3.", "Test") + rec("Testing Starts...\n", "Test")
    text += eval_lines(0.99, [0.99] * 5, "Test") + rec("Testing Over...\n", "Test")
    log = tmp_path / "log.json"
    log.write_text(text)
    df = parse_log(log).set_index("epoch")
    assert df.index.tolist() == [0, 1, 2, 3]
    assert df.loc[1, "average_mAP"] == pytest.approx(0.30)
    assert df.loc[2, "loss"] == pytest.approx(0.5 + 0.099)  # second attempt, not 0.8..
    assert df.loc[3, "loss"] == pytest.approx(0.4 + 0.099)
    assert df.loc[3, "average_mAP"] == pytest.approx(0.52)  # not the Test logger's 0.99


def test_interrupted_log_drops_incomplete_epoch_and_partial_line(tmp_path):
    text = config_dump() + epoch_block(0, 1.0) + rec("[Train]: Epoch 1 started")
    text += iter_line(1, 50, 99, 0.9, 0.4, 0.2)
    text += f"{TS} Train INFO: [Train]: [001][00099/00099]  Loss=0.8"  # cut mid-line
    log = tmp_path / "log.json"
    log.write_text(text)
    df = parse_log(log)
    assert df["epoch"].tolist() == [0]


def test_nan_values(tmp_path):
    text = config_dump() + rec("[Train]: Epoch 0 started")
    text += iter_line(0, 99, 99, math.nan, math.nan, 0.1)
    text += eval_lines(math.nan, [math.nan, 0.5, 0.4, 0.3, 0.2])
    assert "Loss=nan" in text and "Average-mAP:  nan (%)" in text and "is  nan%" in text
    log = tmp_path / "log.json"
    log.write_text(text)
    row = parse_log(log).iloc[0]
    assert math.isnan(row["loss"]) and math.isnan(row["average_mAP"]) and math.isnan(row["mAP@0.3"])
    assert row["mAP@0.4"] == pytest.approx(0.5) and row["reg_loss"] == pytest.approx(0.1)


def test_frozen_backbone_has_no_lr_backbone(tmp_path):
    line = "[Train]: [000][00009/00009]  Loss=0.5000  cls_loss=0.3000  reg_loss=0.2000  "
    line += "lr_det=1.0e-04  mem=100MB"
    log = tmp_path / "log.json"
    log.write_text(rec("[Train]: Epoch 0 started") + rec(line))
    row = parse_log(log).iloc[0]
    assert math.isnan(row["lr_backbone"]) and row["lr_det"] == pytest.approx(1e-4)


def test_empty_log_gives_empty_table(tmp_path):
    log = tmp_path / "log.json"
    log.write_text(config_dump())
    df = parse_log(log)
    assert df.empty and list(df.columns) == [*COLUMNS, "average_mAP"]


@pytest.mark.parametrize(
    "bad, line_no",
    [
        (rec("[Train]: [000][00099/00099]  Loss=abc  lr_det=1.0e-04  mem=1MB"), 2),
        (rec("Average-mAP: n/a (%)"), 2),
        (rec("mAP at tIoU 0.30 is high"), 2),
    ],
)
def test_corrupt_line_names_file_and_line(tmp_path, bad, line_no):
    log = tmp_path / "log.json"
    log.write_text(rec("[Train]: Epoch 0 started") + bad + rec("[Train]: Epoch 1 started"))
    with pytest.raises(InputError, match=rf"log\.json:{line_no}: ") as info:
        parse_log(log)
    assert "\n" not in str(info.value)


def test_binary_garbage_is_input_error(tmp_path):
    log = tmp_path / "log.json"
    log.write_bytes(rec("[Train]: Epoch 0 started").encode() + b"\xff\xfe\x00\n" + b"more\n")
    with pytest.raises(InputError, match=r"log\.json:2: "):
        parse_log(log)


def test_cli_writes_tsv_atomically(tmp_path):
    log = tmp_path / "log.json"
    log.write_text(first_run())
    out = tmp_path / "sub" / "curves.tsv"
    subprocess.run([sys.executable, "-m", "tadsweep.report.curves", str(log), str(out)], check=True)
    df = pd.read_csv(out, sep="\t")
    assert list(df.columns) == EVALUATED and len(df) == 4
    assert df["average_mAP"].isna().sum() == 2
    assert [p.name for p in out.parent.iterdir()] == ["curves.tsv"]  # no temp file left


def test_cli_corrupt_input_one_line_error(tmp_path):
    log = tmp_path / "log.json"
    log.write_text(rec("[Train]: Epoch 0 started") + rec("Average-mAP: ?? (%)") + "x\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tadsweep.report.curves", str(log), str(tmp_path / "o.tsv")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2  # bad input
    assert proc.stderr.count("\n") == 1 and f"{log}:2:" in proc.stderr
    assert not (tmp_path / "o.tsv").exists()


# ----------------------------------------------------------------------------- what a value may be
# (docs/operations.md). The refusals are in test_fuzz.py.


def run_curves(log, out):
    return subprocess.run(
        [sys.executable, "-m", "tadsweep.report.curves", str(log), str(out)],
        capture_output=True,
        text=True,
    )


def test_a_diverged_run_is_kept_with_one_warning_naming_the_line(tmp_path):
    """NaN and infinite losses are a real event: parse_log keeps them (the doctor reports them),
    and the CLI writes them to curves.tsv with one warning line naming the first."""
    text = config_dump() + epoch_block(0, 1.0)  # lines 1-4 (dump continuation lines aside)
    text += rec("[Train]: Epoch 1 started") + iter_line(1, 50, 99, math.inf, 0.5, 0.2)
    text += iter_line(1, 99, 99, math.nan, math.nan, 0.2)
    text += rec("[Train]: Epoch 2 started") + iter_line(2, 99, 99, math.nan, math.nan, math.nan)
    log = tmp_path / "log.json"
    log.write_text(text)
    first_bad = text.splitlines().index(iter_line(1, 50, 99, math.inf, 0.5, 0.2).rstrip()) + 1
    df = parse_log(log)
    assert df["epoch"].tolist() == [0, 1, 2]
    assert math.isnan(df.loc[1, "loss"]) and math.isnan(df.loc[1, "loss_mean"])  # inf + nan
    out = tmp_path / "curves.tsv"
    proc = run_curves(log, out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"warning: {log}:{first_bad}: non-finite loss (inf) at epoch 1: a diverged run; kept as "
        "inf (and 1 later epoch(s))"
    ]
    written = pd.read_csv(out, sep="\t")
    assert written["loss"].isna().tolist() == [False, True, True]


def test_an_evaluation_without_a_number_is_kept_with_a_warning(tmp_path):
    text = rec("[Train]: Epoch 0 started") + iter_line(0, 99, 99, 0.5, 0.3, 0.2)
    text += eval_lines(math.nan, [math.nan, 0.5, 0.4, 0.3, 0.2])
    log = tmp_path / "log.json"
    log.write_text(text)
    proc = run_curves(log, tmp_path / "c.tsv")
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"warning: {log}:8: mAP nan at epoch 0: the evaluation gave no number")


def test_values_at_their_bounds_are_accepted(tmp_path):
    line = "[Train]: [2147483647][00009/00009]  Loss=-0.0000  cls_loss=0.0000  reg_loss=-0.0000  "
    line += "lr_backbone=0.0e+00  lr_det=0.0e+00  mem=0MB"
    text = rec("[Train]: Epoch 2147483647 started") + rec(line)
    text += rec("Average-mAP: 100.00 (%)") + rec("mAP at tIoU 1.00 is 0.00%")
    log = tmp_path / "log.json"
    log.write_text(text)
    proc = run_curves(log, tmp_path / "c.tsv")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    row = pd.read_csv(tmp_path / "c.tsv", sep="\t").iloc[0]
    assert row["epoch"] == 2**31 - 1 and row["loss"] == 0 and row["lr_det"] == 0
    assert row["average_mAP"] == 1.0 and row["mAP@1"] == 0.0


def test_a_log_without_a_completed_epoch_gives_no_rows_but_the_cli_refuses_it(tmp_path):
    """parse_log gives the doctor and `make status` an empty table; the CLI refuses: the
    workflow reads a log only after train.json, written after the last epoch."""
    log = tmp_path / "log.json"
    log.write_text(config_dump() + rec("[Train]: Epoch 0 started") + iter_line(0, 5, 9, 1, 1, 1))
    assert parse_log(log).empty
    started = 1 + config_dump().count("\n")
    proc = run_curves(log, tmp_path / "c.tsv")
    assert proc.returncode == 2 and not (tmp_path / "c.tsv").exists()
    assert proc.stderr == (
        f"error: {log}:{started}: epoch 0 started here never completed, and no epoch did "
        "(no [000][n/n] line): no curves to write\n"
    )


def test_a_log_past_the_cap_is_refused(tmp_path, monkeypatch):
    from tadsweep.report import curves

    log = tmp_path / "log.json"
    log.write_text(first_run())
    monkeypatch.setattr(curves, "MAX_LOG_BYTES", log.stat().st_size - 1)
    with pytest.raises(InputError, match=rf"^{log}: larger than \d+ bytes; not a log$"):
        parse_log(log)
    monkeypatch.setattr(curves, "MAX_LOG_BYTES", log.stat().st_size)
    assert len(parse_log(log)) == 4
