# tadsweep: an AdaTAD+LoRA improvement study as a grid of GPU training runs.
#   snakemake -n --profile slurm      the plan
#   snakemake --profile slurm         the study on SLURM, GPU rules in the OpenTAD container
#   snakemake --report report.html    the report
import sys

from snakemake.utils import min_version

min_version("9.0")


# A study given with --configfile replaces the default one instead of being merged into it.
if not workflow.overwrite_configfiles:
    # tadsweep's reader first (one line for any problem): Snakemake's own stops with a
    # traceback on a file that is not UTF-8.
    sys.path.insert(0, workflow.basedir)
    from tadsweep import cli
    from tadsweep.errors import InputError
    from tadsweep.plan.config import read_yaml

    try:
        read_yaml("config.yaml")
    except InputError as exc:
        cli.stop(exc)  # the line alone (cli.stop)

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/plan.smk"
include: "rules/data.smk"
include: "rules/doctor.smk"
include: "rules/preflight.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/select.smk"
include: "rules/gate.smk"
include: "rules/report.smk"


onstart:
    # What every job inherits, set where the jobs are launched (never while a dry-run parses):
    # PYTHONPATH with this checkout's package, and what Apptainer binds for the GPU jobs.
    os.environ.update(apptainer.job_environment(STUDY, workflow.basedir))
    # without them the first post-processing job would fail, after the trainings
    from tadsweep.detections import missing_kernels

    if _missing := missing_kernels():
        raise WorkflowError(
            f"tadsweep's compiled kernels are not built for this Python ({', '.join(_missing)}"
            f" in {workflow.basedir}/tadsweep/detections): run `make setup` or"
            " `pip install -e .` in the checkout"
        )
    if workflow.executor_plugin.name == "slurm":
        # before the first sbatch: a partition or account SLURM refuses never succeeds, and
        # each retry would ask twice the memory and time
        try:
            for w in slurm.check_site(SLURM_SITE):
                logger.warning(f"tadsweep: {w}")
        except InputError as exc:
            raise WorkflowError(f"{_source}: {exc}") from None
        # without job accounting, the plugin's fallback to sacct would never see a job end
        _es = workflow.executor_settings
        try:
            for w in slurm.check_status_source(
                getattr(_es, "status_command", None),
                getattr(_es, "init_seconds_before_status_checks", None) or 40,
            ):
                logger.warning(f"tadsweep: {w}")
        except InputError as exc:  # a profile setting, not the config
            raise WorkflowError(f"profile: {exc}") from None


onerror:
    # the doctor's errors and the preflight's own line: why the study stopped, on the console
    if not os.path.exists(f"{R}/doctor/findings.json"):
        for _line in doctor.error_lines(f"{R}/logs/doctor.log"):
            logger.error(f"tadsweep: the doctor stopped the study: {_line}")
    if BACKEND == "opentad" and not os.path.exists(PREFLIGHT):
        from tadsweep.site.preflight import failure_line

        _log = f"{R}/logs/preflight/{PARTITION}.log"
        if _line := failure_line(_log):
            logger.error(
                f"tadsweep: preflight failed, no training submitted: {_line} ({_log})"
            )


rule all:
    default_target: True
    input:
        f"{R}/plan.tsv",
        f"{R}/summary.tsv",
        f"{R}/stats/headline.html",
        rules.plots.output,
        expand(f"{R}/phases/{{phase}}/winner.json", phase=STUDY["phase_order"]),
