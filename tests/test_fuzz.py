"""Hostile inputs, table-driven: configs, the files the CLIs read, run state and arguments. Every
case must stop with a non-zero exit and exactly one error line naming the file and the key or
entry -- no traceback, no input changed, nothing written, no injected command run.

Config cases run through `python -m tadsweep.plan` (in process); a representative subset also
through `snakemake -n` (in parallel: each waits about 10 s on the SLURM plugin's probe), the image
injection through the SLURM profile with the apptainer double. The corrupt-run-state cases check
that a dry-run reports the file in one line and goes on, and the e2e case that a deleted
winner.json retrains nothing."""

from __future__ import annotations

import copy
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from cases import set_dotted

from tadsweep import cli
from tadsweep.plan import rundir, runs
from tadsweep.plan.config import load_study

ROOT = Path(__file__).resolve().parent.parent
DEMO_TEXT = (ROOT / "configs" / "demo.yaml").read_text()
DEMO = yaml.safe_load(DEMO_TEXT)
MARKER = "PWNED"  # what an injected command would create, in the case's folder


# ----------------------------------------------------------------------------- config cases


def with_value(path: str, value) -> bytes:
    """demo.yaml with the dotted `path` set to `value` (integers index lists)."""
    cfg = copy.deepcopy(DEMO)
    *parents, leaf = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = cfg
    for p in parents:
        node = node.setdefault(p, {}) if isinstance(node, dict) else node[p]
    node[leaf] = value
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True).encode()


def with_text(old: str, new: str) -> bytes:
    assert old in DEMO_TEXT, old
    return DEMO_TEXT.replace(old, new, 1).encode()


def shown(key: str) -> str:
    """A dotted key as error lines write it: list indices in brackets."""
    return re.sub(r"\.(\d+)", r"[\1]", key)


