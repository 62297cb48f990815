rule collect:
    input:
        params=run_files("params.json"),
        train=run_files("train.json"),
        curves=run_files("curves.tsv"),
        sweeps=run_files("sweep.tsv"),
    output:
        report(
            f"{R}/summary.tsv",
            caption="../report/summary.rst",
            category="1. Summary",
            labels={"table": "every run x post-processing setting"},
        ),
    log:
        f"{R}/logs/collect.log",
    localrule: True
    params:
        runs=live_runs(),
        failed=FAILED,
        gpus=TRAIN_RES["gpus"],
    run:
        from tadsweep.report.collect import collect

        collect(R, params.runs, params.gpus, output[0], params.failed)


rule stats:
    input:
        summary=f"{R}/summary.tsv",
        study=f"{R}/study.json",
        ensemble=ensemble_outputs(),
    output:
        headline=f"{R}/stats/headline.json",
        tables=[
            report(
                f"{R}/stats/{name}.tsv",
                caption="../report/stats_tables.rst",
                category="1. Summary",
                labels={"table": name},
            )
            for name in ("configs", "vs_baseline", "claims", "inert")
        ],
    log:
        f"{R}/logs/stats.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        ensemble=lambda wc, input: (
            f"--ensemble {shlex.quote(input.ensemble)}" if input.ensemble else ""
        ),
        out=lambda wc, output: os.path.dirname(output.headline),
    shell:
        "python -m tadsweep.report.stats {input.summary:q} --study-json {input.study:q} {params.ensemble}"
        " --out-dir {params.out:q} > {log:q} 2>&1"


rule headline:
    input:
        headline=f"{R}/stats/headline.json",
        tables=rules.stats.output.tables,
    output:
        rst=f"{R}/stats/headline.rst",
        html=report(
            f"{R}/stats/headline.html",
            caption="../report/headline.rst",
            category="0. Headline",
        ),
    log:
        f"{R}/logs/headline.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        tables=lambda wc, input: os.path.dirname(input.headline),
    shell:
        "python -m tadsweep.report.headline {input.headline:q} --rst {output.rst:q}"
        " --html {output.html:q} --tables {params.tables:q} > {log:q} 2>&1"


rule plots:
    input:
        summary=f"{R}/summary.tsv",
        study=f"{R}/study.json",
        curves=run_files("curves.tsv"),
        ensemble=ensemble_outputs(),
    output:
        [
            report(
                f"{R}/plots/{name}.png",
                caption=f"../report/{name}.rst",
                category="2. Figures",
            )
            for name in PLOT_NAMES
        ],
        curves=report(
            directory(f"{R}/plots/curves"),
            patterns=["{name}.png"],
            caption="../report/run_curves.rst",
            category="3. Training curves per run",
        ),
    log:
        f"{R}/logs/plots.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        study_dir=lambda wc, input: os.path.dirname(input.summary),
        out=lambda wc, output: os.path.dirname(output.curves),
        ensemble=lambda wc, input: (
            f"--ensemble {shlex.quote(input.ensemble)}" if input.ensemble else ""
        ),
    shell:
        "python -m tadsweep.report.plots {params.study_dir:q} --out-dir {params.out:q}"
        " --summary {input.summary:q} --study-json {input.study:q} {params.ensemble}"
        " > {log:q} 2>&1"


rule ensemble:
    input:
        sweeps=run_files("sweep.tsv", ENSEMBLE_PHASES),
        candidates=run_files("candidates.json.gz", ENSEMBLE_PHASES),
        setting=f"{R}/postprocess_default.json",
        gt_ready=GT_READY,
    output:
        f"{R}/ensemble/ensemble.tsv",
    log:
        f"{R}/logs/ensemble.log",
    benchmark:
        f"{R}/benchmarks/ensemble.tsv"
    localrule: True
    conda:
        CONDA_ENV
    params:
        runs=live_runs(ENSEMBLE_PHASES),
        results=lambda wc, output: os.path.dirname(os.path.dirname(output[0])),
        gt=(lambda wc, input: input.gt_ready) if BACKEND == "demo" else GT,
        metric=STUDY["selection"]["metric"],
        spec=STUDY["ensemble"],
        subset=STUDY["evaluation"]["subset"],
    script:
        "../scripts/ensemble.py"
