# A gated phase's remaining seeds train only if its gate admits them (tadsweep.plan.budget): a
# checkpoint, so that Snakemake rebuilds the jobs that take it as input once it is decided.


def first_seed_files(phase, name):
    """A per-run file of the phase's live first-seed runs: what its gate scores."""
    first = STUDY["phases"][phase]["seeds"][0]
    return [
        f"{R}/runs/{rid}/{name}"
        for rid, r in RUNS.items()
        if r.phase == phase and r.seed == first and rid not in FAILED
    ]


def earlier_gates(phase):
    """The gates decided before this one (phase order): their admitted seeds are committed."""
    return [gate_file(p) for p in GATED[: GATED.index(phase)]]


checkpoint gate:
    input:
        study=f"{R}/study.json",
        params=lambda wc: fixed(first_seed_files(wc.phase, "params.json")),
        sweeps=lambda wc: first_seed_files(wc.phase, "sweep.tsv"),
        previous=lambda wc: earlier_gates(wc.phase),
    output:
        f"{R}/phases/{{phase}}/gate.json",
    log:
        f"{R}/logs/gate/{{phase}}.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        ledger=["--runs", *RUNS, *ledger_files(RUNS)],  # what the committed runs spent
    shell:
        "python -m tadsweep.plan.budget gate --study {input.study:q} --phase {wildcards.phase:q}"
        " --params {input.params:q} --sweeps {input.sweeps:q} --previous {input.previous:q}"
        " {params.ledger:q} --out {output:q} > {log:q} 2>&1"
