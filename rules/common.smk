import os
import sys
import time

# the package, also when the workflow runs from another environment
sys.path.insert(0, workflow.basedir)

from tadsweep import cli
from tadsweep.errors import InputError
from tadsweep.plan import budget, costs, rundir, runs, spend, summary
from tadsweep.plan.config import load_study, read_yaml
from tadsweep.report import PLOT_NAMES
from tadsweep.site import apptainer, doctor, paths, slurm
from tadsweep.site.doctor import plan as doctor_plan

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
    cli.stop(exc)  # the line alone: no WorkflowError lines around it

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
    # (minutes_per_epoch against the measured epochs: `python -m tadsweep.report.status`)
    logger.info(summary.plan_summary(STUDY))
    _saved = {rid: f"{R}/runs/{rid}/params.json" for rid in RUNS}
    _winners = {ph: f"{R}/phases/{ph}/winner.json" for ph in STUDY["phases"]}
    for _s in _problems + runs.stale_runs(STUDY, _saved, _winners):
        logger.warning(f"tadsweep: {_s}")
    # the baseline doctor's cheap checks and its last run's findings; severe data faults stop here
    try:
        _doctor = doctor_plan.findings(STUDY, R)
    except InputError as exc:
        raise WorkflowError(f"doctor: {exc}") from None
    for _f in _doctor:
        if _f.severity != "info":
            logger.warning(f"tadsweep {doctor.line(_f)}")
    if _stop := doctor_plan.stop_line(_doctor):
        raise WorkflowError(_stop)


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


def ledger_files(rids):
    """The runs' ledger files (tadsweep.plan.spend; they may not exist yet) as arguments."""
    files = [spend.run_files(R, rid) for rid in rids]
    return [
        *["--attempts", *[str(f["attempts"]) for f in files]],
        *["--bench-train", *[str(f["train"]) for f in files]],
        *["--bench-detect", *[str(f["detect"]) for f in files]],
    ]


def ledger_argv(wildcards, input):
    """collect's ledger files, in the order of its --params then --failed-params."""
    params = [*input.params, *input.failed_params]  # runs/<run id>/params.json
    return ledger_files(
        [os.path.relpath(os.path.dirname(p), f"{R}/runs") for p in params]
    )


def fixed(files):
    """Runs' params.json as inputs: a run's record, written once (rule resolve keeps it).
    ancient(): a resolve that runs again -- for a deleted winner.json, say -- reruns nothing
    that reads them (select rebuilds the winner; nothing trains)."""
    return [ancient(f) for f in files]


def phase_winner(phase):
    """A phase's winner.json as an input (none for the baseline)."""
    return [] if phase == "baseline" else [f"{R}/phases/{phase}/winner.json"]


def base_winner(wildcards):
    """The base phase's winner for a run. ancient(): a rewritten winner.json must not retrain
    anything by itself; a winner that changed is reported (runs.stale_runs), never retrained. A
    deleted one is rebuilt by select, and resolve runs again, keeping params.json (fixed()).
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
            "params": ancient(f"{R}/runs/{wildcards.run}/params.json"),  # fixed()
            "config": f"{R}/runs/{wildcards.run}/config.py",
            # the preflight passed on this partition; ancient(): its rerun never retrains
            "preflight": ancient(PREFLIGHT),
        }
    return {
        "params": ancient(f"{R}/runs/{wildcards.run}/params.json"),  # fixed()
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


DOCTOR = STUDY["doctor"]


def doctor_inputs(wildcards):
    """The doctor's files: the site's data and the first phase's rendered configs (one per arm:
    their parameters depend on no winner), or the demo's data."""
    if BACKEND == "demo":
        return {"data": f"{R}/data/annotations.json"}
    first = {}
    for rid, r in RUNS.items():
        if STUDY["phases"][r.phase]["base"] == "baseline":
            first.setdefault(r.config_id, f"{R}/runs/{rid}/config.py")
    return {"paths": f"{R}/site/paths.json", "configs": list(first.values())}


def doctor_argv(wildcards, input, output, threads):
    """The doctor's arguments (python -m tadsweep.site.doctor)."""
    args = ["--out", os.path.dirname(output.findings), "--jobs", str(threads)]
    args += [a for pattern in DOCTOR["allow"] for a in ("--allow", pattern)]
    if BACKEND == "demo":
        data = os.path.dirname(input.data)
        return args + [
            "--annotation",
            input.data,
            "--category-idx",
            f"{data}/category_idx.txt",
            "--features",
            f"{data}/features",
            "--expect",
            "none",
        ]
    root = STUDY["paths"]["opentad_root"]
    site = {k: paths.site_path(STUDY, k) for k in STUDY["paths"] if k != "opentad_root"}
    own = [paths.site_path(STUDY, k, DOCTOR) for k in ("baseline_config",) if DOCTOR[k]]
    args += [
        "--opentad-root",
        root,
        "--reference",
        paths.site_path(STUDY, "reference", DOCTOR),
    ]
    args += [a for c in [*own, *input.configs] for a in ("--config", c)]
    args += ["--gpus", str(TRAIN_RES["gpus"]), "--expect", DOCTOR["expect"]]
    if DOCTOR["baseline_log"]:
        args += ["--log", paths.site_path(STUDY, "baseline_log", DOCTOR)]
    if DOCTOR["checkpoint_sha256"]:
        args += ["--checkpoint-sha256", DOCTOR["checkpoint_sha256"]]
    return args + [
        "--annotation",
        site["annotation"],
        "--category-idx",
        site["class_map"],
        "--videos",
        site["video_dir"],
        "--checkpoint",
        site["pretrained"],
    ]


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
ENSEMBLE_PHASES = STUDY["ensemble"]["phases"] or STUDY["phase_order"]


if workflow.is_main_process:
    try:
        skipped_runs()  # a gate.json that cannot be read: one line, before the DAG
        for _p in STUDY["phase_order"]:  # a winner.json that cannot be read, too
            if os.path.exists(_w := f"{R}/phases/{_p}/winner.json"):
                runs.read_winner(_w)
    except InputError as exc:
        raise WorkflowError(str(exc)) from None
    if STUDY["resources"]["signal_lead_min"] != 0 and in_arrays("train"):
        logger.warning(
            "tadsweep: slurm-array-jobs runs train in the batch shell, which SLURM's SIGTERM "
            "before the time limit (--signal) does not reach: a job at its limit loses its epoch"
        )
