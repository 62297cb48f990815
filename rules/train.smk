rule resolve:
    input:
        base_winner,
    output:
        f"{R}/runs/{{run}}/params.json",
    log:
        f"{R}/logs/resolve/{{run}}.log",
    localrule: True
    run:
        runs.write_params(STUDY, RUNS[wildcards.run], input, output[0])


if BACKEND == "opentad":

    rule render:
        input:
            params=f"{R}/runs/{{run}}/params.json",
            paths_ok=f"{R}/paths.ok",
        output:
            f"{R}/runs/{{run}}/config.py",
        log:
            f"{R}/logs/render/{{run}}.log",
        localrule: True
        conda:
            CONDA_ENV
        params:
            paths=SITE_ARGS,
            root=STUDY["paths"]["opentad_root"],
        shell:
            "python -m tadsweep.backends.opentad render --params {input.params:q} --out {output:q}"
            " --opentad-root {params.root:q} {params.paths} > {log:q} 2>&1"


rule train:
    input:
        unpack(run_inputs),
    output:
        f"{R}/runs/{{run}}/train.json",
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
        mem_mb=lambda wc, attempt: TRAIN_RES["mem_mb"] * attempt,
        runtime=train_runtime,
    params:
        # the work dir is not an output: Snakemake must never delete checkpoints of a failed job
        rdir=lambda wc: f"{R}/runs/{wc.run}",
        work=lambda wc: f"{R}/runs/{wc.run}/work",
        root=STUDY["paths"]["opentad_root"],
        data=data_dir,
        gpus=TRAIN_RES["gpus"],
    shell:
        STEP.format(step="train", backend=BACKEND)
        + f" {BACKEND_ARGS} --work-dir {{params.work:q}} --done {{output:q}} >> {{log:q}} 2>&1"


rule detect:
    input:
        unpack(run_inputs),
        done=f"{R}/runs/{{run}}/train.json",
    output:
        f"{R}/runs/{{run}}/candidates.json.gz",
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
        mem_mb=lambda wc, attempt: DETECT_RES["mem_mb"] * attempt,
        runtime=lambda wc, attempt: (DETECT_RES["runtime_min"] or 60) * attempt,
    params:
        rdir=lambda wc: f"{R}/runs/{wc.run}",
        work=lambda wc: f"{R}/runs/{wc.run}/work",
        root=STUDY["paths"]["opentad_root"],
        data=data_dir,
        gpus=DETECT_RES["gpus"],
    shell:
        STEP.format(step="detect", backend=BACKEND)
        + f" {BACKEND_ARGS} --work-dir {{params.work:q}} --out {{output:q}} > {{log:q}} 2>&1"
