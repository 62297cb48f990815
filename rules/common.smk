import os
import sys
import time

# the package, also when the workflow runs from another environment
sys.path.insert(0, workflow.basedir)

from types import SimpleNamespace

from tadsweep.errors import InputError
from tadsweep.plan import budget, costs, rundir, runs, select, summary
from tadsweep.plan.config import load_study, read_yaml
from tadsweep.report import ledger, plots
from tadsweep.site import apptainer, paths, slurm

# One validation path: the JSON Schema (schemas/config.schema.yaml, defaults filled in) and the
# checks across keys, each problem one line naming the file and the key.
# Snakemake's own YAML reader keeps the last of two equal keys and expands aliases: each config
# file is read once more by tadsweep's (tadsweep.readers), which refuses both.
_source = ", ".join(str(f) for f in workflow.configfiles) or "config"
try:
    for _f in workflow.configfiles:
        read_yaml(_f)
    STUDY, WARNINGS = load_study(config, source=_source)
    SLURM_SITE = slurm.slurm_site(STUDY)
except InputError as exc:
    raise WorkflowError(str(exc)) from None

R = os.path.join(STUDY["study"]["results"], STUDY["study"]["name"])
BACKEND = STUDY["study"]["backend"]
BACKEND_MODULE = (
    f"tadsweep.backends.{BACKEND}"  # its CLI: render (opentad), train, detect
)
RUNS = runs.run_by_id(STUDY)
# Runs whose train or detect step failed by itself: reported as failed, not retried, until their
# FAILED.json is removed (a kill or preemption leaves none: those resume on the next run).
_problems = []  # FAILED.json files tadsweep did not write: ignored, reported below
FAILED = rundir.failed_runs(
    {rid: f"{R}/runs/{rid}/{rundir.FAILED}" for rid in RUNS}, _problems
)
COSTS = costs.config_costs(STUDY)
CONDA_ENV = "../envs/tadsweep.yaml"
TRAIN_RES = STUDY["resources"]["train"]
DETECT_RES = STUDY["resources"]["detect"]
CONTAINER = STUDY["container"]["image"] if BACKEND == "opentad" else None
# one preflight per GPU partition in use (train and detect share SLURM_SITE's partition)
PARTITION = SLURM_SITE.get("slurm_partition", "default")
PREFLIGHT = f"{R}/preflight/{PARTITION}.json"


def preflight_config(wildcards):
    """The preflight's model: the rendered config of the first phase's first run (its
    parameters depend on no winner, so it exists before any training)."""
    first = next(r for r in RUNS if RUNS[r].phase == STUDY["phase_order"][0])
    return f"{R}/runs/{first}/config.py"


if workflow.is_main_process:  # not again in every cluster job
    for _w in WARNINGS:
        logger.warning(f"tadsweep config warning: {_w}")
    # minutes_per_epoch against the first finished epochs, once some exist
    logger.info(summary.plan_summary(STUDY, ledger.estimate_warnings(STUDY, R)))
    _saved = {rid: f"{R}/runs/{rid}/params.json" for rid in RUNS}
    _winners = {ph: f"{R}/phases/{ph}/winner.json" for ph in STUDY["phases"]}
    for _s in _problems + runs.stale_runs(STUDY, _saved, _winners):
        logger.warning(f"tadsweep: {_s}")


wildcard_constraints:
    run=r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.=+-]+/seed=\d+",
    phase=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def live_runs(phases=None):
    """Run ids (of the given phases) that have not failed and no gate skipped. Read when a
    job is built: a gate that is decided drops its skipped runs from every consumer."""
    skipped = skipped_runs()
    return [
        rid
        for rid, r in RUNS.items()
        if rid not in FAILED
        and rid not in skipped
        and (phases is None or r.phase in phases)
    ]


def run_files(name, phases=None):
    """A per-run file of every live run (of the given phases)."""
    return [f"{R}/runs/{rid}/{name}" for rid in live_runs(phases)]


# Staged seeds and the budget (tadsweep.plan.budget): a gated phase's remaining seeds wait for
# its gate, a checkpoint (rules/gate.smk). Until a gate is decided its runs count as live, so the
# dry-run shows every job; consumers take the gates as inputs, so Snakemake rebuilds them when
# a gate is decided and the skipped runs' jobs, needed by nothing, leave the DAG unsubmitted.
GATED = budget.gated_phases(STUDY)


def gate_file(phase):
    return f"{R}/phases/{phase}/gate.json"


def gate_files(phases=None):
    """The gates of the given phases (all by default): inputs of their runs' consumers."""
    return [gate_file(p) for p in GATED if phases is None or p in phases]


def skipped_runs():
    """Runs the decided gates skipped."""
    out = set()
    for phase in GATED:
        if os.path.exists(gate_file(phase)):
            out.update(budget.read_gate(gate_file(phase))["skipped_runs"])
    return out


