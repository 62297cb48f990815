"""Dry-run time of the workflow for studies of 10, 100 and 1,000 training runs.

Each study is the real config.yaml with one phase of N-4 runs ((N-4)/2 LoRA variants, the baseline
included, x 2 seeds) and a second phase of 2 arms x 2 seeds on its winner, planned with
`snakemake -n` (opentad backend, apptainer test double on PATH). Prints seconds, jobs, the marginal
cost per run, and the time relative to the smallest study."""

import copy
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def study(n_runs: int) -> dict:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg = copy.deepcopy(cfg)
    seeds = [1, 2]
    n_p1 = (n_runs - 4) // len(seeds)  # configs in p1, the base included
    cfg["study"]["seeds"] = seeds
    cfg["study"]["name"] = f"bench{n_runs}"
    names = [f"r{i}" for i in range(n_p1 - 1)]
    for i, name in enumerate(names):
        cfg["variants"]["lora"][name] = {"r": 8 + i % 64, "alpha": 16, "dropout": 0.05}
    cfg["phases"] = {
        "p1": {"base": "baseline", "grid": {"lora": names}},
        "p2": {"base": "p1", "arms": [{"augment": "none"}, {"structure": "dp015"}]},
    }
    return cfg


def dry_run(cfg: dict, workdir: Path) -> tuple[float, int]:
    path = workdir / f"{cfg['study']['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(
        [str(Path(sys.executable).parent), str(ROOT / "tests" / "doubles" / "bin"), env["PATH"]]
    )
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "--quiet",
        "rules",
        "--cores",
        "1",
        "--configfile",
        str(path),
        "--directory",
        str(workdir),
        "--snakefile",
        str(ROOT / "Snakefile"),
    ]
    start = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if res.returncode:
        sys.exit(f"dry-run failed:\n{res.stderr[-2000:]}")
    totals = [ln.split()[1] for ln in res.stdout.splitlines() if ln.startswith("total ")]
    jobs = int(totals[-1])
    return seconds, jobs


def main() -> None:
    print(
        "snakemake -n, opentad backend; 'marginal' = extra seconds per run over the previous size"
    )
    print(f"{'runs':>6} {'jobs':>7} {'seconds':>8} {'marginal ms/run':>16} {'vs 10 runs':>11}")
    prev, first = None, None
    with tempfile.TemporaryDirectory() as tmp:
        for n in (10, 100, 1000):
            seconds, jobs = dry_run(study(n), Path(tmp))
            marginal = (seconds - prev[1]) / (n - prev[0]) * 1000 if prev else float("nan")
            first = first or seconds
            print(f"{n:>6} {jobs:>7} {seconds:>8.2f} {marginal:>16.1f} {seconds / first:>10.1f}x")
            prev = (n, seconds)


if __name__ == "__main__":
    main()
