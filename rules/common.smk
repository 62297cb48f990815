import os
import shlex
import sys

from snakemake.utils import validate

# the package, also when the workflow runs from another environment
sys.path.insert(0, workflow.basedir)

from tadsweep.plan import costs, rundir, runs, summary
from tadsweep.plan.config import load_study
from tadsweep.report import plots
from tadsweep.site import apptainer, paths, slurm
from tadsweep.errors import ConfigError

_source = ", ".join(str(f) for f in workflow.configfiles) or "config"
try:
    STUDY, WARNINGS = load_study(config, source=_source)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
# the same schema through Snakemake's own check (defaults were filled above)
validate(config, "../schemas/config.schema.yaml", set_default=False)

R = f"{STUDY['study']['results']}/{STUDY['study']['name']}"
BACKEND = STUDY["study"]["backend"]
RUNS = runs.run_by_id(STUDY)
# Runs whose train or detect step failed by itself: reported as failed, not retried, until their
# FAILED.json is removed (a kill or preemption leaves none: those resume on the next run).
FAILED = rundir.failed_runs(R, RUNS)
COSTS = costs.config_costs(STUDY)
CONDA_ENV = "../envs/tadsweep.yaml"
TRAIN_RES = STUDY["resources"]["train"]
DETECT_RES = STUDY["resources"]["detect"]
CONTAINER = STUDY["container"]["image"] if BACKEND == "opentad" else None
if workflow.is_main_process:  # not again in every cluster job
    for _w in WARNINGS:
        logger.warning(f"tadsweep config warning: {_w}")
    logger.info(summary.plan_summary(STUDY))
    for _s in runs.stale_runs(STUDY, R):
        logger.warning(
            f"tadsweep: {_s}; results are kept: delete that folder to retrain it"
        )
# The site files a rendered OpenTAD config points at (render's command line).
SITE_ARGS = " ".join(
    f"--{k.replace('_', '-')} {shlex.quote(paths.site_path(STUDY, k))}"
    for k in ("base_config", "annotation", "class_map", "video_dir", "pretrained")
)
# A train or detect step runs under rundir, which marks the run failed if the step fails.
STEP = (
    "python -m tadsweep.plan.rundir run --run-dir {{params.rdir:q}} --step {step} --log {{log:q}}"
    " -- python -m tadsweep.backends.{backend} {step} --params {{input.params:q}}"
)
# How train and detect hand a run to the backend's CLI.
BACKEND_ARGS = {
    "opentad": "--config {input.config:q} --opentad-root {params.root:q} --gpus {params.gpus}",
    "demo": "--data {params.data:q} --backbone {input.backbone:q}",
}[BACKEND]
# Jobs (local, cluster, container) import the package from this checkout; apptainer gets its binds.
apptainer.prepare_environment(STUDY, workflow.basedir)


wildcard_constraints:
    run=r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.=+-]+/seed=\d+",
    phase=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def live_runs(phases=None):
    """Run ids (of the given phases) that have not failed."""
    return [
        rid
        for rid, r in RUNS.items()
        if rid not in FAILED and (phases is None or r.phase in phases)
    ]


def run_files(name, phases=None):
    """A per-run file of every run that has not failed (of the given phases)."""
    return [f"{R}/runs/{rid}/{name}" for rid in live_runs(phases)]


def phase_winner(phase):
    """A phase's winner.json as an input (none for the baseline)."""
    return [] if phase == "baseline" else [f"{R}/phases/{phase}/winner.json"]


def base_winner(wildcards):
    """The base phase's winner for a run. ancient(): a rewritten winner.json must not retrain
    anything by itself; a winner that changed is reported (runs.stale_runs), never retrained.
    """
    return [
        ancient(w)
        for w in phase_winner(STUDY["phases"][RUNS[wildcards.run].phase]["base"])
    ]


# The annotation file: made by a rule in the demo; a site file (checked by check_paths) otherwise.
GT = (
    f"{R}/data/annotations.json"
    if BACKEND == "demo"
    else paths.site_path(STUDY, "annotation")
)
GT_READY = GT if BACKEND == "demo" else f"{R}/paths.ok"


def slurm_resources(res):
    """A GPU job's SLURM request: --gres when a gres string is given, else --gpus (with the model
    when given); CPUs per GPU; partition and account from the config or the environment.
    """
    out = {"gres": res["gres"]} if res["gres"] else {"gpu": res["gpus"]}
    if res["gpu_model"] and not res["gres"]:
        out["gpu_model"] = res["gpu_model"]
    out["cpus_per_gpu"] = res["cpus_per_gpu"]
    return out | slurm.slurm_site(STUDY)


def train_runtime(wildcards, attempt):
    """Wall minutes: the run's GPU-hours bound, with margin, times the attempt."""
    return costs.runtime_minutes(
        STUDY, COSTS[RUNS[wildcards.run].config_id][0], attempt
    )


def run_inputs(wildcards):
    """What a run's GPU jobs read: its params, and the rendered config or the demo's data."""
    rdir = f"{R}/runs/{wildcards.run}"
    if BACKEND == "opentad":
        return {"params": f"{rdir}/params.json", "config": f"{rdir}/config.py"}
    return {
        "params": f"{rdir}/params.json",
        "data": f"{R}/data/annotations.json",
        "backbone": f"{R}/data/backbone.pt",
    }


def data_dir(wildcards, input):
    """The demo's data folder, from the annotation file it holds (none for opentad)."""
    return os.path.dirname(input.data) if "data" in input.keys() else ""


def ensemble_outputs():
    return f"{R}/ensemble/ensemble.tsv" if STUDY["ensemble"]["enabled"] else []


PLOT_NAMES = plots.PLOT_NAMES
ENSEMBLE_PHASES = STUDY["ensemble"]["phases"] or STUDY["phase_order"]
