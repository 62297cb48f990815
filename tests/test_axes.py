"""An axis is declared once (tadsweep/plan/axes); validation, run ids, params.json, costs, the
summary, statistics and figures all derive from the registry. A toy axis declared in a few lines
(tests/toy_axis.py) flows from the config to the report on the demo backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tadsweep.plan.axes import AXES, training_keys

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "tests" / "configs" / "slurm_small.yaml"


def test_registry_order_training_keys_and_schema_file():
    assert list(AXES) == ["lora", "schedule", "augment", "structure"]  # the order of run ids
    assert training_keys() == (
        "seed", "lora", "schedule", "augment", "structure", "batch_size", "ema", "amp", "model"
    )  # fmt: skip
    check = [sys.executable, "-m", "tadsweep.plan.schema", "--check"]
    res = subprocess.run(check, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def toy_env() -> dict:
    """The environment that registers tests/toy_axis.py in every process of the workflow."""
    path = os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, TADSWEEP_EXTRA_AXES="toy_axis", PYTHONPATH=path.rstrip(os.pathsep))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the jobs' python
    return env


def toy_study(tmp_path: Path) -> Path:
    """The small demo study with the toy axis: its baseline variant, and an arm of phase 1 that
    triples the head's learning rate."""
    cfg = yaml.safe_load(SMALL.read_text())
    cfg["study"].update(name="toy", seeds=[1])
    cfg["variants"]["head"] = {"x1": {"lr_scale": 1.0}, "x3": {"lr_scale": 3.0}}
    cfg["baseline"]["head"] = "x1"
    cfg["phases"] = {"p1": {"base": "baseline", "arms": [{"head": "x3"}, {"lora": "A"}]}}
    cfg["claims"] = [{"claim": "Head LR", "axis": "head", "low": 1, "high": 2}]
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake(tmp_path: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile",
           str(config), "--directory", str(tmp_path / "work"), "--cores", "2", *args]  # fmt: skip
    return subprocess.run(cmd, env=toy_env(), capture_output=True, text=True, timeout=900)


@pytest.mark.e2e
def test_a_toy_axis_flows_from_the_config_to_the_report(tmp_path):
    config = toy_study(tmp_path)
    res = snakemake(tmp_path, config)
    assert res.returncode == 0, res.stderr[-4000:]
    out = tmp_path / "work" / "results" / "toy"
    # run ids and params.json
    params = json.loads((out / "runs" / "p1" / "head=x3" / "seed=1" / "params.json").read_text())
    assert params["head"] == {"lr_scale": 3.0} and params["variants"]["head"] == "x3"
    # the demo backend applied the axis: the head trained at 3x the baseline's learning rate
    curves = {
        arm: pd.read_csv(out / "runs" / "p1" / arm / "seed=1" / "curves.tsv", sep="\t")
        for arm in ("base", "head=x3")
    }
    # (the log prints learning rates with 2 significant digits, as OpenTAD's does)
    ratio = curves["head=x3"]["lr_det"] / curves["base"]["lr_det"]
    assert ratio.between(2.9, 3.1).all(), ratio
    # the summary, the statistics and the report's figures carry the axis
    summary = pd.read_csv(out / "summary.tsv", sep="\t")
    by_run = summary.drop_duplicates("run_id").set_index("run_id")
    assert by_run.loc["p1/head=x3/seed=1", "v_head"] == "x3"
    assert by_run.loc["p1/base/seed=1", "head_lr_scale"] == 1.0
    assert by_run.loc["p1/head=x3/seed=1", "head_lr_scale"] == 3.0
    configs = pd.read_csv(out / "stats" / "configs.tsv", sep="\t")
    assert set(configs["v_head"]) == {"x1", "x3"}
    claims = pd.read_csv(out / "stats" / "claims.tsv", sep="\t")
    assert "Head LR" in set(claims["claim"])
    assert (out / "plots" / "axis_effects.png").stat().st_size > 0


def test_a_toy_axis_is_validated_like_the_built_in_ones(tmp_path):
    config = toy_study(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["variants"]["head"]["x3"]["lr_sclae"] = 2.0
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = snakemake(tmp_path, config, "-n")
    assert res.returncode != 0
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if "lr_sclae" in ln]
    # the line alone, as every command words it (cli.stop: no WorkflowError lines around it)
    want = f"error: {config}: variants.head.x3: unknown key 'lr_sclae' (allowed: lr_scale)"
    assert lines == [want]
