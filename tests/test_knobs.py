"""A post-processing knob is declared once (tadsweep/detections/knobs.py): the config schema, the
setting and its bounds, the `apply` options, the sweep's and summary's columns, the rendered
OpenTAD keys and the inert rules derive from the registry. A toy knob declared in one file
(tests/toy_knob.py) flows from the config to the sweep's table."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from cases import candidates

from tadsweep.backends.opentad import render
from tadsweep.detections import knobs
from tadsweep.detections.formats import dump, load
from tadsweep.errors import ConfigError
from tadsweep.report import collect, stats

ROOT = Path(__file__).resolve().parent.parent


def test_everything_derives_from_the_registry():
    swept = [k.name for k in knobs.swept()]
    assert list(collect.PP_PARAMS) == swept  # the summary's columns are the sweep's
    assert stats.SWITCHES == ("multiclass", "method", "use_soft_nms")  # named by inert rules
    assert set(render.NMS_KEYS) == {k for k in swept if k not in ("video_topk", "video_thresh")}
    assert render.DETECTOR_KEYS == ("pre_nms_topk", "pre_nms_thresh")
    with pytest.raises(ConfigError, match="declared twice"):
        knobs.register_knob(knobs.KNOBS["sigma"])
    # the inert rules: merged to upstream's value where they cannot act
    setting = {"multiclass": True, "voting_thresh": 0.7, "use_soft_nms": True, "method": 1,
               "iou_threshold": 0.3}  # fmt: skip
    assert knobs.canonical(setting) == dict(setting, voting_thresh=0.0)
    assert knobs.canonical(dict(setting, method=3))["iou_threshold"] == 0.0
    hard = dict(setting, use_soft_nms=False, method=2)  # hard NMS uses the threshold
    assert knobs.canonical(hard)["iou_threshold"] == 0.3


def toy_env() -> dict:
    """The environment that registers tests/toy_knob.py in every process."""
    path = os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, TADSWEEP_EXTRA_KNOBS="toy_knob", PYTHONPATH=path.rstrip(os.pathsep))


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], env=toy_env(), capture_output=True, text=True)


IN_PROCESS = """
import copy, json, sys, yaml
from tadsweep.detections.postprocess import NMSSetting, sweep_columns
from tadsweep.errors import ConfigError, InputError
from tadsweep.plan import runs, schema
from tadsweep.plan.config import load_study
from tadsweep.report import collect
cfg = yaml.safe_load(open(sys.argv[1]))
cfg["postprocess"]["grid"]["min_length"] = [None, 2.0]
study, _ = load_study(copy.deepcopy(cfg))
try:
    load_study(dict(cfg, postprocess=dict(cfg["postprocess"], grid={"min_length": [-1.0]})))
except ConfigError as exc:
    refused = str(exc)
try:
    NMSSetting.from_dict({"min_length": "2"})
except InputError as exc:
    setting = str(exc)
print(json.dumps({
    "schema": schema.build()["$defs"]["postprocess_default"]["properties"]["min_length"],
    "grid": schema.build()["$defs"]["postprocess_grid"]["properties"]["min_length"],
    "default": study["postprocess"]["default"]["min_length"],
    "settings": runs.postprocess_settings(study),
    "refused": refused, "setting": setting, "columns": sweep_columns(),
    "summary": list(collect.PP_PARAMS),
}))
"""


def test_a_toy_knob_flows_from_the_config_to_the_sweep(tmp_path):
    config = ROOT / "tests" / "configs" / "slurm_small.yaml"
    res = run("-c", IN_PROCESS, str(config))
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout)
    assert got["schema"]["type"] == ["number", "null"] and got["schema"]["default"] is None
    assert got["grid"]["items"] == {"type": ["number", "null"], "minimum": 0}
    assert got["default"] is None  # the schema's default, filled in
    settings = got["settings"]  # 2 sigma x 2 multiclass, each with and without the cut
    assert len(settings) == 8 and {s["min_length"] for s in settings} == {None, 2.0}
    assert "postprocess.grid.min_length[0]" in got["refused"] and "minimum" in got["refused"]
    assert got["setting"] == "setting: min_length must be null or a finite number >= 0, got '2'"
    assert "min_length" in got["columns"] and got["summary"][-1] == "min_length"

    # `apply`: its option, bounded as the schema bounds it, and what the cut does
    rng = np.random.default_rng(4)
    res_in = candidates(rng, n_videos=3, max_n=60)
    cand, out, ref = tmp_path / "cand.npz", tmp_path / "out.json", tmp_path / "ref.json"
    dump(res_in, cand)
    apply = ["-m", "tadsweep.detections.postprocess", "apply", str(cand)]
    assert run(*apply, str(out), "--min-length", "2", "--max-seg-num", "50").returncode == 0
    longer = {
        v: [e for e in es if e["segment"][1] - e["segment"][0] >= 2] for v, es in res_in.items()
    }
    dump(longer, tmp_path / "longer.npz")
    apply_ref = ["-m", "tadsweep.detections.postprocess", "apply", str(tmp_path / "longer.npz")]
    assert run(*apply_ref, str(ref), "--max-seg-num", "50").returncode == 0
    assert load(out) == load(ref) and load(out) != load(tmp_path / "cand.npz")
    bad = run(*apply, str(tmp_path / "x.json"), "--min-length", "-1")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "argument --min-length: min_length must be >= 0, got -1.0" in bad.stderr
    assert not (tmp_path / "x.json").exists()

    # the sweep's table carries it
    gt = tmp_path / "gt.json"
    ann = [{"segment": [1.0, 4.0], "label": f"c{c}"} for c in range(3)]  # cases' labels
    db = {v: {"subset": "validation", "annotations": ann} for v in res_in}
    gt.write_text(json.dumps({"database": db}))
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps([{"setting": "default"}, {"setting": "s1", "min_length": 2.0}]))
    sweep = tmp_path / "sweep.tsv"
    res = run("-m", "tadsweep.detections.postprocess", "sweep", "--gt", str(gt), "--candidates",
              str(cand), "--grid", str(grid), "--out", str(sweep))  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    rows = list(csv.DictReader(sweep.open(), delimiter="\t"))
    assert [r["min_length"] for r in rows] == ["", "2.0"]


def test_the_schema_file_holds_the_registry():
    """schemas/config.schema.yaml's postprocess section is the registry's (make schema)."""
    text = (ROOT / "schemas" / "config.schema.yaml").read_text()
    defs = yaml.safe_load(text)["$defs"]
    assert defs["postprocess_default"] == knobs.schema_defs()["postprocess_default"]
    assert defs["postprocess_grid"] == knobs.schema_defs()["postprocess_grid"]