def alias_bomb(levels: int) -> bytes:
    items = ['&a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    items += [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return with_text("  description: >-\n", f"  description: [{', '.join(items)}]\n  x: >-\n")


BAD_NAMES = [
    "a;id", "a b", "../x", "x/y", "dé", "demo\n", "a" * 5000, "", "-x", "$(id)", "`id`",
    "a'b", 'a"b', "a\\b", "a,b", "a+b", "a=b", "a{b}", "a*", ".hidden",
]  # fmt: skip
INJECT = [
    "/x/img.sif;touch {m};", "$(touch {m})", "`touch {m}`", "img.sif && touch {m}",
    "img.sif|touch {m}", "img.sif\ntouch {m}", "img.sif > {m}", "a b.sif", "x:y.sif",
    "x,y.sif", "docker://x;touch {m}",
]  # fmt: skip
BAD_RESULTS = ["", "/abs", "../x", "a/../b", "res{run}", "./x", "a b", "x;touch {m}", "r\n"]
BAD_SITE = ["a;b", "$(touch {m})", "a b", "x\n", "g:1;id"]


def config_cases():
    cases = []
    for i, name in enumerate(BAD_NAMES):
        cases += [
            (f"study.name-{i}", with_value("study.name", name), "study.name"),
            (f"phase-name-{i}", with_value(f"phases.{name}", {"base": "baseline"}), "phases"),
            (f"variant-name-{i}", with_value(f"variants.lora.{name}", {"r": 2}), "variants.lora"),
            (f"subset-{i}", with_value("evaluation.subset", name), "evaluation.subset"),
        ]
    for i, image in enumerate(INJECT):
        cases.append((f"image-{i}", with_value("container.image", image), "container.image"))
    for key in ("opentad_root", "base_config", "annotation", "video_dir", "pretrained"):
        for i, path in enumerate(INJECT[:4]):
            cases.append((f"paths.{key}-{i}", with_value(f"paths.{key}", path), f"paths.{key}"))
    for i, results in enumerate(BAD_RESULTS):
        cases.append((f"results-{i}", with_value("study.results", results), "study.results"))
    for key in ("slurm_partition", "slurm_account", "train.gres", "train.gpu_model"):
        for i, value in enumerate(BAD_SITE):
            cases.append((f"{key}-{i}", with_value(f"resources.{key}", value), key))
    for key in (
        "variants.schedule.v1.lr", "resources.minutes_per_epoch", "model.head_lr",
        "postprocess.default.sigma", "claims.0.low", "variants.lora.A.alpha",
        "variants.structure.all.drop_path_rate", "resources.runtime_margin",
    ):  # fmt: skip
        for v in (float("nan"), float("inf"), float("-inf")):
            cases.append((f"{key}={v}", with_value(key, v), shown(key)))
    for key in ("study.seeds.0", "demo.data_seed", "resources.train.mem_mb", "model.depth"):
        cases.append((f"{key}=1e40", with_value(key, 10**40), shown(key)))
    for key, text in (
        ("variants.schedule.v1.lr", "2e-3"), ("postprocess.default.sigma", "0.5"),
        ("variants.schedule.v1.epochs", "8"), ("study.seeds.0", "1"),
    ):  # fmt: skip
        cases.append((f"text-{key}", with_value(key, text), shown(key)))
    # names equal ignoring case: one folder on a case-insensitive filesystem (Hardening II, 5)
    for key, name, value in (
        ("variants.lora", "a", {"r": 2}), ("variants.lora", "b", {"r": 2}),
        ("variants.schedule", "V1", {"lr": 1e-3, "warmup_epoch": 0, "epochs": 2}),
        ("variants.structure", "ALL", {"adapter_index": "all"}),
    ):  # fmt: skip
        cases.append((f"case-{key}-{name}", with_value(f"{key}.{name}", value), f"{key}: "))
    for name in ("P1", "P3"):
        phase = f"  {name}: {{base: p1, arms: [{{lora: B}}]}}\n"
        cases.append((f"case-phases-{name}", with_text("  p2:\n", phase + "  p2:\n"), "phases: "))
    # sizes past any study: bounds stated in the schema (axes: in their declarations)
    for key, value in (
        ("variants.lora.A.r", 10**9), ("demo.classes", 10**9), ("demo.videos_train", 10**6),
        ("variants.schedule.v1.epochs", 10**6), ("resources.train.gpus", 1000),
        ("resources.train.mem_mb", 10**9), ("model.depth", 10**6), ("ensemble.top_k", 10**4),
        ("variants.lora.A.alpha", 1e9), ("variants.schedule.v1.lr", 50.0),
        ("postprocess.default.sigma", 1e9), ("postprocess.grid.max_seg_num.0", 10**8),
        ("postprocess.default.min_score", 5.0), ("claims.0.high", 1e6),
        ("resources.minutes_per_epoch", 1e9),
    ):  # fmt: skip
        cases.append((f"max-{key}", with_value(key, value), f"{shown(key)}: "))
    cases += [
        ("dup-study", with_text("model:\n", "study: {name: other, backend: opentad}\nmodel:\n"),
         "duplicate key 'study'"),
        ("dup-nested", with_text("    v2: {lr", "    v1: {lr: 1.0, warmup_epoch: 1, epochs: 2}\n"
                                 "    v2: {lr"), "duplicate key 'v1'"),
        ("dup-flow", with_text("  seeds: [1, 2]", "  seeds: [1, 2]\n  seeds: [3]"),
         "duplicate key 'seeds'"),
        ("alias-bomb-5", alias_bomb(5), "values"),
        ("alias-bomb-7", alias_bomb(7), "values"),
        ("deep-100", with_text("  description: >-\n", "  x: " + "[" * 100 + "]" * 100 +
                               "\n  description: >-\n"), "nested deeper"),
        ("deep-5000", with_text("  description: >-\n", "  x: " + "[" * 5000 + "]" * 5000 +
                                "\n  description: >-\n"), "nested deeper"),
        ("binary", bytes(range(256)) * 4, "UTF-8"),
        ("latin-1", with_text("Embedded demo", "Embedded démo").decode().encode("latin-1"),
         "UTF-8"),
        ("utf-16", DEMO_TEXT.encode("utf-16"), "UTF-8"),
        ("empty", b"", "mapping"),
        ("list", b"- study\n- name\n", "mapping"),
        ("huge", DEMO_TEXT.encode() + b"# " + b"x" * (2 << 20) + b"\n", "larger than"),
        ("nul", with_text("Embedded", "Embed\0ded"), "invalid YAML"),
        ("tabs", with_text("  name: demo", "\tname: demo"), "invalid YAML"),
        ("python-tag", with_text("  name: demo", "  name: !!python/object/apply:os.system [id]"),
         "invalid YAML"),
    ]  # fmt: skip
    return cases


CONFIG_CASES = config_cases()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def run_cli(main, argv, capsys) -> tuple[int, str]:
    try:
        rc = cli.status(main, argv)
    except SystemExit as exc:  # argparse's own refusals
        rc = exc.code
    err = capsys.readouterr().err
    return rc, err


def assert_one_line(rc, err: str, *names: str) -> str:
    assert rc not in (0, None), err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err[-2000:]
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def check_config(tmp_path, content: bytes, key: str, capsys):
    from tadsweep.plan.__main__ import main

    path = tmp_path / "study.yaml"
    path.write_bytes(content.replace(b"{m}", str(tmp_path / MARKER).encode()))
    before = snapshot(tmp_path)
    rc, err = run_cli(main, [str(path)], capsys)
    line = assert_one_line(rc, err, str(path), key)
    assert len(line) < 700
    assert snapshot(tmp_path) == before  # the config unchanged, nothing written
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize(
    "content,key", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_config_is_refused_in_one_line(tmp_path, content, key, capsys):
    check_config(tmp_path, content, key, capsys)


def test_the_corpus_is_large():
    assert len(CONFIG_CASES) + len(CLI_CASES) + len(ARG_CASES) + len(STATE_CASES) >= 150


# ----------------------------------------------------------------------------- CLI files

GT = {
    "database": {
        "v1": {"subset": "validation", "annotations": [{"segment": [1.0, 3.0], "label": "a"}]},
        "v2": {"subset": "validation", "annotations": [{"segment": [2.0, 5.0], "label": "b"}]},
    }
}
PRED = {
    "results": {
        "v1": [{"segment": [1.0, 3.0], "label": "a", "score": 0.9}],
        "v2": [{"segment": [2.0, 5.0], "label": "b", "score": 0.8}],
    }
}
GRID = [{"setting": "default"}, {"setting": "s001", "sigma": 0.5}]


def _j(obj) -> bytes:
    return json.dumps(obj).encode()


def _gt_with(segment=None, raw=None) -> bytes:
    gt = copy.deepcopy(GT)
    if segment is not None:
        gt["database"]["v1"]["annotations"][0]["segment"] = segment
    return raw if raw is not None else _j(gt)


def _pred_with(**entry) -> bytes:
    pred = copy.deepcopy(PRED)
    pred["results"]["v1"][0].update(entry)
    return _j(pred)


DUP_VIDEO = (
    b'{"results": {"v1": [{"segment": [1.0, 3.0], "label": "a", "score": 0.9}], '
    b'"v1": [{"segment": [1.0, 3.0], "label": "a", "score": 0.1}]}}'
)
DUP_GT = (
    b'{"database": {"v1": {"subset": "validation", "annotations": []}, "v1": {"subset": '
    b'"validation", "annotations": [{"segment": [1.0, 3.0], "label": "a"}]}}}'
)
BAD_JSON = {
    "binary": bytes(range(256)),
    "latin-1": '{"x": "é"}'.encode("latin-1"),
    "truncated": b'{"results": {"v1": [',
    "deep": b"[" * 5000 + b"]" * 5000,
    "gzip-truncated": gzip.compress(b'{"results": {}}')[:-6],
    "empty": b"",
}


def cli_cases():
    """(id, module, argv template, {file name: bytes}, expected words). Templates name files
    with {name}; every file is written in the case's folder."""
    from tadsweep.detections import ensemble, evaluate, postprocess
    from tadsweep.plan import select
    from tadsweep.report import collect, curves, headline

    ev = (evaluate.main, ["{gt}", "{pred}"])
    cases = []
    for seg, word in (([3.0, 1.0], "inverted"), ([-1.0, 2.0], "negative"), (["1", 3.0], "numbers")):
        cases.append((f"gt-segment-{seg}", *ev, {"gt": _gt_with(seg), "pred": _j(PRED)},
                      ["gt", 'database["v1"].annotations[0].segment', word]))  # fmt: skip
    cases.append(("gt-dup-video", *ev, {"gt": DUP_GT, "pred": _j(PRED)}, ["gt", "duplicate key"]))
    for name, raw in BAD_JSON.items():
        cases.append((f"gt-{name}", *ev, {"gt": raw, "pred": _j(PRED)}, ["gt"]))
        cases.append((f"pred-{name}", *ev, {"gt": _j(GT), "pred": raw}, ["pred"]))
    for entry, word in (
        ({"score": "0.5"}, ".score"), ({"score": True}, ".score"), ({"score": None}, ".score"),
        ({"segment": ["1", 3.0]}, ".segment"), ({"segment": [True, 3.0]}, ".segment"),
        ({"segment": [3.0, 1.0]}, ".segment"), ({"segment": [-1.0, 1.0]}, ".segment"),
        ({"label": 3}, ".label"),
    ):  # fmt: skip
        cases.append((f"pred-{entry}", *ev, {"gt": _j(GT), "pred": _pred_with(**entry)},
                       ["pred", 'results["v1"][0]', word]))  # fmt: skip
    cases.append(("pred-dup-video", *ev, {"gt": _j(GT), "pred": DUP_VIDEO}, ["duplicate key"]))
    # values outside what a detector gives or a video holds (Hardening II)
    for entry, word in (
        ({"score": 1.5}, ".score: above 1"), ({"score": -0.1}, ".score: negative"),
        ({"segment": [1e308, 1.7e308]}, ".segment: ends at 1.7e+308 s"),
        ({"segment": [-1e308, 1.0]}, ".segment: negative start"),
    ):  # fmt: skip
        pred = {"pred": _pred_with(**entry)}
        cases.append((f"pred-range-{entry}", *ev, {"gt": _j(GT), **pred},
                      ["pred", 'results["v1"][0]', word]))  # fmt: skip
        cases.append((f"apply-range-{entry}", postprocess.main, ["apply", "{pred}", "{out_json}"],
                      pred, ["pred", 'results["v1"][0]', word]))  # fmt: skip
    long_gt = copy.deepcopy(GT)
    long_gt["database"]["v1"]["duration"] = 100.0
    late = {"gt": _j(long_gt), "pred": _pred_with(segment=[150.0, 250.0])}
    cases.append(("pred-past-duration", *ev, late, ["pred", 'results["v1"][0].segment',
                  "twice the video's"]))  # fmt: skip
    for value in (-5.0, "100", float("nan"), True):
        bad_gt = copy.deepcopy(GT)
        bad_gt["database"]["v1"]["duration"] = value
        cases.append((f"gt-duration-{value}", *ev, {"gt": _j(bad_gt), "pred": _j(PRED)},
                      ["gt", 'database["v1"].duration']))  # fmt: skip
    cases.append(("pred-score-7.5", *ev, {"gt": _j(GT), "pred": _pred_with(score=7.5)},
                  ["pred", 'results["v1"][0].score: above 1']))  # fmt: skip
    for value in (0, 0.0, 1e300):  # a duration is finite and > 0
        bad_gt = copy.deepcopy(GT)
        bad_gt["database"]["v1"]["duration"] = value
        cases.append((f"gt-duration-{value}", *ev, {"gt": _j(bad_gt), "pred": _j(PRED)},
                      ["gt", 'database["v1"].duration: ', "(0, 1e+07]"]))  # fmt: skip
    for seg, duration, word in (
        ([150.0, 250.0], 100.0, "outside the video"), ([10.0, 201.0], 100.0, "outside the video"),
        ([0.0, 2e7], None, "later than any video"), ([1e308, 1.7e308], 100.0, "later than any"),
    ):  # fmt: skip
        bad_gt = json.loads(_gt_with(seg))
        if duration:
            bad_gt["database"]["v1"]["duration"] = duration
        cases.append((f"gt-segment-{seg}-{duration}", *ev, {"gt": _j(bad_gt), "pred": _j(PRED)},
                      ["gt", 'database["v1"].annotations[0].segment: ', word]))  # fmt: skip
    cases.append(("pred-nan", *ev, {"gt": _j(GT), "pred": b'{"results": {"v1": [{"segment": '
                  b'[1.0, 3.0], "label": "a", "score": NaN}]}}'}, ["pred", ".score"]))  # fmt: skip

    sw = (postprocess.main, ["sweep", "--gt", "{gt}", "--candidates", "{pred}", "--grid",
                             "{grid}", "--out", "{out_tsv}", "--save-dir", "{save}"])  # fmt: skip
    for sid in ("../../x", "a/b", "/abs", "", "x\n", 3, "..", "a;b"):
        grid = [{"setting": sid}]
        cases.append((f"sweep-setting-{sid!r}", *sw, {"gt": _j(GT), "pred": _j(PRED),
                      "grid": _j(grid)}, ["grid", "[0].setting"]))  # fmt: skip
    for name, raw in BAD_JSON.items():
        cases.append((f"grid-{name}", *sw, {"gt": _j(GT), "pred": _j(PRED), "grid": raw},
                      ["grid"]))  # fmt: skip
    cases.append(("grid-text-number", *sw, {"gt": _j(GT), "pred": _j(PRED),
                  "grid": _j([{"setting": "x", "sigma": "0.5"}])}, ["grid", "sigma"]))  # fmt: skip
    for a, b in (("S1", "s1"), ("default", "DEFAULT"), ("x.Y", "X.y")):  # one file name
        grid = _j([{"setting": a}, {"setting": b, "sigma": 0.5}])
        cases.append((f"grid-case-{b}", *sw, {"gt": _j(GT), "pred": _j(PRED), "grid": grid},
                      ["grid", "[1].setting", "ignoring case"]))  # fmt: skip
    dup = b'[{"setting": "a", "setting": "b"}]'
    cases.append(("grid-dup-key", *sw, {"gt": _j(GT), "pred": _j(PRED), "grid": dup},
                  ["grid", "duplicate key"]))  # fmt: skip

    ap = (postprocess.main, ["apply", "{pred}", "{out_json}", "--setting", "{setting}"])
    for name, raw in {**BAD_JSON, "list": b"[1]", "text": b'{"sigma": "0.5"}'}.items():
        cases.append((f"apply-setting-{name}", *ap, {"pred": _j(PRED), "setting": raw},
                      ["setting"]))  # fmt: skip
    en = (ensemble.main, ["--gt", "{gt}", "--candidates", "{pred}", "{pred2}", "--setting",
                          "{setting}", "--out", "{out_tsv}"])  # fmt: skip
    for name, raw in BAD_JSON.items():
        cases.append((f"ensemble-setting-{name}", *en, {"gt": _j(GT), "pred": _j(PRED),
                      "pred2": _j(PRED), "setting": raw}, ["setting"]))  # fmt: skip

    winner = {"variants": {"lora": "v1"}, "run_ids": []}
    sel = (select.main, ["--phase", "p2", "--params", "{params}", "--sweeps", "{sweep}",
                         "--incumbent", "{winner}", "--metric", "average_mAP", "--aggregate",
                         "mean", "--winner", "{out_json}", "--ranking", "{out_tsv}"])  # fmt: skip
    sweep = b"setting\taverage_mAP\ndefault\t0.5\n"
    params = _j({"phase": "p2", "config_id": "p2/base", "run_id": "p2/base/seed=1", "seed": 1,
                 "variants": {"lora": "v1"}})  # fmt: skip
    for name, raw in {**BAD_JSON, "no-variants": _j({"run_ids": []}), "list": b"[]",
                      "partial": _j(winner)}.items():  # fmt: skip
        cases.append((f"select-winner-{name}", *sel, {"params": params, "sweep": sweep,
                      "winner": raw}, ["winner"]))  # fmt: skip
    for name, raw in BAD_JSON.items():
        cases.append((f"select-params-{name}", *sel, {"params": raw, "sweep": sweep,
                      "winner": _j(winner)}, ["params"]))  # fmt: skip

    co = (collect.main, ["--failed-params", "{params}", "--failed", "{failed}", "--gpus", "1",
                         "--out", "{out_tsv}"])  # fmt: skip
    for name, raw in {**BAD_JSON, "list": b"[]", "no-step": b"{}"}.items():
        cases.append((f"collect-failed-{name}", *co, {"params": params, "failed": raw},
                      ["failed"]))  # fmt: skip
    cu = (curves.main, ["{log}", "{out_tsv}"])
    cases.append(("curves-missing", *cu, {}, ["log"]))
    hl = (headline.main, ["{headline}", "--html", "{out_html}"])
    for name, raw in BAD_JSON.items():
        cases.append((f"headline-{name}", *hl, {"headline": raw}, ["headline"]))
    return cases


CLI_CASES = cli_cases()


def fill(template: list, tmp_path: Path) -> list[str]:
    return [str(a).format_map(_Files(tmp_path)) for a in template]


class _Files(dict):
    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    def __missing__(self, key):
        return str(self.folder / key)


def check_cli(tmp_path, main, template, files, words, capsys):
    for name, raw in files.items():
        (tmp_path / name).write_bytes(raw)
    before = snapshot(tmp_path)
    argv = fill(template, tmp_path)
    rc, err = run_cli(main, argv, capsys)
    assert_one_line(rc, err, *[str(tmp_path / w) if w in files else w for w in words])
    assert snapshot(tmp_path) == before  # inputs byte-identical, no output written
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


@pytest.mark.parametrize(
    "main,template,files,words", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_file_is_refused_in_one_line(tmp_path, main, template, files, words, capsys):
    check_cli(tmp_path, main, template, files, words, capsys)


# A child that reports its peak resident memory (kB) after running the command.
PEAK = """import resource, subprocess, sys
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.stderr.write(p.stderr)"""


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> Path:
    """A few hundred kB each on disk, past the cap inflated: a gzip bomb (600 MiB of zeros), an
    .npz whose member inflates to as much, and a gzip of valid JSON padded with 300 MiB of
    whitespace; beside them a ground truth, a setting and a FIFO nobody writes to."""
    import zipfile
    import zlib

    folder = tmp_path_factory.mktemp("bombs")
    zeros, n = bytes(1 << 20), 600
    gz = zlib.compressobj(1, zlib.DEFLATED, 31)
    (folder / "bomb.json.gz").write_bytes(b"".join(gz.compress(zeros) for _ in range(n)) +
                                          gz.flush())  # fmt: skip
    with (
        zipfile.ZipFile(folder / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("start.npy", "w", force_zip64=True) as fh,
    ):
        for _ in range(n):
            fh.write(zeros)
    gz, pred, blank = zlib.compressobj(1, zlib.DEFLATED, 31), _j(PRED), b" " * (1 << 20)
    padded = [gz.compress(pred[:-1]), *(gz.compress(blank) for _ in range(300))]
    (folder / "padded.json.gz").write_bytes(b"".join([*padded, gz.compress(b"}"), gz.flush()]))
    assert sum(f.stat().st_size for f in folder.iterdir()) < 8 << 20
    (folder / "gt.json").write_bytes(_j(GT))
    (folder / "setting.json").write_bytes(b"{}")
    os.mkfifo(folder / "fifo")
    return folder


EVALUATE = [sys.executable, "-m", "tadsweep.detections.evaluate"]
ENSEMBLE = [sys.executable, "-m", "tadsweep.detections.ensemble", "--gt", "gt.json",
            "--candidates", "gt.json", "setting.json", "--setting", "setting.json", "--out",
            "o.tsv", "--top-k", "2", "--sweeps"]  # fmt: skip
APPLY = [sys.executable, "-m", "tadsweep.detections.postprocess", "apply"]
# (id, command, the file named, the cap it passes); files are the bombs fixture's
BOMB_CASES = [
    ("pred-dev-zero", [*EVALUATE, "gt.json", "/dev/zero"], "/dev/zero", None),
    ("gt-dev-zero", [*EVALUATE, "/dev/zero", "gt.json"], "/dev/zero", None),
    ("pred-gzip-bomb", [*EVALUATE, "gt.json", "bomb.json.gz"], "bomb.json.gz", None),
    ("pred-npz-bomb", [*EVALUATE, "gt.json", "bomb.npz"], "bomb.npz", None),
    ("pred-padded-json", [*EVALUATE, "gt.json", "padded.json.gz"], "padded.json.gz", None),
    ("apply-gzip-bomb", [*APPLY, "bomb.json.gz", "out.json"], "bomb.json.gz", None),
    ("apply-padded-json", [*APPLY, "padded.json.gz", "out.json"], "padded.json.gz", None),
    ("ensemble-sweeps-dev-zero", [*ENSEMBLE, "/dev/zero", "/dev/zero"], "/dev/zero", "tsv"),
]


def peak_run(cmd: list[str], cwd: Path, env=None, timeout=120) -> tuple[int, int, str]:
    """(exit status, peak resident kB, stderr) of `cmd` in a fresh child (RUSAGE_CHILDREN)."""
    res = subprocess.run([sys.executable, "-c", PEAK, *cmd], capture_output=True, text=True,
                         cwd=cwd, env=env, timeout=timeout)  # fmt: skip
    rc, peak_kb = map(int, res.stdout.split())
    return rc, peak_kb, res.stderr


@pytest.mark.parametrize(
    "cmd,named,cap", [c[1:] for c in BOMB_CASES], ids=[c[0] for c in BOMB_CASES]
)
def test_endless_and_bomb_inputs_are_refused_within_1gb(bombs, cmd, named, cap):
    """/dev/zero, a gzip bomb, an .npz whose member inflates past the cap and valid JSON padded
    past it are refused in one line naming the file and the cap and how to raise it, reading at
    most the cap (readers.detections_cap, streamed): the command stays under 1 GB resident."""
    from tadsweep import readers

    before = snapshot(bombs)
    rc, peak_kb, err = peak_run(cmd, bombs)
    assert rc == 2 and "Traceback" not in err, err[-2000:]
    if cap == "tsv":
        want = readers.too_large(named, readers.MAX_TSV_BYTES)
    else:
        want = readers.too_large(named, readers.detections_cap(), readers.CAP_ENV)
    assert err == f"error: {want}\n"
    assert f"${readers.CAP_ENV}=MiB" in err or cap == "tsv"
    assert peak_kb < 1 << 20, (cmd, peak_kb)  # under 1 GiB resident
    assert snapshot(bombs) == before and not (bombs / "out.json").exists()


def test_a_fifo_nobody_writes_is_an_empty_file_not_a_hang(bombs):
    rc, _, err = peak_run([*EVALUATE, "gt.json", "fifo"], bombs, timeout=60)
    assert rc == 2 and err == "error: fifo: empty file\n", err


@pytest.mark.parametrize("mb,rc", [("1", 2), ("4", 0), ("0", 2), ("x", 2), ("99999999", 2)])
def test_the_detections_cap_is_raised_by_its_variable(tmp_path, monkeypatch, capsys, mb, rc):
    """$TADSWEEP_MAX_DETECTIONS_MB (whole MiB): a 2 MiB file is refused at 1, read at 4; a value
    that is no MiB count is one line naming the variable."""
    from tadsweep import readers
    from tadsweep.detections import evaluate

    pred = copy.deepcopy(PRED)
    pred["results"]["v1"] *= 30_000  # 2 MiB of JSON
    (tmp_path / "gt.json").write_bytes(_j(GT))
    (tmp_path / "pred.json").write_bytes(_j(pred))
    assert 1 << 20 < (tmp_path / "pred.json").stat().st_size < 4 << 20
    monkeypatch.setenv(readers.CAP_ENV, mb)
    before = snapshot(tmp_path)
    got, err = run_cli(evaluate.main, [str(tmp_path / "gt.json"), str(tmp_path / "pred.json")],
                       capsys)  # fmt: skip
    assert got == rc, err
    if rc:
        named = "pred.json" if mb == "1" else f"${readers.CAP_ENV}"
        assert_one_line(got, err, named, readers.CAP_ENV)
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- arguments


def arg_cases():
    from tadsweep.detections import ensemble, evaluate, postprocess
    from tadsweep.plan import __main__ as plan_main
    from tadsweep.plan import select
    from tadsweep.report import collect, curves, headline, plots, stats, status

    ok = {"gt": _j(GT), "pred": _j(PRED), "pred2": _j(PRED), "grid": _j(GRID),
          "setting": b"{}", "log": b"", "headline": b"{}", "config": DEMO_TEXT.encode(),
          "params": b"{}", "sweep": b"setting\taverage_mAP\ndefault\t0.5\n"}  # fmt: skip
    cases = []
    for value in ("nan", "2.0", "-0.5", "0", "abc", "inf", "1.5"):
        cases += [
            (f"evaluate-tiou-{value}", evaluate.main, ["{gt}", "{pred}", "--tiou", value], ok,
             ["--tiou"]),
            (f"sweep-tiou-{value}", postprocess.main, ["sweep", "--gt", "{gt}", "--candidates",
             "{pred}", "--grid", "{grid}", "--out", "{o}", "--tiou", "0.5", value], ok,
             ["--tiou"]),
        ]  # fmt: skip
    # every `apply` option bounded as the config schema bounds its knob (detections/knobs.py)
    for flag, value in (
        ("--voting-thresh", "2"), ("--iou-threshold", "-0.5"), ("--sigma", "0"),
        ("--max-seg-num", "0"), ("--method", "7"), ("--min-score", "nan"), ("--sigma", "inf"),
        ("--video-topk", "1.5"), ("--video-thresh", "-1"), ("--t1", "x"),
    ):  # fmt: skip
        cases.append((f"apply{flag}={value}", postprocess.main, ["apply", "{pred}", "{o}", flag,
                      value], ok, [flag]))  # fmt: skip
    # an option standing for a config key: the schema's bounds (cli.config_value)
    from tadsweep.backends.demo.__main__ import main as demo_main

    en = ["--gt", "{gt}", "--candidates", "{pred}", "{pred2}", "--setting", "{setting}", "--out",
          "{o}", "--sweeps", "{sweep}", "{sweep}", "--top-k"]  # fmt: skip
    co = ["--params", "{params}", "--train", "{params}", "--curves", "{log}", "--sweeps",
          "{sweep}", "--out", "{o}", "--gpus"]  # fmt: skip
    for name, main, argv, flag in (
        ("demo-classes-1e9", demo_main, ["data", "--out", "{o}", "--classes", "1000000000"],
         "--classes"), ("demo-classes-1", demo_main, ["data", "--out", "{o}", "--classes", "1"],
         "--classes"), ("demo-videos-0", demo_main, ["data", "--out", "{o}", "--videos-val",
         "0"], "--videos-val"), ("demo-seed-nan", demo_main, ["data", "--out", "{o}", "--seed",
         "nan"], "--seed"), ("ensemble-top-k-1", ensemble.main, [*en, "1"], "--top-k"),
        ("ensemble-top-k-1e6", ensemble.main, [*en, "1000000"], "--top-k"),
        ("collect-gpus-0", collect.main, [*co, "0"], "--gpus"),
        ("collect-gpus-1e9", collect.main, [*co, "1000000000"], "--gpus"),
        ("status-stale-0", status.main, ["{sub}", "--stale-minutes", "0"], "--stale-minutes"),
        ("status-stale-1e20", status.main, ["{sub}", "--stale-minutes", "1e20"],
         "--stale-minutes"),
    ):  # fmt: skip
        cases.append((name, main, argv, ok, [flag]))
    # an output where nothing can be written: a read-only filesystem, below an existing file
    sw = ["sweep", "--gt", "{gt}", "--candidates", "{pred}", "--grid", "{grid}", "--out"]
    for name, main, argv, word in (
        ("apply-out-readonly", postprocess.main, ["apply", "{pred}", "/sys/out.json"],
         "/sys/out.json"), ("apply-out-below-file", postprocess.main, ["apply", "{pred}",
         "{pred2}/x/out.json"], "pred2"), ("sweep-out-readonly", postprocess.main,
         [*sw, "/sys/sweep.tsv"], "/sys/sweep.tsv"), ("sweep-save-dir-readonly",
         postprocess.main, [*sw, "{o}", "--save-dir", "/sys/saved"], "/sys/saved"),
        ("plan-tsv-below-file", plan_main.main, ["{config}", "--tsv", "{gt}/plan.tsv"], "gt"),
        ("ensemble-out-readonly", ensemble.main, ["--gt", "{gt}", "--candidates", "{pred}",
         "--setting", "{setting}", "--out", "/sys/ens.tsv"], "/sys/ens.tsv"),
    ):  # fmt: skip
        cases.append((name, main, argv, ok, [word]))
    for value in ("5", "0", "nan", "-1"):
        cases.append((f"match-iou-{value}", ensemble.main, ["--gt", "{gt}", "--candidates",
                      "{pred}", "--setting", "{setting}", "--out", "{o}", "--match-iou", value],
                      ok, ["--match-iou"]))  # fmt: skip
    same = [
        ("apply-in-in", postprocess.main, ["apply", "{pred}", "{pred}"], "pred"),
        ("sweep-out-gt", postprocess.main, ["sweep", "--gt", "{gt}", "--candidates", "{pred}",
         "--grid", "{grid}", "--out", "{gt}"], "gt"),
        ("sweep-out-grid", postprocess.main, ["sweep", "--gt", "{gt}", "--candidates", "{pred}",
         "--grid", "{grid}", "--out", "{grid}"], "grid"),
        ("sweep-save-dir-is-gt", postprocess.main, ["sweep", "--gt", "{gt}", "--candidates",
         "{pred}", "--grid", "{grid}", "--out", "{o}", "--save-dir", "{gt}"], "gt"),
        ("ensemble-out-member", ensemble.main, ["--gt", "{gt}", "--candidates", "{pred}",
         "{pred2}", "--setting", "{setting}", "--out", "{pred2}"], "pred2"),
        ("ensemble-out-setting", ensemble.main, ["--gt", "{gt}", "--candidates", "{pred}",
         "--setting", "{setting}", "--out", "{setting}"], "setting"),
        ("logparse-log-log", curves.main, ["{log}", "{log}"], "log"),
        ("logparse-dotdot", curves.main, ["{log}", "{sub}/../log"], "log"),
        ("select-winner-params", select.main, ["--phase", "p1", "--params", "{params}",
         "--sweeps", "{sweep}", "--metric", "average_mAP", "--aggregate", "mean", "--winner",
         "{params}", "--ranking", "{o}"], "params"),
        ("select-winner-ranking", select.main, ["--phase", "p1", "--params", "{params}",
         "--sweeps", "{sweep}", "--metric", "average_mAP", "--aggregate", "mean", "--winner",
         "{o}", "--ranking", "{o}"], "o"),
        ("collect-out-params", collect.main, ["--params", "{params}", "--train", "{params}",
         "--curves", "{log}", "--sweeps", "{sweep}", "--gpus", "1", "--out", "{sweep}"],
         "sweep"),
        ("headline-html-in", headline.main, ["{headline}", "--html", "{headline}"], "headline"),
        ("plan-tsv-config", plan_main.main, ["{config}", "--tsv", "{config}"], "config"),
        ("stats-out-dir-summary", stats.main, ["{sweep}", "--out-dir", "{sweep}"], "sweep"),
        ("plots-out-dir-summary", plots.main, ["--summary", "{sweep}", "--configs", "{sweep}",
         "--headline", "{params}", "--out-dir", "{params}"], "params"),
        ("apply-symlink", postprocess.main, ["apply", "{pred}", "{link}"], "link"),
        ("apply-hardlink", postprocess.main, ["apply", "{pred}", "{hard}"], "hard"),
        ("apply-out-dir", postprocess.main, ["apply", "{pred}", "{sub}"], "sub"),
        ("status-tsv-dir", status.main, ["{sub}", "--no-queue", "--tsv", "{sub}"], "sub"),
        ("evaluate-gt-dir", evaluate.main, ["{sub}", "{pred}"], "sub"),
    ]  # fmt: skip
    for name, main, argv, word in same:
        cases.append((name, main, argv, ok, [word]))
    return cases


ARG_CASES = arg_cases()


@pytest.mark.parametrize(
    "main,template,files,words", [c[1:] for c in ARG_CASES], ids=[c[0] for c in ARG_CASES]
)
def test_argument_is_refused_in_one_line(tmp_path, main, template, files, words, capsys):
    (tmp_path / "sub").mkdir()
    (tmp_path / "pred").write_bytes(files["pred"])
    (tmp_path / "link").symlink_to(tmp_path / "pred")
    os.link(tmp_path / "pred", tmp_path / "hard")
    files = {k: v for k, v in files.items() if k != "pred"}
    words = [w if w.startswith("--") else str(tmp_path / w) for w in words]
    check_cli(tmp_path, main, template, files, words, capsys)


# ----------------------------------------------------------------------------- run state


def demo_study(tmp_path) -> tuple[dict, Path]:
    cfg, _ = load_study(copy.deepcopy(DEMO))
    return cfg, tmp_path / "results" / "demo"


STATE_CASES = [
    ("params-garbage", "runs/p1/base/seed=1/params.json", b"{not json", "delete"),
    ("params-binary", "runs/p1/base/seed=1/params.json", bytes(range(256)), "UTF-8"),
    ("params-list", "runs/p1/base/seed=1/params.json", b"[]", "not a params.json"),
    ("params-dup", "runs/p1/base/seed=1/params.json", b'{"a": 1, "a": 2}', "duplicate key"),
    ("winner-garbage", "phases/p1/winner.json", b"{not json", "delete it"),
    ("winner-no-variants", "phases/p1/winner.json", b'{"run_ids": []}', "delete it"),
    ("winner-binary", "phases/p1/winner.json", bytes(range(256)), "UTF-8"),
    ("winner-list", "phases/p1/winner.json", b"[1, 2]", "delete it"),
    ("failed-binary", "runs/p1/base/seed=1/FAILED.json", bytes(range(256)), "UTF-8"),
    ("failed-list", "runs/p1/base/seed=1/FAILED.json", b"[]", "not a failure record"),
    ("failed-garbage", "runs/p1/base/seed=1/FAILED.json", b"\x00\x01", "delete it"),
    ("failed-empty", "runs/p1/base/seed=1/FAILED.json", b"", "empty"),
]


@pytest.mark.parametrize(
    "rel,content,word", [c[1:] for c in STATE_CASES], ids=[c[0] for c in STATE_CASES]
)
def test_corrupt_run_state_is_one_line_naming_the_file(tmp_path, rel, content, word):
    """What the Snakefile reads at parse time: each bad file is one line (a warning: one bad run
    never stops the study), naming the file; a failure record tadsweep did not write hides no
    run."""
    cfg, study = demo_study(tmp_path)
    run = runs.run_by_id(cfg)["p2/lora=B/seed=1"]
    saved = study / "runs" / run.run_id / "params.json"
    saved.parent.mkdir(parents=True)
    winner = {"variants": dict(cfg["baseline"]), "run_ids": ["p1/base/seed=1"]}
    saved.write_text(json.dumps(runs.resolve_params(cfg, run, winner["variants"])))
    (study / "phases" / "p1").mkdir(parents=True)
    (study / "phases" / "p1" / "winner.json").write_text(json.dumps(winner))
    base = study / "runs" / "p1" / "base" / "seed=1"
    base.mkdir(parents=True)
    (base / "params.json").write_text(json.dumps(runs.resolve_params(cfg, runs.expand(cfg)[0])))
    (study / rel).write_bytes(content)
    before = snapshot(tmp_path)
    problems = []
    markers = {rid: study / "runs" / rid / rundir.FAILED for rid in runs.run_by_id(cfg)}
    failed = rundir.failed_runs(markers, problems)
    saved_files = {rid: study / "runs" / rid / "params.json" for rid in runs.run_by_id(cfg)}
    winners = {ph: study / "phases" / ph / "winner.json" for ph in cfg["phases"]}
    lines = problems + runs.stale_runs(cfg, saved_files, winners)
    assert failed == {}  # a marker tadsweep did not write hides no run
    assert len(lines) == 1, lines
    assert str(study / rel) in lines[0] and word in lines[0], lines[0]
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- snakemake

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
BIN = ROOT / "tests" / "doubles" / "bin"


def snakemake(workdir: Path, *args, configfile=None):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env["APPTAINER_SHIM_LOG"] = str(workdir / "apptainer.log")
    cmd = [*SNAKEMAKE, *args, "--directory", str(workdir)]
    cmd += ["--configfile", str(configfile)] if configfile else []
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


SNAKEMAKE_SUBSET = [
    "study.name-0", "study.name-5", "study.name-6", "phase-name-2", "variant-name-1",
    "subset-9", "image-0", "image-1", "image-5", "paths.opentad_root-0", "results-0",
    "results-2", "results-4", "slurm_partition-1", "train.gres-3",
    "variants.schedule.v1.lr=nan", "resources.minutes_per_epoch=inf", "study.seeds.0=1e40",
    "text-variants.schedule.v1.lr", "dup-study", "dup-nested", "alias-bomb-7", "deep-5000",
    "binary", "latin-1", "huge", "python-tag",
]  # fmt: skip


def _dry_run_case(tmp_path: Path, case) -> tuple:
    """One config case through `snakemake -n`, as a user runs it: the study as config.yaml in the
    working directory (Snakemake reads --configfile itself first, see README)."""
    name, content, key = case
    work = tmp_path / name.replace("/", "_")
    work.mkdir()
    config = work / "config.yaml"
    config.write_bytes(content.replace(b"{m}", str(work / MARKER).encode()))
    before = config.read_bytes()
    res = snakemake(work, "-n", "--cores", "1")
    return case, work, before, res


def test_config_cases_stop_snakemake_dry_run_in_one_line(tmp_path):
    cases = [c for c in CONFIG_CASES if c[0] in SNAKEMAKE_SUBSET]
    assert len(cases) == len(SNAKEMAKE_SUBSET)
    with ThreadPoolExecutor(8) as pool:  # each waits on the SLURM plugin's probe, not the CPU
        results = list(pool.map(lambda c: _dry_run_case(tmp_path, c), cases))
    for (name, _, key), work, before, res in results:
        out = res.stdout + res.stderr
        assert res.returncode != 0, (name, out[-2000:])
        assert "Traceback" not in out, (name, out[-3000:])
        lines = [ln for ln in out.splitlines() if "config.yaml" in ln and key in ln]
        assert len(lines) == 1, (name, out[-3000:])
        # the line alone (Hardening II, 6): no "WorkflowError in file .../common.smk, line 27:"
        # and "File ..., in <module>" around it (cli.stop)
        assert res.returncode == 2 and out == f"{lines[0]}\n", (name, out[-3000:])
        assert lines[0].startswith("error: config.yaml: "), lines[0]
        assert (work / "config.yaml").read_bytes() == before
        assert not (work / MARKER).exists()
        assert not (work / "results").exists()  # refused before any job
    assert not Path("/demo").exists()


def test_image_injection_is_refused_through_the_slurm_profile(tmp_path):
    """The reported case: an existing image file whose name carries a command, through the SLURM
    profile (--sdm apptainer, the apptainer double on PATH), dry-run: refused before any job."""
    marker = tmp_path / MARKER  # the command would run in the working directory
    image = tmp_path / f"img.sif;touch {MARKER};"
    image.write_text("image")
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["container"]["image"] = str(image)
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = snakemake(tmp_path, "-n", "--profile", "slurm", configfile=config)
    out = res.stdout + res.stderr
    assert res.returncode == 2 and "Traceback" not in out, out[-3000:]
    assert "WorkflowError" not in out and "common.smk" not in out, out[-3000:]
    assert len([ln for ln in out.splitlines() if "container.image" in ln]) == 1, out[-3000:]
    assert str(config) in out
    assert not marker.exists() and not (tmp_path / "apptainer.log").exists()
    assert not (tmp_path / "results").exists()


def test_corrupt_run_state_never_stops_a_dry_run(tmp_path):
    """A garbage params.json, a binary FAILED.json and a FAILED.json holding a list: the
    dry-run warns in one line per file and plans the study."""
    study = tmp_path / "results" / "demo" / "runs"
    for rid, name, raw in (
        ("p1/base/seed=1", "params.json", b"{garbage"),
        ("p1/base/seed=2", "FAILED.json", bytes(range(256))),
        ("p1/lora=A/seed=1", "FAILED.json", b"[]"),
    ):
        (study / rid).mkdir(parents=True)
        (study / rid / name).write_bytes(raw)
    before = snapshot(tmp_path / "results")
    res = snakemake(tmp_path, "-n", "--cores", "1", configfile=ROOT / "configs" / "demo.yaml")
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "Traceback" not in out, out[-3000:]
    for rid, name in (("p1/base/seed=1", "params.json"), ("p1/base/seed=2", "FAILED.json"),
                      ("p1/lora=A/seed=1", "FAILED.json")):  # fmt: skip
        path = f"results/demo/runs/{rid}/{name}"
        warned = [ln for ln in out.splitlines() if path in ln and ln.startswith("tadsweep:")]
        assert len(warned) == 1, (path, out[-3000:])
    assert snapshot(tmp_path / "results") == before


def test_a_broken_winner_stops_the_dry_run_in_one_line(tmp_path):
    winner = tmp_path / "results" / "demo" / "phases" / "p1" / "winner.json"
    winner.parent.mkdir(parents=True)
    winner.write_bytes(b'{"config_id": "p1/base"}')
    res = snakemake(tmp_path, "-n", "--cores", "1", configfile=ROOT / "configs" / "demo.yaml")
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "Traceback" not in out, out[-3000:]
    assert len([ln for ln in out.splitlines() if "p1/winner.json" in ln]) == 1, out[-3000:]
    assert winner.read_bytes() == b'{"config_id": "p1/base"}'


# ----------------------------------------------------------------------------- winner.json

TINY = """
study: {name: tiny, backend: demo, seeds: [1]}
model: {depth: 4, batch_size: 2, head_lr: 3.0e-3, ema: false, amp: false, val_interval: 1,
        checkpoint_interval: 1, eval_window: 1}
baseline: {lora: v1, schedule: v1, augment: default, structure: all}
variants:
  lora: {v1: {r: 2, alpha: 4}, A: {r: 4, alpha: 8}}
  schedule: {v1: {lr: 2.0e-3, warmup_epoch: 0, epochs: 2}}
  augment: {default: {imgaug: default}}
  structure: {all: {adapter_index: all, drop_path_rate: 0.1}}
phases:
  p1: {base: baseline, arms: [{lora: A}]}
  p2: {base: p1, arms: [{lora: v1}]}
postprocess: {grid: {sigma: [0.5, 0.7]}}
ensemble: {enabled: false}
resources: {minutes_per_epoch: 0.01, train: {gpus: 1, cpus_per_gpu: 1, mem_mb: 1000},
            detect: {gpus: 1, cpus_per_gpu: 1, mem_mb: 1000, runtime_min: 5}}
demo: {data_seed: 0, videos_train: 8, videos_val: 6, classes: 2}
"""


@pytest.mark.e2e
def test_a_deleted_winner_is_rebuilt_and_retrains_nothing(tmp_path):
    """A deleted winner.json is a derived file: its own rule, select, makes it again from the
    phase's results (the same content), and resolve runs again for the runs resolved from it,
    keeping their params.json. Nothing trains, detects or sweeps."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    targets = [f"results/tiny/phases/{p}/winner.json" for p in ("p1", "p2")]  # as rule all
    study = tmp_path / "results" / "tiny"
    winner = study / "phases" / "p1" / "winner.json"

    def jobs(*args):
        res = snakemake(tmp_path, *args, "--cores", "2", *targets, configfile=config)
        out = res.stdout + res.stderr
        assert res.returncode == 0 and "Traceback" not in out, out[-3000:]
        return {k: int(n) for k, n in re.findall(r"^(\w+)\s+(\d+)$", out, re.M) if k != "total"}

    env_path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    os.environ["PATH"], old = env_path, os.environ["PATH"]  # the jobs' python
    try:
        jobs()
        saved = winner.read_bytes()
        records = {p: p.read_bytes() for p in study.glob("runs/**/params.json")}
        done = {p: p.stat().st_mtime_ns for p in study.glob("runs/**/*.*") if p.is_file()}
        winner.unlink()
        assert jobs("-n") == {"select": 2, "resolve": 1}  # p1's winner, p2's run, p2's winner
        assert jobs() == {"select": 2, "resolve": 1}
        assert winner.read_bytes() == saved  # rebuilt from the runs: the same content
        assert {p: p.read_bytes() for p in records} == records
        params = {p for p in done if p.name == "params.json"}  # resolve touched p2's
        assert {p: p.stat().st_mtime_ns for p in set(done) - params} == {
            p: t for p, t in done.items() if p not in params
        }  # no run's other file was written again
        assert jobs("-n") == {}  # nothing to be done
        # its results gone too: the deleted run trains again, and nothing else does
        shutil.rmtree(study / "runs" / "p1" / "lora=A")
        winner.unlink()
        assert jobs("-n")["train"] == 1
    finally:
        os.environ["PATH"] = old


# ----------------------------------------------------------------------------- training logs
# `python -m tadsweep.report.curves LOG OUT.tsv` (Hardening II, 3): a log with no completed epoch,
# or with a value that cannot be, is one line naming the file and the line (the rule:
# docs/operations.md). A diverged run's NaN loss is kept: tests/test_logparse.py.

_STAMP = "2024-12-23 09:48:10"


def _rec(message: str, logger: str = "Train") -> str:
    return f"{_STAMP} {logger} INFO: {message}\n"


def _iter(e="000", i="00099", n="00099", loss="0.5000", cls="0.3000", reg="0.2000",
          lr_bb="2.0e-04", lr_det="1.0e-04", mem="100"):  # fmt: skip
    return _rec(f"[Train]: [{e}][{i}/{n}]  Loss={loss}  cls_loss={cls}  reg_loss={reg}  "
                f"lr_backbone={lr_bb}  lr_det={lr_det}  mem={mem}MB")  # fmt: skip


# lines 1-3: setup, a completed epoch 0; the hostile record is line 4
_GOOD = _rec("Using torch version: 2.0.1") + _rec("[Train]: Epoch 0 started") + _iter()
_NPZ = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(256)) * 4


def log_cases():
    """(id, log bytes, where: "LINE" or "" for the file alone, a word of the message)."""
    big = "1" + "0" * 20  # epoch 10^20: was an OverflowError traceback
    digits = "9" * 5000  # beyond Python's int() of text (4300 digits)

    def line4(message: str) -> bytes:
        return (_GOOD + _rec(message)).encode()

    def line5(**values) -> bytes:
        return (_GOOD + _rec("[Train]: Epoch 1 started") + _iter(e="001", **values)).encode()

    test_py = _rec("Testing Starts...", "Test") + _rec("Average-mAP: 50.00 (%)", "Test")
    unfinished = _rec("x") + _rec("[Train]: Epoch 0 started") + _iter(i="00050")
    return [
        # no completed epoch: was exit 0 and a header-only TSV
        ("empty", b"", "", "empty"),
        ("detections-json", _j(PRED), "1", "not an OpenTAD log"),
        ("detections-json-lines", json.dumps(PRED, indent=1).encode(), "1", "not an OpenTAD log"),
        ("detections-gzip", gzip.compress(_j(PRED)), "1", "not an OpenTAD log"),
        ("candidates-npz", _NPZ, "1", "binary data"),
        ("text", b"hello\n", "1", "not an OpenTAD log"),
        ("setup-only", _rec("Using torch version: 2.0.1").encode() * 3, "", "Epoch N started"),
        ("test-py-log", test_py.encode(), "", "Epoch N started"),
        ("never-completed", unfinished.encode(), "2", "never completed"),
        # values that cannot be: were written to the TSV
        ("map-inf", line4("Average-mAP: inf (%)"), "4", "Average-mAP is inf%"),
        ("map-minus-12", line4("Average-mAP: -12.00 (%)"), "4", "is -12%"),
        ("map-150", line4("Average-mAP: 150.00 (%)"), "4", "is 150%"),
        ("map-minus-inf", line4("Average-mAP: -inf (%)"), "4", "is -inf%"),
        ("tiou-map-minus-12", line4("mAP at tIoU 0.50 is -12.00%"), "4", "tIoU 0.5 is -12%"),
        ("tiou-1.5", line4("mAP at tIoU 1.50 is 40.00%"), "4", "tIoU 1.5"),
        ("tiou-0", line4("mAP at tIoU 0.00 is 40.00%"), "4", "tIoU 0"),
        ("tiou-nan", line4("mAP at tIoU nan is 40.00%"), "4", "tIoU nan"),
        ("lr-negative", line5(lr_det="-1.0e-04"), "5", "lr_det=-0.0001"),
        ("lr-inf", line5(lr_bb="inf"), "5", "lr_backbone=inf"),
        ("lr-nan", line5(lr_det="nan"), "5", "lr_det=nan"),
        ("lr-overflow", line5(lr_bb="1.0e+400"), "5", "lr_backbone=inf"),
        ("mem-negative", line5(mem="-5"), "5", "mem=-5"),
        ("loss-negative", line5(loss="-0.5000"), "5", "Loss=-0.5 is negative"),
        ("cls-loss-negative", line5(cls="-1.0000"), "5", "cls_loss=-1"),
        ("loss-minus-inf", line5(loss="-inf"), "5", "Loss=-inf"),
        ("iter-past-last", line5(i="00120"), "5", "iteration 120"),
        # numbers beyond any schedule: were an OverflowError traceback
        ("epoch-1e20", line4(f"[Train]: Epoch {big} started"), "4", f"epoch {big} is beyond"),
        ("epoch-1e20-iteration", (_GOOD + _iter(e=big)).encode(), "4", f"epoch {big}"),
        ("epoch-2^31", line4("[Train]: Epoch 2147483648 started"), "4", "beyond any schedule"),
        ("epoch-5000-digits", line4(f"[Train]: Epoch {digits} started"), "4", "beyond any"),
        ("iterations-1e20", line5(i=big, n=big), "5", f"iteration {big}"),
        ("last-iteration-1e20", line5(n=big), "5", f"iteration {big}"),
        # a line no log has (a pipe or /dev/zero stops at the cap: see below)
        ("line-2mib", (_GOOD + "x" * (2 << 20) + "\n").encode(), "4", "longer than"),
    ]


LOG_CASES = log_cases()


def check_log(tmp_path, raw: bytes | None, where: str, word: str, capsys, log=None):
    from tadsweep.report import curves

    if log is None:
        log = tmp_path / "log.json"
        log.write_bytes(raw)
    out = tmp_path / "curves.tsv"
    before = snapshot(tmp_path)
    rc, err = run_cli(curves.main, [str(log), str(out)], capsys)
    named = f"{log}:{where}: " if where else f"{log}: "
    line = assert_one_line(rc, err, named, word)
    assert rc == 2 and line.startswith(f"error: {named}"), line
    assert snapshot(tmp_path) == before  # the log unchanged, no curves.tsv (or temp file) left


@pytest.mark.parametrize(
    "raw,where,word", [c[1:] for c in LOG_CASES], ids=[c[0] for c in LOG_CASES]
)
def test_training_log_is_refused_in_one_line(tmp_path, raw, where, word, capsys):
    check_log(tmp_path, raw, where, word, capsys)


def test_endless_log_is_refused_at_its_first_line(tmp_path, capsys):
    check_log(tmp_path, None, "1", "longer than", capsys, log=Path("/dev/zero"))


def test_training_log_refusals_through_the_command(tmp_path):
    """One case of each class through `python -m tadsweep.report.curves`: exit 2, one line on
    stderr, no traceback, nothing written."""
    for name in ("detections-json", "map-minus-12", "epoch-1e20"):
        _, raw, where, word = next(c for c in LOG_CASES if c[0] == name)
        log, out = tmp_path / f"{name}.json", tmp_path / f"{name}.tsv"
        log.write_bytes(raw)
        proc = subprocess.run([sys.executable, "-m", "tadsweep.report.curves", str(log), str(out)],
                              capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr.startswith(f"error: {log}:{where}: ") and proc.stderr.count("\n") == 1
        assert word in proc.stderr and not out.exists() and log.read_bytes() == raw


# ----------------------------------------------------------------------------- Hardening II
# What Snakemake reads before the workflow, the results folder, warnings, the error line itself.

DEEP_YAML = DEMO_TEXT.encode() + b"x: " + b"[" * 5000 + b"]" * 5000 + b"\n"
# (id, the file's bytes or a special kind, a word of the line)
CONFIGFILE_CASES = [
    ("binary", bytes(range(256)) * 4, "not UTF-8"),
    ("latin-1", DEMO_TEXT.replace("Embedded demo", "Embedded démo").encode("latin-1"), "UTF-8"),
    ("directory", "dir", "is a directory"),
    ("missing", "missing", "No such file"),
    ("deep", DEEP_YAML, "nested deeper"),
    ("fifo", "fifo", "not a regular file"),
    ("dev-zero", "/dev/zero", "not a regular file"),
    ("huge", DEMO_TEXT.encode() + b"# " + b"x" * (2 << 20) + b"\n", "larger than"),
    ("list", b"- study\n", "mapping"),
]


def configfile(tmp_path: Path, kind) -> Path:
    """The config a case names: written, made (a folder, a FIFO), absent or /dev/zero."""
    if kind == "/dev/zero":
        return Path(kind)
    path = tmp_path / "study.yaml"
    if kind == "dir":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind != "missing":
        path.write_bytes(kind)
    return path


@pytest.mark.parametrize(
    "kind,word", [c[1:] for c in CONFIGFILE_CASES], ids=[c[0] for c in CONFIGFILE_CASES]
)
def test_a_configfile_snakemake_would_choke_on_is_one_line_first(tmp_path, kind, word, capsys):
    """Snakemake reads --configfile before the workflow (a traceback, or no end on a FIFO or
    /dev/zero): `python -m tadsweep.plan.check_config -- SNAKEMAKE ARGS`, which `make demo` and
    `make doctor` run first, reads each with tadsweep's reader: one line naming the file."""
    from tadsweep.plan import check_config

    path = configfile(tmp_path, kind)
    before = snapshot(tmp_path)
    rc, err = run_cli(check_config.main, ["--", "-n", "--cores", "1", "--configfile", str(path)],
                      capsys)  # fmt: skip
    line = assert_one_line(rc, err, f"{path}: ", word)
    assert rc == 2 and line.startswith(f"error: {path}: ") and err.count("\n") == 1
    assert snapshot(tmp_path) == before


def test_the_configfile_check_reads_every_form_of_the_option(tmp_path):
    good = ROOT / "configs" / "demo.yaml"
    fifo = configfile(tmp_path, "fifo")
    for args in (["--configfile", str(good), str(fifo)], [f"--configfile={fifo}"],
                 ["--configfiles", str(fifo), "-n"], [str(fifo)]):  # fmt: skip
        argv = args if args == [str(fifo)] else ["--", *args]
        res = subprocess.run([sys.executable, "-m", "tadsweep.plan.check_config", *argv],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert res.returncode == 2 and res.stderr.startswith(f"error: {fifo}: "), res.stderr
    res = subprocess.run([sys.executable, "-m", "tadsweep.plan.check_config", str(good)])
    assert res.returncode == 0


RESULTS_FILE_CASES = [  # (study.results, the file in its way)
    ("occupied", "occupied"),
    ("res/occupied", "res/occupied"),
    ("res", "res/demo"),
]


@pytest.mark.parametrize("results,file", RESULTS_FILE_CASES, ids=[c[1] for c in RESULTS_FILE_CASES])
def test_results_in_place_of_a_file_is_one_line(tmp_path, monkeypatch, capsys, results, file):
    """study.results (or its study folder) naming an existing file: was a 46-line
    NotADirectoryError from Snakemake's first look inside."""
    from tadsweep.plan.__main__ import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / file).write_text("not a folder")
    config = tmp_path / "study.yaml"
    config.write_bytes(with_value("study.results", results))
    before = snapshot(tmp_path)
    rc, err = run_cli(main, [str(config)], capsys)
    assert_one_line(rc, err, str(config), "study.results", f"'{file}' is an existing file")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("results", ["../x", "a/../b", "/abs/results", "./x", "a b"])
def test_the_results_rule_is_said_as_it_is(tmp_path, capsys, results):
    """The line for a refused study.results says the rule -- relative to the working directory,
    no '..' -- and how to put results elsewhere, not the characters the pattern refuses."""
    line = assert_one_line(*_plan(tmp_path, with_value("study.results", results), capsys))
    for words in ("study.results", "relative to the working directory", "no '..'",
                  "snakemake --directory DIR"):  # fmt: skip
        assert words in line, line


def _plan(tmp_path, content: bytes, capsys) -> tuple[int, str]:
    from tadsweep.plan.__main__ import main

    config = tmp_path / "study.yaml"
    config.write_bytes(content)
    return run_cli(main, [str(config)], capsys)


def test_snakemake_stops_in_one_line_where_it_read_nothing_yet(tmp_path):
    """One `snakemake -n` per mechanism: config.yaml as a FIFO and as binary (the Snakefile
    reads it before Snakemake does: no hang, no traceback), and study.results naming a file
    (refused at validation, before Snakemake looks inside): the line alone, exit 2."""
    cases = {
        "fifo": (lambda w: os.mkfifo(w / "config.yaml"), "config.yaml: not a regular file"),
        "binary": (lambda w: (w / "config.yaml").write_bytes(bytes(range(256))),
                   "config.yaml: not UTF-8"),
        "results-file": (lambda w: ((w / "occupied").write_text("x"), (w / "config.yaml")
                         .write_bytes(with_value("study.results", "occupied"))),
                         "config.yaml: study.results: 'occupied' is an existing file"),
    }  # fmt: skip

    def one(name):
        work = tmp_path / name
        work.mkdir()
        cases[name][0](work)
        before = snapshot(work)
        res = subprocess.run([*SNAKEMAKE, "-n", "--cores", "1", "--directory", str(work)],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
        return name, work, before, res

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(one, cases))
    for name, work, before, res in results:
        assert res.returncode == 2, (name, res.stderr[-2000:])
        assert res.stdout == "" and res.stderr.startswith(f"error: {cases[name][1]}"), res.stderr
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
        assert {k: v for k, v in snapshot(work).items() if ".snakemake" not in k} == before


# warnings: a value no study wants that still plans (Hardening II, 5)
QUIET = yaml.safe_load(TINY)  # TINY, less its warnings: p2's arm may be p1's base, an inert knob
QUIET["variants"]["lora"]["B"] = {"r": 6, "alpha": 12}
QUIET["phases"]["p2"]["arms"] = [{"lora": "B"}]
QUIET["postprocess"]["default"] = {"voting_thresh": 0.0}
WARN_CASES = [  # (id, dotted key -> value, the key the one warning names)
    ("top-k-above-runs", {"ensemble.enabled": True, "ensemble.top_k": 9}, "ensemble.top_k"),
    ("top-k-above-phase-runs", {"ensemble.enabled": True, "ensemble.phases": ["p2"],
                                "ensemble.top_k": 2}, "ensemble.top_k"),
    ("arm-may-be-the-incumbent", {"phases.p2.arms": [{"lora": "A"}]}, "phases.p2"),
    ("arm-is-every-candidate", {"phases.p1.arms": [{"lora": "A", "schedule": "v1"}],
                                "phases.p2.arms": [{"schedule": "v1"}]}, "phases.p2"),
]  # fmt: skip


@pytest.mark.parametrize("values,key", [c[1:] for c in WARN_CASES], ids=[c[0] for c in WARN_CASES])
def test_a_value_no_study_wants_warns_in_one_line(values, key):
    """ensemble.top_k above the runs that may join; an arm that is (or may be) its phase's
    incumbent: planned, with one warning line naming the key."""
    cfg = set_dotted(copy.deepcopy(QUIET), values)
    _, warnings = load_study(cfg, source="tiny.yaml")
    assert len(warnings) == 1 and warnings[0].startswith(f"{key}: "), warnings
    assert "duplicate" in warnings[0] or "only" in warnings[0], warnings


def test_the_quiet_study_warns_of_nothing():
    assert load_study(copy.deepcopy(QUIET), source="tiny.yaml")[1] == []
    tiny = load_study(yaml.safe_load(TINY), source="tiny.yaml")[1]  # p2's arm is p1's base
    assert [w for w in tiny if w.startswith("phases.p2: arm lora=v1 equals phase p1's base")]


def test_an_arm_resolved_to_its_incumbent_warns_once_the_winner_is_known(tmp_path):
    cfg = copy.deepcopy(QUIET)
    cfg["phases"]["p2"]["arms"] = [{"lora": "A"}]
    cfg, _ = load_study(cfg, source="tiny.yaml")
    winner = tmp_path / "winner.json"
    winner.write_text(json.dumps({"variants": {**cfg["baseline"], "lora": "A"}, "run_ids": []}))
    run = runs.run_by_id(cfg)["p2/lora=A/seed=1"]
    line = runs.write_params(cfg, run, [str(winner)], str(tmp_path / "params.json"))
    assert line.startswith("p2/lora=A/seed=1: the same variants as phase p1's winner") and (
        "duplicate" in line)  # fmt: skip
    winner.write_text(json.dumps({"variants": dict(cfg["baseline"]), "run_ids": []}))
    assert runs.write_params(cfg, run, [str(winner)], str(tmp_path / "other.json")) is None


def test_ensemble_top_k_above_its_candidates_warns(tmp_path, capsys):
    from tadsweep.detections import ensemble

    for name, raw in {"gt": _j(GT), "pred": _j(PRED), "pred2": _j(PRED), "setting": b"{}",
                      "sweep": b"setting\taverage_mAP\ndefault\t0.5\n"}.items():  # fmt: skip
        (tmp_path / name).write_bytes(raw)
    argv = fill(
        [
            "--gt",
            "{gt}",
            "--candidates",
            "{pred}",
            "{pred2}",
            "--setting",
            "{setting}",
            "--out",
            "{o}",
            "--sweeps",
            "{sweep}",
            "{sweep}",
            "--top-k",
            "5",
        ],
        tmp_path,
    )
    rc, err = run_cli(ensemble.main, argv, capsys)
    assert rc == 0, err
    assert [ln for ln in err.splitlines() if ln.startswith("warning:")] == [
        "warning: --top-k 5, but 2 runs have candidates: all 2 are the ensemble's candidates"
    ]
