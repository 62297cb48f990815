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
        runs=list(RUNS),
        gpus=TRAIN_RES["gpus"],
    run:
        from tadsweep.collect import collect

        collect(R, params.runs, params.gpus, output[0])
