rule select:
    input:
        sweeps=lambda wc: run_files("sweep.tsv", [wc.phase]),
        base=lambda wc: (
            []
            if STUDY["phases"][wc.phase]["base"] == "baseline"
            else [f"{R}/phases/{STUDY['phases'][wc.phase]['base']}/winner.json"]
        ),
    output:
        winner=f"{R}/phases/{{phase}}/winner.json",
        ranking=f"{R}/phases/{{phase}}/ranking.tsv",
    log:
        f"{R}/logs/select/{{phase}}.log",
    localrule: True
    params:
        selection=STUDY["selection"],
    run:
        from tadsweep import select

        select.write_winner(
            STUDY, wildcards.phase, R, input.base, output.winner, output.ranking
        )
