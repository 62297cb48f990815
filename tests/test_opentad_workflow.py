"""The opentad backend end to end through Snakemake: render, train and detect under torchrun in
"the container", against the OpenTAD test double (tests/doubles/opentad: OpenTAD's two CLIs, their
files and log lines) with the apptainer test double (tests/doubles/bin/apptainer) on PATH."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent


def make_site(tmp: Path) -> tuple[Path, Path]:
    """An OpenTAD checkout (the double), THUMOS-shaped data and weights, and an image file."""
    opentad = tmp / "OpenTAD"
    shutil.copytree(ROOT / "tests" / "doubles" / "opentad", opentad)
    thumos = str(opentad / "data" / "thumos")  # demo data: OpenTAD's annotation format
    data = [sys.executable, "-m", "tadsweep.demo", "data", "--out", thumos, "--seed", "3",
            "--videos-train", "3", "--videos-val", "4", "--classes", "3"]  # fmt: skip
    subprocess.run(data, check=True, capture_output=True)
    (opentad / "pretrained").mkdir()
    (opentad / "pretrained" / "vit-small.pth").write_bytes(b"weights")
    image = tmp / "opentad.sif"
    image.write_text("image")
    return opentad, image


def test_opentad_backend_runs_in_the_container_through_snakemake(tmp_path):
    opentad, image = make_site(tmp_path)
    cfg = yaml.safe_load((ROOT / "tests" / "configs" / "opentad_double.yaml").read_text())
    cfg["paths"]["opentad_root"] = str(opentad)
    cfg["container"]["image"] = str(image)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    shim_log = tmp_path / "apptainer.log"
    env = dict(os.environ, APPTAINER_SHIM_LOG=str(shim_log))
    env.pop("APPTAINER_BIND", None)
    env["PATH"] = os.pathsep.join(
        [str(ROOT / "tests" / "doubles" / "bin"), str(Path(sys.executable).parent), env["PATH"]]
    )
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile",
           str(study), "--directory", str(work), "--cores", "2", "--sdm", "apptainer",
           "--apptainer-args=--nv"]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stderr[-4000:]

    out = work / "results" / "opentad_double"
    summary = pd.read_csv(out / "summary.tsv", sep="\t")
    assert set(summary["status"]) == {"done"}
    assert sorted(summary["run_id"].unique()) == [
        "p1/base/seed=1", "p1/lora=A/seed=1", "p2/augment=none/seed=1"]  # fmt: skip
    assert summary["average_mAP"].between(0, 1).all()
    # the log parser read the double's OpenTAD log: 4 epochs, evaluated from val_start_epoch 2
    # (4 - eval_window) at every 2nd epoch, i.e. after 0-based epoch 3 only
    curves = pd.read_csv(out / "runs" / "p1" / "base" / "seed=1" / "curves.tsv", sep="\t")
    assert list(curves["epoch"]) == [0, 1, 2, 3]
    assert list(curves.dropna(subset=["average_mAP"])["epoch"]) == [3]
    rendered = (out / "runs" / "p1" / "lora=A" / "seed=1" / "config.py").read_text()
    assert str(opentad / "configs" / "adatad" / "thumos") in rendered  # _base_ in the checkout

    # GPU rules ran in the image with --nv; the data and weights were bound read-only
    lines = shim_log.read_text().splitlines()
    execs = [ln.split() for ln in lines if ln.startswith("exec ")]
    assert len(execs) == 6  # train + detect for 3 runs; CPU rules stay on the host
    assert all(str(image) in c and "--nv" in c for c in execs)
    binds = {ln for ln in lines if ln.startswith("APPTAINER_BIND=")}
    assert binds == {f"APPTAINER_BIND={opentad}:{opentad}:ro"}
    train = json.loads((out / "runs" / "p1" / "base" / "seed=1" / "train.json").read_text())
    assert train["final_epoch"] == 3
