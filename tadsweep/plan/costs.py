"""What a study costs: GPU-hours per run from the config's minutes per epoch, and the wall time
asked of SLURM."""

import itertools
import json
import math

from tadsweep.plan.axes import AXES
from tadsweep.plan.runs import arm_name, phase_arms


def gpu_hours(cfg: dict, variants: dict, rule: str = "train") -> float:
    """Estimated GPU-hours of one training run from the per-epoch time in the config."""
    res = cfg["resources"]
    # each axis's factor: the schedule's epochs, LoRA's relative cost, 1 for the others
    factor = math.prod(axis.cost(cfg["variants"][a][variants[a]]) for a, axis in AXES.items())
    return factor * res["minutes_per_epoch"] / 60.0 * res[rule]["gpus"]


def naive_grid(cfg: dict) -> tuple[int, int, float]:
    """The grid the phasing avoids: every combination of variants, every seed of the study
    (configurations, trainings, GPU-hours)."""
    seeds = len(cfg["study"]["seeds"])
    combos = list(itertools.product(*(cfg["variants"][a] for a in AXES)))
    hours = sum(gpu_hours(cfg, dict(zip(AXES, c))) for c in combos)
    return len(combos), len(combos) * seeds, hours * seeds


def runtime_minutes(cfg: dict, hours: float, attempt: int = 1) -> int:
    """Wall time asked of SLURM for a training job of `hours` GPU-hours; grows with each retry."""
    if fixed := cfg["resources"]["train"]["runtime_min"]:
        return fixed * attempt
    wall = hours / cfg["resources"]["train"]["gpus"]
    return (math.ceil(wall * 60 * cfg["resources"]["runtime_margin"]) + 10) * attempt


def signal_lead_minutes(cfg: dict, runtime: int) -> int:
    """Minutes before a training job's time limit (`runtime` minutes) that SLURM sends SIGTERM:
    resources.signal_lead_min, else two epochs' estimate (the one in progress, its evaluation)
    plus 2; at most half the time limit. 0: no signal."""
    lead = cfg["resources"]["signal_lead_min"]
    if lead is None:
        lead = math.ceil(2 * cfg["resources"]["minutes_per_epoch"]) + 2
    return min(lead, runtime // 2)


def config_costs(cfg: dict) -> dict[str, tuple[float, bool]]:
    """GPU-hours of one run of each configuration, and whether that is exact: a phase built on a
    winner gets the maximum over every configuration that can win its base phase."""
    costs: dict[str, tuple[float, bool]] = {}
    winners: dict[str, list[dict]] = {}  # phase -> variant assignments that can win it
    for phase in cfg["phase_order"]:
        ph = cfg["phases"][phase]
        exact = ph["base"] == "baseline"
        bases = [cfg["baseline"]] if exact else winners[ph["base"]]
        cands = []
        for arm in phase_arms(cfg, phase):
            variants = [{a: arm.get(a, b[a]) for a in AXES} for b in bases]
            costs[f"{phase}/{arm_name(arm)}"] = (max(gpu_hours(cfg, v) for v in variants), exact)
            cands += variants
        if not exact:  # the incumbent competes too
            cands += winners[ph["base"]]
        winners[phase] = list({json.dumps(c, sort_keys=True): c for c in cands}.values())
    return costs
