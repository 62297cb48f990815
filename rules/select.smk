rule select:
    input:
        params=lambda wc: fixed(phase_files(wc.phase, "params.json")),
        sweeps=lambda wc: phase_files(wc.phase, "sweep.tsv"),
        incumbent=lambda wc: phase_winner(STUDY["phases"][wc.phase]["base"]),
        gates=lambda wc: gate_files(lineage(wc.phase)),
    output:
        winner=f"{R}/phases/{{phase}}/winner.json",
        ranking=f"{R}/phases/{{phase}}/ranking.tsv",
    log:
        f"{R}/logs/select/{{phase}}.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        argv=select_argv,
    shell:
        "python -m tadsweep.plan.select {params.argv:q} > {log:q} 2>&1"
