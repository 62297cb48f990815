"""The preflight (tadsweep.site.preflight, rule preflight): the real check once on upstream OpenTAD
on CPU (tests/doubles/cuda stands in for the GPU in its torchrun worker), its one-line failures,
and its place in the plan: ahead of every training of the opentad study."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import opentad_site
import pytest
from test_opentad_backend import make_run

REPO = Path(__file__).resolve().parents[1]


def preflight(root: Path, run: Path, paths: dict, out: Path, env=None):
    (run / "paths.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    cmd = [sys.executable, "-m", "tadsweep.site.preflight", "check", "--opentad-root", str(root)]
    cmd += ["--config", str(run / "config.py"), "--paths", str(run / "paths.json")]
    cmd += ["--gpus", "1", "--out", str(out)]
    env = env or opentad_site.environment(root)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.opentad
def test_preflight_runs_the_rendered_model_and_fails_in_one_line(opentad_root, tiny_site, tmp_path):
    run = make_run(tmp_path, opentad_root, tiny_site)
    site = {k: v for k, v in tiny_site.items()}
    out = tmp_path / "preflight.json"
    proc = preflight(opentad_root, run, site, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert set(record["imports"]) >= {"nms_1d_cpu", "opentad.models", "peft"}
    assert record["paths"] == sorted(site)
    model = record["model"]
    # one forward and backward of the LoRA model on the smoke size: gradients reached LoRA and
    # adapters (the trainable parameters), the loss is a number
    assert model["gpus_visible"] == 1 and model["loss"] > 0
    assert 0 < model["trainable_with_gradient"] <= model["trainable"]
    print(f"\npreflight on CPU: {record['seconds']} s, forward+backward {model}")

    # an unreadable site path: one line naming the key, nothing written
    out.unlink()
    broken = dict(site, video_dir=tmp_path / "not-bound")
    proc = preflight(opentad_root, run, broken, out)
    assert proc.returncode == 1 and not out.exists()
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    want = f"paths.video_dir: {tmp_path / 'not-bound'} is not readable in the job (a missing bind?"
    assert errors == [f"error: {want} APPTAINER_BIND, containers/README.md)"], proc.stderr


def test_a_module_that_does_not_import_is_one_line(tmp_path):
    """What the apptainer double's broken-image knob does to a module: the first failing import
    (in the torchrun worker) is named, before anything else runs."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "mmengine.py").write_text("raise ImportError('libcudart.so.11.0: cannot open')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(broken), str(REPO)]))
    (tmp_path / "paths.json").write_text("{}")
    cmd = [sys.executable, "-m", "tadsweep.site.preflight", "check", "--opentad-root",
           str(tmp_path), "--config", str(tmp_path / "c.py"), "--paths",
           str(tmp_path / "paths.json"), "--out", str(tmp_path / "out.json")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [
        "error: mmengine (mmengine) does not import: ImportError: libcudart.so.11.0: cannot open"
    ], proc.stderr
    assert not (tmp_path / "out.json").exists()


def test_dry_run_on_slurm_has_the_preflight_ahead_of_every_training(tmp_path):
    """`make plan`'s dry-run of config.yaml (the apptainer double on PATH): one preflight job,
    and every train job needs its output."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
               f"{os.pathsep}{REPO / 'tests' / 'doubles' / 'bin'}")  # fmt: skip
    cmd = [sys.executable, "-m", "snakemake", "-n", "--profile", "slurm", "--directory",
           str(tmp_path), "--configfile", str(REPO / "config.yaml"), "--dag"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dag = proc.stdout
    nodes = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)', dag, re.MULTILINE))
    edges = re.findall(r"^\s*(\d+) -> (\d+)", dag, re.MULTILINE)
    pre = [n for n, rule in nodes.items() if rule == "preflight"]
    trains = [n for n, rule in nodes.items() if rule == "train"]
    assert len(pre) == 1 and len(trains) == 33, nodes  # one partition; the real study's 33 runs
    assert {b for a, b in edges if a == pre[0]} >= set(trains)
