# tadsweep: an AdaTAD+LoRA improvement study as a grid of GPU training runs.
#   snakemake -n --profile slurm      the plan
#   snakemake --profile slurm         the study on SLURM, GPU rules in the OpenTAD container
#   snakemake --report report.html    the report
from snakemake.utils import min_version

min_version("9.0")


# A study given with --configfile replaces the default one instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/plan.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/select.smk"
include: "rules/report.smk"


onstart:
    # What every job inherits, set where the jobs are launched (never while a dry-run parses):
    # PYTHONPATH with this checkout's package, and what Apptainer binds for the GPU jobs.
    os.environ.update(apptainer.job_environment(STUDY, workflow.basedir))


rule all:
    default_target: True
    input:
        f"{R}/plan.tsv",
        f"{R}/summary.tsv",
        f"{R}/stats/headline.html",
        rules.plots.output,
        expand(f"{R}/phases/{{phase}}/winner.json", phase=STUDY["phase_order"]),
