"""Snakemake entry point of rule ensemble: pick the top-k runs, then combine their candidates."""

import contextlib
import os

from tadsweep.detections.ensemble import main
from tadsweep.errors import run_cli
from tadsweep.plan.select import top_runs

sm = snakemake  # noqa: F821 (injected by Snakemake's script directive)
spec = sm.params.spec
members = top_runs(sm.params.results, sm.params.runs, sm.params.metric, spec["top_k"])
files = [os.path.join(sm.params.results, "runs", m, "candidates.json.gz") for m in members]
argv = [
    "--gt", sm.params.gt,
    "--subset", sm.params.subset,
    "--candidates", *files,
    "--names", *members,
    "--setting", sm.input.setting,
    "--combine", spec["combine"],
    "--out", sm.output[0],
]  # fmt: skip
argv += ["--greedy"] if spec["greedy"] else []
with open(sm.log[0], "w") as log, contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
    status = run_cli(main, argv)
if status:
    raise SystemExit(f"ensemble failed; see {sm.log[0]}")
