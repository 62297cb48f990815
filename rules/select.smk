rule select:
    input:
        sweeps=lambda wc: run_files("sweep.tsv", [wc.phase]),
        base=lambda wc: phase_winner(STUDY["phases"][wc.phase]["base"]),
    output:
        winner=f"{R}/phases/{{phase}}/winner.json",
        ranking=f"{R}/phases/{{phase}}/ranking.tsv",
    log:
        f"{R}/logs/select/{{phase}}.log",
    localrule: True
    params:
        runs=lambda wc: live_runs([wc.phase]),
        selection=STUDY["selection"],
    run:
        from tadsweep.plan import select

        select.write_winner(params.selection, params.runs, R, input.base, output)
