"""The workflow as Snakemake sees it: dry-runs of both studies, lint, and config errors."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args, cwd=ROOT, env=None):
    env = dict(os.environ if env is None else env)
    # Apptainer cannot be installed here: its documented test double stands in (README).
    env["PATH"] = f"{ROOT / 'tests' / 'doubles' / 'bin'}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        [*SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


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
    res = snakemake("-n", "--profile", "slurm", "--directory", str(ROOT))
    assert res.returncode == 0, res.stderr[-3000:]
    counts = job_counts(res.stdout + res.stderr)
    assert counts["train"] == 33 and counts["detect"] == 33 and counts["sweep"] == 33
    assert counts["select"] == 3 and counts["check_paths"] == 1
    out = res.stdout + res.stderr
    assert "the phasing trains 33" in out  # the plan summary is printed with the plan
    assert "--gpus 1" in out and "gpu=1, cpus_per_gpu=8" in out


def test_dry_run_of_the_demo_study():
    res = snakemake("-n", "--configfile", "configs/demo.yaml", "--cores", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    counts = job_counts(res.stdout + res.stderr)
    assert counts["train"] == 18 and counts["demo_data"] == 1 and counts["demo_pretrain"] == 1
    assert "check_paths" not in counts  # the demo needs no site paths


def test_lint_has_no_findings():
    res = snakemake("--lint", "--configfile", "configs/demo.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
    res = snakemake("--lint")
    assert res.returncode == 0, res.stdout + res.stderr


def test_bad_config_stops_snakemake_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = (ROOT / "configs" / "demo.yaml").read_text().replace("v1: {lr: 2.0e-3", "v1: {lr: 2e-3")
    bad.write_text(text)
    res = snakemake("-n", "--configfile", str(bad), "--cores", "1")
    assert res.returncode != 0
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if "variants.schedule.v1.lr" in ln]
    assert lines == [
        f"{bad}: variants.schedule.v1.lr: '2e-3' is text, not a number; write it "
        "unquoted (YAML reads 1e-4 as text: write 1.0e-4)"
    ]


def test_code_is_formatted_and_clean():
    bin_dir = Path(sys.executable).parent
    for cmd in (
        [str(bin_dir / "ruff"), "check", "."],
        [str(bin_dir / "ruff"), "format", "--check", "."],
        [str(bin_dir / "snakefmt"), "--check", "Snakefile", "rules"],
    ):
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, f"{' '.join(cmd[1:])}:\n{res.stdout}{res.stderr}"
