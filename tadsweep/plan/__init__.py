"""Plan: the study config, validated; its runs (phases x arms x seeds) and their parameters; costs;
run folders; the winner of each phase. `python -m tadsweep.plan CONFIG` prints the plan."""
