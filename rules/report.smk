rule collect:
    input:
        params=lambda wc: fixed(run_files("params.json")),
        train=lambda wc: run_files("train.json"),
        curves=lambda wc: run_files("curves.tsv"),
        sweeps=lambda wc: run_files("sweep.tsv"),
        failed_params=fixed(f"{R}/runs/{rid}/params.json" for rid in FAILED),
        failed=[f"{R}/runs/{rid}/{rundir.FAILED}" for rid in FAILED],
        study=f"{R}/study.json",
        gates=gate_files(),  # gate.smk: rebuilt without the skipped runs once decided
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
    conda:
        CONDA_ENV
    params:
        gpus=TRAIN_RES["gpus"],
        ledger=ledger_argv,  # from the inputs: the same runs, in their order
    shell:
        "python -m tadsweep.report.collect --params {input.params:q} --train {input.train:q}"
        " --curves {input.curves:q} --sweeps {input.sweeps:q}"
        " --failed-params {input.failed_params:q} --failed {input.failed:q}"
        " --study-json {input.study:q} {params.ledger:q}"
        " --gpus {params.gpus} --out {output:q} > {log:q} 2>&1"


rule postprocess_best:
    input:
        summary=f"{R}/summary.tsv",
        study=f"{R}/study.json",
        settings=f"{R}/postprocess_settings.json",
    output:
        f"{R}/postprocess_best.json",
    log:
        f"{R}/logs/postprocess_best.log",
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "python -m tadsweep.report.video_bootstrap choose {input.summary:q}"
        " --study-json {input.study:q} --grid {input.settings:q} --out {output:q} > {log:q} 2>&1"


rule stats:
    input:
        summary=f"{R}/summary.tsv",
        study=f"{R}/study.json",
        ensemble=ensemble_outputs(),
        ensemble_cf=ensemble_crossfit_outputs(),
        matches=lambda wc: run_files("matches.npz"),  # per-video matches: intervals over videos
        best_matches=lambda wc: run_files("matches_best.npz"),  # the best setting's
        ens_matches=(  # the chosen ensemble's
            f"{R}/ensemble/matches.npz" if STUDY["ensemble"]["enabled"] else []
        ),
        gates=gate_files(),
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
        ensemble=lambda wc, input: optional("--ensemble", input.ensemble),
        crossfit=lambda wc, input: optional("--ensemble-crossfit", input.ensemble_cf),
        matches=lambda wc, input: optional("--matches", input.matches),
        best=lambda wc, input: optional("--best-matches", input.best_matches),
        ens_matches=lambda wc, input: optional("--ensemble-matches", input.ens_matches),
        out=lambda wc, output: os.path.dirname(output.headline),
    shell:
        "python -m tadsweep.report.stats {input.summary:q} --study-json {input.study:q}"
        " {params.ensemble:q} {params.crossfit:q} {params.matches:q} {params.best:q}"
        " {params.ens_matches:q} --out-dir {params.out:q} > {log:q} 2>&1"


rule headline:
    input:
        headline=f"{R}/stats/headline.json",
        tables=rules.stats.output.tables,
        gates=gate_files(),  # what the gates skipped, on the first screen
        doctor=f"{R}/doctor/findings.json",  # the baseline diagnosis
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
    shell:
        "python -m tadsweep.report.headline {input.headline:q} --rst {output.rst:q}"
        " --html {output.html:q} --tables {input.tables:q} --gates {input.gates:q}"
        " --doctor {input.doctor:q}"
        " > {log:q} 2>&1"


rule plots:
    input:
        summary=f"{R}/summary.tsv",  # each run's points
        configs=f"{R}/stats/configs.tsv",  # the statistics drawn: means, intervals
        headline=rules.stats.output.headline,  # the baseline, the ensemble's result
        curves=lambda wc: run_files("curves.tsv"),
        ensemble=ensemble_outputs(),
        gates=gate_files(),
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
        runs=lambda wc: live_runs(),
        ensemble=lambda wc, input: optional("--ensemble", input.ensemble),
        out=lambda wc, output: os.path.dirname(output.curves),
    shell:
        "python -m tadsweep.report.plots --summary {input.summary:q} --configs {input.configs:q}"
        " --headline {input.headline:q} --curves {input.curves:q} --runs {params.runs:q}"
        " {params.ensemble:q}"
        " --out-dir {params.out:q} > {log:q} 2>&1"


rule ensemble:
    input:
        sweeps=lambda wc: run_files("sweep.tsv", ENSEMBLE_PHASES),
        candidates=lambda wc: run_files("candidates.npz", ENSEMBLE_PHASES),
        gates=gate_files(ENSEMBLE_PHASES),
        setting=f"{R}/postprocess_default.json",
        gt=GT,
    output:
        tsv=f"{R}/ensemble/ensemble.tsv",
        crossfit=f"{R}/ensemble/crossfit.json",
        matches=f"{R}/ensemble/matches.npz",  # the chosen ensemble's: its interval over videos
    log:
        f"{R}/logs/ensemble.log",
    benchmark:
        f"{R}/benchmarks/ensemble.tsv"
    localrule: True
    conda:
        CONDA_ENV
    params:
        runs=lambda wc: live_runs(ENSEMBLE_PHASES),
        metric=STUDY["selection"]["metric"],
        top_k=STUDY["ensemble"]["top_k"],
        combine=STUDY["ensemble"]["combine"],
        greedy=["--greedy"] if STUDY["ensemble"]["greedy"] else [],
        crossfit="--crossfit" if STUDY["selection"]["crossfit"] else "--no-crossfit",
        subset=STUDY["evaluation"]["subset"],
        tious=TIOUS,
    shell:
        "python -m tadsweep.detections.ensemble --gt {input.gt:q} --subset {params.subset:q}"
        " --tiou {params.tious:q}"
        " --candidates {input.candidates:q} --names {params.runs:q}"
        " --sweeps {input.sweeps:q} --top-k {params.top_k} --metric {params.metric:q}"
        " --setting {input.setting:q} --combine {params.combine:q} {params.greedy:q}"
        " {params.crossfit:q} --out {output.tsv:q} --crossfit-out {output.crossfit:q}"
        " --matches {output.matches:q} > {log:q} 2>&1"