def run_gate(wildcards):
    """A run's gate, when it trains only if its phase's gate admits it. ancient(): a gate
    decided again never retrains what it admitted before."""
    r = RUNS[wildcards.run]
    waits = budget.waits(STUDY, r.phase, r.overrides, r.seed)
    return [ancient(gate_file(r.phase))] if waits else []


# every run's attempts.jsonl and step benchmarks (they may not exist yet), in the order of
# collect's --params then --failed-params, whatever runs those hold
def ledger_argv(wildcards, input):
    """collect's ledger files."""
    params = [*input.params, *input.failed_params]  # runs/<run id>/params.json
    rids = [os.path.relpath(os.path.dirname(p), f"{R}/runs") for p in params]
    files = [ledger.run_files(R, rid) for rid in rids]
    return [
        *["--attempts", *[str(f["attempts"]) for f in files]],
        *["--bench-train", *[str(f["train"]) for f in files]],
        *["--bench-detect", *[str(f["detect"]) for f in files]],
    ]


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


# The ground truth every evaluation reads, made in both backends by a rule -- the demo's data rule,
# or check_paths, which copies the site's annotation file once every site path is checked.
GT = f"{R}/data/annotations.json" if BACKEND == "demo" else f"{R}/site/annotations.json"


def slurm_resources(res):
    """A GPU job's SLURM request: --gres when a gres string is given, else --gpus (with the model
    when given); CPUs per GPU; partition and account from the config or the environment.
    """
    out = {"gres": res["gres"]} if res["gres"] else {"gpu": res["gpus"]}
    if res["gpu_model"] and not res["gres"]:
        out["gpu_model"] = res["gpu_model"]
    out["cpus_per_gpu"] = res["cpus_per_gpu"]
    return out | SLURM_SITE


def train_runtime(wildcards, attempt):
    """Wall minutes: the run's GPU-hours bound, with margin, times the attempt."""
    return costs.runtime_minutes(
        STUDY,
        COSTS[RUNS[wildcards.run].config_id][0],
        resource_attempt("train", wildcards, attempt),
    )


def train_signal(wildcards, attempt):
    """sbatch's --signal: SIGTERM some minutes before the time limit, so that the training
    stops at the end of its epoch with a checkpoint the retry resumes from."""
    lead = costs.signal_lead_minutes(STUDY, train_runtime(wildcards, attempt))
    return f"--signal=TERM@{lead * 60}" if lead else ""


_STARTED = time.time()  # only this invocation's SLURM jobs count as attempts that ran


def in_arrays(rule):
    """Whether the SLURM plugin submits this rule's jobs as array jobs (slurm-array-jobs)."""
    arrays = str(getattr(workflow.executor_settings, "array_jobs", None) or "")
    return bool(
        {rule, "all"} & {a.strip() for a in arrays.replace(";", ",").split(",")}
    )


def resource_attempt(rule, wildcards, attempt):
    """The attempt memory and wall time scale with: on SLURM, earlier attempts count only if
    their job started (killed for memory or time), not if sbatch refused them. Array jobs keep
    Snakemake's attempt (their logs are per array, not per run)."""
    if attempt == 1 or getattr(workflow.executor_plugin, "name", None) != "slurm":
        return attempt
    if in_arrays(rule):
        return attempt
    logdir = (
        getattr(workflow.executor_settings, "logdir", None) or ".snakemake/slurm_logs"
    )
    started = slurm.jobs_started(logdir, rule, dict(wildcards.items()), _STARTED)
    return slurm.resource_attempt(attempt, started)


def run_file(name):
    """A per-run file as a rule's input or output pattern."""
    return f"{R}/runs/{{run}}/{name}"


def run_inputs(wildcards):
    """What a run's GPU jobs read: its params, and the rendered config or the demo's data."""
    if BACKEND == "opentad":
        return {
            "params": f"{R}/runs/{wildcards.run}/params.json",
            "config": f"{R}/runs/{wildcards.run}/config.py",
            # the preflight passed on this partition; ancient(): its rerun never retrains
            "preflight": ancient(PREFLIGHT),
        }
    return {
        "params": f"{R}/runs/{wildcards.run}/params.json",
        "data": f"{R}/data/annotations.json",
        "backbone": f"{R}/data/backbone.pt",
    }


def backend_argv(step, res):
    """The backend CLI's arguments for a run's train or detect step (Snakemake quotes each)."""

    def argv(wildcards, input, output):
        args = [
            "--params",
            input.params,
            "--work-dir",
            f"{R}/runs/{wildcards.run}/work",
        ]
        if BACKEND == "opentad":
            args += ["--config", input.config, "--gpus", str(res["gpus"])]
            args += ["--opentad-root", STUDY["paths"]["opentad_root"]]
        else:
            args += [
                "--data",
                os.path.dirname(input.data),
                "--backbone",
                input.backbone,
            ]
        return args + (
            ["--done", output[0]] if step == "train" else ["--out", output[0]]
        )

    return argv


