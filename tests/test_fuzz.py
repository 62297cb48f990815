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
        ("plots-out-dir-summary", plots.main, ["--summary", "{sweep}", "--study-json",
         "{params}", "--out-dir", "{params}"], "params"),
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
    assert res.returncode != 0 and "Traceback" not in out, out[-3000:]
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
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    target = "results/tiny/phases/p2/winner.json"
    env_path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    os.environ["PATH"], old = env_path, os.environ["PATH"]  # the jobs' python
    try:
        res = snakemake(tmp_path, "--cores", "2", target, configfile=config)
        assert res.returncode == 0, res.stderr[-3000:]
        winner = tmp_path / "results" / "tiny" / "phases" / "p1" / "winner.json"
        saved = winner.read_bytes()
        winner.unlink()
        res = snakemake(tmp_path, "-n", "--cores", "2", target, configfile=config)
    finally:
        os.environ["PATH"] = old
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "Nothing to be done" in out, out[-3000:]  # no resolve, train, detect or sweep
    assert winner.read_bytes() == saved  # rebuilt from the runs: the same content
    shutil.rmtree(tmp_path / "results" / "tiny" / "runs" / "p1" / "lora=A", ignore_errors=True)
    winner.unlink()
    res = snakemake(tmp_path, "-n", "--cores", "2", target, configfile=config)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "Traceback" not in out, out[-3000:]
    assert len([ln for ln in out.splitlines() if "p1/winner.json: missing" in ln]) == 1, out
