rule curves:
    input:
        done=run_file("train.json"),
    output:
        run_file("curves.tsv"),
    log:
        f"{R}/logs/curves/{{run}}.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        # the training log is not an output of train: it grows while the run resumes
        log=lambda wc: f"{R}/runs/{wc.run}/work/log.json",
    shell:
        "python -m tadsweep.report.curves {params.log:q} {output:q} > {log:q} 2>&1"


rule sweep:
    input:
        candidates=run_file("candidates.npz"),
        settings=f"{R}/postprocess_settings.json",
        gt=GT,
    output:
        sweep=run_file("sweep.tsv"),
        matches=run_file("matches.npz"),
    log:
        f"{R}/logs/sweep/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/sweep/{{run}}.tsv"
    localrule: True
    conda:
        CONDA_ENV
    params:
        subset=STUDY["evaluation"]["subset"],
        tious=TIOUS,
    shell:
        "python -m tadsweep.detections.postprocess sweep --gt {input.gt:q}"
        " --candidates {input.candidates:q} --grid {input.settings:q}"
        " --subset {params.subset:q} --tiou {params.tious:q} --out {output.sweep:q}"
        " --matches {output.matches:q} > {log:q} 2>&1"


rule best_matches:
    input:
        candidates=run_file("candidates.npz"),
        setting=f"{R}/postprocess_best.json",
        gt=GT,
    output:
        run_file("matches_best.npz"),
    log:
        f"{R}/logs/best_matches/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/best_matches/{{run}}.tsv"
    localrule: True
    conda:
        CONDA_ENV
    params:
        subset=STUDY["evaluation"]["subset"],
        tious=TIOUS,
    shell:
        "python -m tadsweep.report.video_bootstrap matches --gt {input.gt:q}"
        " --candidates {input.candidates:q} --setting {input.setting:q}"
        " --subset {params.subset:q} --tiou {params.tious:q} --out {output:q} > {log:q} 2>&1"
