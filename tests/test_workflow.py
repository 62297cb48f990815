"""The workflow as Snakemake sees it: dry-runs of both studies, lint, and config errors.

Every invocation works in its own temporary directory (--directory), with the study given
explicitly: nothing here reads the working tree's results/ or .snakemake/ (a `make demo` before
`make test` must not change what these tests see)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(workdir: Path, *args, configfile="config.yaml"):
    """Snakemake from the repository root (profiles, relative paths) on `configfile`, working in
    `workdir`."""
    env = dict(os.environ)
    # Apptainer cannot be installed here: its documented test double stands in (docs/testing.md).
    env["PATH"] = f"{ROOT / 'tests' / 'doubles' / 'bin'}{os.pathsep}{env['PATH']}"
    cmd = [*SNAKEMAKE, *args, "--directory", str(workdir), "--configfile", str(configfile)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def job_counts(stdout: str) -> dict:
    counts, table = {}, False
    for line in stdout.splitlines():
        if line.startswith("job ") and "count" in line:
            table = True
            continue
        if table:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
            elif parts and parts[0] == "total":
                break
    return counts


def test_dry_run_of_the_real_study_through_the_slurm_profile(tmp_path):
    res = snakemake(tmp_path, "-n", "--profile", "slurm")
    assert res.returncode == 0, res.stderr[-3000:]
    counts = job_counts(res.stdout + res.stderr)
    assert counts["train"] == 33 and counts["detect"] == 33 and counts["sweep"] == 33
    assert counts["select"] == 3 and counts["check_paths"] == 1
    out = res.stdout + res.stderr
    assert "the phasing trains 33" in out  # the plan summary is printed with the plan
    assert "--gpus 1" in out and "gpu=1, cpus_per_gpu=8" in out


def test_dry_run_of_the_demo_study(tmp_path):
    res = snakemake(tmp_path, "-n", "--cores", "2", configfile="configs/demo.yaml")
    assert res.returncode == 0, res.stderr[-3000:]
    counts = job_counts(res.stdout + res.stderr)
    assert counts["train"] == 18 and counts["demo_data"] == 1 and counts["demo_pretrain"] == 1
    assert "check_paths" not in counts  # the demo needs no site paths


def test_lint_has_no_findings(tmp_path):
    for study in ("configs/demo.yaml", "config.yaml"):
        res = snakemake(tmp_path, "--lint", configfile=study)
        assert res.returncode == 0, res.stdout + res.stderr


def test_bad_config_stops_snakemake_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = (ROOT / "configs" / "demo.yaml").read_text().replace("v1: {lr: 2.0e-3", "v1: {lr: 2e-3")
    bad.write_text(text)
    res = snakemake(tmp_path, "-n", "--cores", "1", configfile=bad)
    assert res.returncode != 0
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if "variants.schedule.v1.lr" in ln]
    assert lines == [  # the line alone (cli.stop): no WorkflowError lines around it
        f"error: {bad}: variants.schedule.v1.lr: '2e-3' is text, not a number; write it "
        "unquoted (YAML reads 1e-4 as text: write 1.0e-4)"
    ]


def test_unbuilt_kernels_stop_the_run_before_any_job(tmp_path):
    """A checkout whose C++ kernels were never built (cloned, no `make setup`): the plan works,
    the run stops at its start with one line saying what to run, before any job."""
    tree = tmp_path / "checkout"
    skip = ("*.so", ".git", ".venv", "build", "results", ".snakemake", "logs", "__pycache__")
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(*skip))
    work = tmp_path / "work"
    cmd = [*SNAKEMAKE, "--cores", "1", "--directory", str(work), "--configfile",
           "configs/demo.yaml"]  # fmt: skip
    plan = subprocess.run([*cmd, "-n"], cwd=tree, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr[-3000:]  # planning needs no kernels
    res = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert (
        "tadsweep's compiled kernels are not built for this Python (_evaluate, _nms in "
        f"{tree}/tadsweep/detections): run `make setup` or `pip install -e .` in the checkout"
    ) in out, out[-3000:]
    assert not (work / "results").exists()  # no job ran


def test_code_is_formatted_and_clean():
    bin_dir = Path(sys.executable).parent
    for cmd in (
        [str(bin_dir / "ruff"), "check", "."],
        [str(bin_dir / "ruff"), "format", "--check", "."],
        [str(bin_dir / "snakefmt"), "--check", "Snakefile", "rules"],
    ):
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, f"{' '.join(cmd[1:])}:\n{res.stdout}{res.stderr}"


def test_evaluation_tious_reach_every_evaluation(tmp_path):
    """evaluation.tious is the one list of thresholds: the sweep, the ensemble and every run's
    params.json (in-training evaluation, rendered as OpenTAD's tiou_thresholds) use it."""
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    cfg["evaluation"] = dict(cfg.get("evaluation", {}), tious=[0.5, 0.75])
    cfg["selection"] = dict(cfg.get("selection", {}), metric="mAP@0.75")
    study = tmp_path / "tious.yaml"
    study.write_text(yaml.safe_dump(cfg))
    res = snakemake(tmp_path, "-n", "-p", "--cores", "1", configfile=study)
    assert res.returncode == 0, res.stderr[-3000:]
    commands = [ln for ln in res.stdout.splitlines() if "tadsweep.detections." in ln]
    sweeps = [c for c in commands if "postprocess sweep" in c]
    ensembles = [c for c in commands if "detections.ensemble" in c]
    assert sweeps and ensembles
    assert all(" --tiou 0.5 0.75 " in c for c in sweeps + ensembles), commands[:2]

    cfg["selection"]["metric"] = "mAP@0.3"  # not evaluated any more: refused at parse time
    study.write_text(yaml.safe_dump(cfg))
    res = snakemake(tmp_path, "-n", "--cores", "1", configfile=study)
    assert res.returncode != 0
    assert "selection.metric: mAP@0.3 is not evaluated" in res.stdout + res.stderr


def test_only_the_gpu_rules_go_to_slurm():
    """An admin's rule of thumb, and the profile's promise: CPU work (planning, the demo's data and
    pretraining, sweeps, gates, the report) runs on the submit host; only the GPU rules (the
    preflight, train and detect) are jobs. The doctor too runs on the submit host, where the data
    lives, unless the config's `doctor.submit` sends it to a CPU job."""
    import re

    submitted = []
    for path in sorted((ROOT / "rules").glob("*.smk")):
        text = path.read_text()
        rule = r"^\s*(?:rule|checkpoint) (\w+):\n(.*?)(?=^\s*(?:rule|checkpoint) |\Z)"
        for m in re.finditer(rule, text, re.S | re.M):
            local = re.search(r"^\s*localrule: ([^#\n]*?)\s*(?:#.*)?$", m.group(2), re.M)
            if not local or local.group(1) != "True":
                submitted.append((m.group(1), local and local.group(1)))
    assert submitted == [
        ("doctor", 'not DOCTOR["submit"]'),
        ("preflight", None),
        ("train", None),
        ("detect", None),
    ]
