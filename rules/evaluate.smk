rule curves:
    input:
        f"{R}/runs/{{run}}/train.json",
    output:
        f"{R}/runs/{{run}}/curves.tsv",
    log:
        f"{R}/logs/curves/{{run}}.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        log=lambda wc: f"{R}/runs/{wc.run}/work/log.json",
    shell:
        "python -m tadsweep.report.curves {params.log:q} {output:q} > {log:q} 2>&1"


rule sweep:
    input:
        candidates=f"{R}/runs/{{run}}/candidates.json.gz",
        settings=f"{R}/postprocess_settings.json",
        gt_ready=GT_READY,
    output:
        f"{R}/runs/{{run}}/sweep.tsv",
    log:
        f"{R}/logs/sweep/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/sweep/{{run}}.tsv"
    localrule: True
    conda:
        CONDA_ENV
    params:
        gt=(lambda wc, input: input.gt_ready) if BACKEND == "demo" else GT,
        subset=STUDY["evaluation"]["subset"],
    shell:
        "python -m tadsweep.detections.postprocess sweep --gt {params.gt:q} --candidates {input.candidates:q}"
        " --grid {input.settings:q} --subset {params.subset:q} --out {output:q} > {log:q} 2>&1"
