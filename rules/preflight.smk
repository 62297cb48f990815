# One short job per GPU partition in use, before any training (tadsweep.site.preflight): in the
# image, with the trainings' GPUs, binds and partition. Every train job needs its output (as
# ancient(): a rerun of the preflight never retrains). The demo backend has none: it has no image,
# no compiled extension and no site paths, and a broken demo training fails in seconds itself.
if BACKEND == "opentad":

    rule preflight:
        input:
            config=preflight_config,
            paths=f"{R}/site/paths.json",
            # the doctor found no unaccepted fault; ancient(): its rerun needs no new preflight
            doctor=ancient(f"{R}/doctor/findings.json"),
        output:
            PREFLIGHT,
        log:
            f"{R}/logs/preflight/{PARTITION}.log",
        benchmark:
            f"{R}/benchmarks/preflight/{PARTITION}.tsv"
        retries: 0  # a broken image or bind does not mend itself: stop at once
        container:
            CONTAINER
        threads: TRAIN_RES["gpus"] * TRAIN_RES["cpus_per_gpu"]
        resources:
            **slurm_resources(TRAIN_RES),
            mem_mb=TRAIN_RES["mem_mb"],
            runtime=15,
        params:
            root=STUDY["paths"]["opentad_root"],
            gpus=TRAIN_RES["gpus"],
        shell:
            "python -m tadsweep.site.preflight check --opentad-root {params.root:q}"
            " --config {input.config:q} --paths {input.paths:q} --gpus {params.gpus}"
            " --out {output:q} > {log:q} 2>&1"
