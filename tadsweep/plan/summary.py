"""The plan a user reads before any GPU time: plan.tsv (one row per training run) and the summary
`snakemake -n` and `python -m tadsweep.plan` print (runs and GPU-hours per phase, what the phasing
saves)."""

import math

from tadsweep.atomic import atomic_path
from tadsweep.plan import budget
from tadsweep.plan.axes import AXES
from tadsweep.plan.costs import config_costs, naive_grid
from tadsweep.plan.runs import expand, postprocess_settings


def plan_rows(cfg: dict) -> list[dict]:
    """One row per training run for plan.tsv; axes inherited from a winner read '<winner of pN>'."""
    costs = config_costs(cfg)
    rows = []
    for run in expand(cfg):
        base = cfg["phases"][run.phase]["base"]
        fill = cfg["baseline"] if base == "baseline" else dict.fromkeys(AXES, f"<winner of {base}>")
        names = {a: run.overrides.get(a, fill[a]) for a in AXES}
        hours, exact = costs[run.config_id]
        rows.append(
            {
                "run_id": run.run_id,
                "phase": run.phase,
                "arm": run.arm,
                "config_id": run.config_id,
                "seed": run.seed,
                "base": base,
                **{f"v_{a}": names[a] for a in AXES},
                "est_gpu_hours": round(hours, 3),
                "estimate": "exact" if exact else "upper bound",
            }
        )
    return rows


def write_plan(rows: list[dict], path: str) -> None:
    import pandas as pd

    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, sep="\t", index=False)


def plan_summary(cfg: dict, warnings: list[str] = ()) -> str:
    """Human-readable plan: per phase runs and GPU-hours, and the naive cross product avoided."""
    rows = plan_rows(cfg)
    n_settings = len(postprocess_settings(cfg))
    n_naive = math.prod(len(v) for v in cfg["postprocess"]["grid"].values())
    lines = [
        f"study {cfg['study']['name']} ({cfg['study']['backend']} backend)",
        f"{'phase':<10} {'base':<10} {'configs':>7} {'seeds':>5} {'runs':>5} {'GPU-h':>9}",
    ]
    total_runs, total_h = 0, 0.0
    for phase in cfg["phase_order"]:
        prow = [r for r in rows if r["phase"] == phase]
        hours = sum(r["est_gpu_hours"] for r in prow)
        bound = "<=" if any(r["estimate"] != "exact" for r in prow) else "  "
        n_cfg = len({r["config_id"] for r in prow})
        seeds = len(cfg["phases"][phase]["seeds"])
        lines.append(
            f"{phase:<10} {cfg['phases'][phase]['base']:<10} {n_cfg:>7} {seeds:>5} "
            f"{len(prow):>5} {bound}{hours:>7.2f}"
        )
        total_runs += len(prow)
        total_h += hours
    naive_cfgs, naive_runs, naive_h = naive_grid(cfg)
    lines += [
        f"{'total':<10} {'':<10} {'':>7} {'':>5} {total_runs:>5} <={total_h:>7.2f}",
        (
            f"naive cross product of all variants: {naive_cfgs} configs x "
            f"{len(cfg['study']['seeds'])} seeds = {naive_runs} runs ({naive_h:.0f} GPU-h); "
            f"the phasing trains {total_runs}"
        ),
        (
            f"post-processing: {n_settings} distinct settings per run ({n_naive} in the grid "
            f"before merging inert knobs), swept on saved candidates (no GPU)"
        ),
    ]
    lines += budget.plan_lines(cfg)
    lines += [f"warning: {w}" for w in warnings]
    return "\n".join(lines)