def render_argv(wildcards, input, output):
    """render's arguments: the run's params, the checkout and the site files (paths.*)."""
    args = ["--params", input.params, "--out", output[0]]
    args += ["--opentad-root", STUDY["paths"]["opentad_root"]]
    for key in ("base_config", "annotation", "class_map", "video_dir", "pretrained"):
        args += [f"--{key.replace('_', '-')}", paths.site_path(STUDY, key)]
    return args


def lineage(phase):
    """A phase and its ancestors."""
    phases = [phase]
    while STUDY["phases"][phases[-1]]["base"] != "baseline":
        phases.append(STUDY["phases"][phases[-1]]["base"])
    return phases


def phase_files(phase, name):
    """A per-run file of a phase's live runs and of its ancestors' (the incumbent's are there)."""
    return run_files(name, lineage(phase))


def select_argv(wildcards, input, output):
    """select's arguments; the incumbent (base phase's winner) only for phases on a phase."""
    args = ["--phase", wildcards.phase]
    args += optional("--params", input.params) + optional("--sweeps", input.sweeps)
    args += optional("--incumbent", input.incumbent)
    args += ["--metric", STUDY["selection"]["metric"]]
    args += ["--aggregate", STUDY["selection"]["aggregate"]]
    args += ["--crossfit" if STUDY["selection"]["crossfit"] else "--no-crossfit"]
    # arms whose remaining seeds a gate did not train may not win on one seed
    args += ["--gate", gate_file(wildcards.phase)] if wildcards.phase in GATED else []
    return args + ["--winner", output.winner, "--ranking", output.ranking]


def optional(flag, files):
    """`flag FILE...` for an optional input (one file or a list), nothing when it is absent."""
    files = [files] if isinstance(files, str) else list(files)
    return [flag, *files] if files else []


def ensemble_outputs():
    return f"{R}/ensemble/ensemble.tsv" if STUDY["ensemble"]["enabled"] else []


def ensemble_crossfit_outputs():
    return f"{R}/ensemble/crossfit.json" if STUDY["ensemble"]["enabled"] else []


TIOUS = [str(t) for t in STUDY["evaluation"]["tious"]]  # every evaluation's thresholds
PLOT_NAMES = plots.PLOT_NAMES
ENSEMBLE_PHASES = STUDY["ensemble"]["phases"] or STUDY["phase_order"]


def rebuild_winners():
    """Deleting a derived file must never cost GPU-hours: a phase's winner.json that is missing
    while runs were already resolved from it would make Snakemake resolve and train those runs
    again (ancient() spares only a file that exists). It is rebuilt here, before the DAG, by
    select itself from the phase's existing results (the same content, so nothing downstream
    changes); when those are incomplete, the study stops with one line. A broken winner.json
    stops it too."""
    for phase in STUDY["phase_order"]:
        winner = f"{R}/phases/{phase}/winner.json"
        if os.path.exists(winner):
            runs.read_winner(winner)
            continue
        resolved = [
            f"{R}/runs/{rid}/params.json"
            for rid, r in RUNS.items()
            if STUDY["phases"][r.phase]["base"] == phase
            and os.path.exists(f"{R}/runs/{rid}/params.json")
        ]
        if not resolved:
            continue  # nothing depends on it yet: rule select makes it as usual
        base = STUDY["phases"][phase]["base"]
        files = SimpleNamespace(
            params=phase_files(phase, "params.json"),
            sweeps=phase_files(phase, "sweep.tsv"),
            incumbent=phase_winner(base),
        )
        missing = [
            f
            for f in files.params + files.sweeps + files.incumbent
            if not os.path.exists(f)
        ]
        if missing:
            raise InputError(
                f"{winner}: missing, and {resolved[0]} was resolved from it; it cannot be "
                f"rebuilt from phase {phase}'s results ({missing[0]} is missing): restore "
                f"them, or delete the runs resolved from it to train them again"
            )
        out = SimpleNamespace(winner=winner, ranking=f"{R}/phases/{phase}/ranking.tsv")
        select.main(select_argv(SimpleNamespace(phase=phase), files, out))
        logger.warning(
            f"tadsweep: {winner} was missing: rebuilt from phase {phase}'s existing "
            "results (nothing is retrained)"
        )


if workflow.is_main_process:
    try:
        rebuild_winners()
        skipped_runs()  # a gate.json that cannot be read: one line, before the DAG
    except InputError as exc:
        raise WorkflowError(str(exc)) from None
    if STUDY["resources"]["signal_lead_min"] != 0 and in_arrays("train"):
        logger.warning(
            "tadsweep: slurm-array-jobs runs train in the batch shell, which SLURM's SIGTERM "
            "before the time limit (--signal) does not reach: a job at its limit loses its epoch"
        )
