rule resolve:
    input:
        base_winner,
    output:
        update(run_file("params.json")),  # a run's record: kept once written (fixed())
    log:
        f"{R}/logs/resolve/{{run}}.log",
    localrule: True
    run:
        if _same := runs.write_params(STUDY, RUNS[wildcards.run], input, output[0]):
            logger.warning(f"tadsweep: {_same}")


if BACKEND == "opentad":

    rule render:
        input:
            params=ancient(run_file("params.json")),  # fixed()
            site=f"{R}/site/paths.json",
        output:
            run_file("config.py"),
        log:
            f"{R}/logs/render/{{run}}.log",
        localrule: True
        conda:
            CONDA_ENV
        params:
            argv=render_argv,
        shell:
            "python -m tadsweep.backends.opentad render {params.argv:q} > {log:q} 2>&1"


# train and detect run under rundir, which marks the run failed (FAILED.json) when the step fails
# by itself; the work dir is not an output, so Snakemake never deletes a failed job's checkpoints.
# `exec`: no shell between Snakemake and rundir, which SIGTERM (sent to every process of a SLURM
# job step before its time limit) would kill while the training saves its checkpoint.
rule train:
    input:
        unpack(run_inputs),
        gate=run_gate,  # a remaining seed of a gated phase waits for its gate
    output:
        run_file("train.json"),
    log:
        f"{R}/logs/train/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{run}}.tsv"
    conda:
        None if CONTAINER else CONDA_ENV
    container:
        CONTAINER
    threads: TRAIN_RES["gpus"] * TRAIN_RES["cpus_per_gpu"]
    resources:
        **slurm_resources(TRAIN_RES),
        mem_mb=lambda wc, attempt: TRAIN_RES["mem_mb"]
        * resource_attempt("train", wc, attempt),
        runtime=train_runtime,
        slurm_extra=train_signal,
    params:
        rdir=lambda wc: f"{R}/runs/{wc.run}",
        backend=BACKEND_MODULE,
        argv=backend_argv("train", TRAIN_RES),
    shell:
        "exec python -m tadsweep.plan.rundir run --run-dir {params.rdir:q} --step train --log {log:q}"
        " -- python -m {params.backend:q} train {params.argv:q} >> {log:q} 2>&1"


rule detect:
    input:
        unpack(run_inputs),
        done=run_file("train.json"),
    output:
        run_file("candidates.npz"),
    log:
        f"{R}/logs/detect/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/detect/{{run}}.tsv"
    conda:
        None if CONTAINER else CONDA_ENV
    container:
        CONTAINER
    threads: DETECT_RES["gpus"] * DETECT_RES["cpus_per_gpu"]
    resources:
        **slurm_resources(DETECT_RES),
        mem_mb=lambda wc, attempt: DETECT_RES["mem_mb"]
        * resource_attempt("detect", wc, attempt),
        runtime=lambda wc, attempt: (DETECT_RES["runtime_min"] or 60)
        * resource_attempt("detect", wc, attempt),
    params:
        rdir=lambda wc: f"{R}/runs/{wc.run}",
        backend=BACKEND_MODULE,
        argv=backend_argv("detect", DETECT_RES),
    shell:
        "exec python -m tadsweep.plan.rundir run --run-dir {params.rdir:q} --step detect --log {log:q}"
        " -- python -m {params.backend:q} detect {params.argv:q} > {log:q} 2>&1"
