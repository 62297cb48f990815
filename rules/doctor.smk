# The baseline doctor (tadsweep.site.doctor): the study's configs against upstream's recipe, the
# user's own baseline config and log (doctor.baseline_config/_log), the data and the pretrained
# checkpoint, before the preflight and any GPU job: on the submit host, or as a CPU job through
# the profile (doctor.submit). It fails on an error finding that doctor.allow does not accept; the
# report's first screen shows its findings.
rule doctor:
    input:
        unpack(doctor_inputs),
    output:
        findings=f"{R}/doctor/findings.json",
        videos=report(
            f"{R}/doctor/videos.tsv",
            caption="../report/doctor_videos.rst",
            category="0. Headline",
            labels={"table": "data audit, per video"},
        ),
    log:
        f"{R}/logs/doctor.log",
    benchmark:
        f"{R}/benchmarks/doctor.tsv"
    localrule: not DOCTOR["submit"]
    conda:
        None if CONTAINER else CONDA_ENV
    container:
        CONTAINER
    threads: DOCTOR["cpus"]  # parallel video probes
    resources:
        **({k: v for k, v in SLURM_SITE.items()} if DOCTOR["submit"] else {}),
        mem_mb=8000,
        runtime=30,
    params:
        argv=doctor_argv,
    shell:
        "python -m tadsweep.site.doctor {params.argv:q} > {log:q} 2>&1"
