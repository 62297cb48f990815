"""Trainings and GPU-hours of a study three ways, side by side: the naive grid (every variant of
every axis crossed, every seed), the phased plan, and the phased plan with staged seeds (at most /
at least: the remaining seeds of an arm train only if its first seed is within the margin).

    python benchmarks/bench_plan.py [CONFIG] [--replay results/<study of CONFIG>]

--replay takes a finished study that trained every seed (e.g. `make demo`'s) and replays staged
seeds on its own first-seed scores: the trainings staging would have run and the winner it would
have picked, phase by phase, beside the full grid's. Training is deterministic per seed, so the
staged study trains exactly these runs -- as long as every earlier phase picked the same winner.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tadsweep.plan import budget, costs, scores, select  # noqa: E402
from tadsweep.plan.config import load_study  # noqa: E402


def h(x: float) -> str:
    return f"{x:.1f}" if x >= 10 else f"{x:.3f}"


def rows(cfg: dict) -> list[tuple[str, str, str]]:
    plain = copy.deepcopy(cfg)
    plain["staging"]["enabled"], plain["budget"]["gpu_hours"] = False, None
    b = budget.bounds(plain).values()
    _, runs, hours = costs.naive_grid(cfg)
    out = [("naive grid", f"{runs}", h(hours))]
    out.append(("phased", f"{sum(x['max_runs'] for x in b)}", h(sum(x["max_h"] for x in b))))
    staged = copy.deepcopy(cfg)
    staged["staging"]["enabled"], staged["budget"]["gpu_hours"] = True, None
    s = budget.bounds(staged).values()
    lo, hi = sum(x["min_runs"] for x in s), sum(x["max_runs"] for x in s)
    lo_h, hi_h = sum(x["min_h"] for x in s), sum(x["max_h"] for x in s)
    margin = cfg["staging"]["margin"]
    label = f"phased + staged seeds ({margin:g} points)"
    out.append((label, f"{lo}-{hi}", f"{h(lo_h)}-{h(hi_h)}"))
    return out


def replay(cfg: dict, params_files) -> list[dict]:
    """Staged seeds (no budget) replayed on a finished study that trained every seed, phase by
    phase: trainings kept, arms pruned, and whether each phase's winner stays the same. Stops
    after the first phase whose winner differs: later phases trained on the full grid's."""
    cfg = copy.deepcopy(cfg)
    cfg["staging"]["enabled"], cfg["budget"]["gpu_hours"] = True, None
    metric, aggregate = cfg["selection"]["metric"], cfg["selection"]["aggregate"]
    crossfit = cfg["selection"]["crossfit"]
    sweeps = [str(Path(p).parent / "sweep.tsv") for p in params_files]
    table = scores.run_scores([str(p) for p in params_files], sweeps, metric, halves=crossfit)
    out, previous = [], []
    for phase in cfg["phase_order"]:
        gate = budget.decide(cfg, phase, table, previous, {})
        previous.append(gate)
        own = table[table["phase"] == phase]
        base = cfg["phases"][phase]["base"]
        inc = None if base == "baseline" else out[-1]["full"]  # the winner it was trained on
        full, _ = select.winner(table, phase, inc, metric, aggregate, crossfit)
        complete = table[~table["config_id"].isin(gate["incomplete"])]
        staged, _ = select.winner(complete, phase, inc, metric, aggregate, crossfit)
        out.append(
            {
                "phase": phase,
                "trainings": len(own),
                "staged": int((~own["run_id"].isin(gate["skipped_runs"])).sum()),
                "full": full,
                "winner_full": full["config_id"],
                "winner_staged": staged["config_id"],
                "pruned": {
                    a["config_id"]: a["first_seed_score"]
                    for a in gate["arms"]
                    if a["decision"] == "pruned"
                },
            }
        )
        if staged["config_id"] != full["config_id"]:
            break
    return out


def replay_lines(cfg: dict, study_dir: Path) -> list[str]:
    """replay, a line per phase."""
    phases = replay(cfg, sorted(study_dir.glob("runs/*/*/seed=*/params.json")))
    out = []
    for r in phases:
        same = "same" if r["winner_staged"] == r["winner_full"] else "DIFFERENT"
        pruned = ", ".join(f"{c} ({s:.2f})" for c, s in r["pruned"].items()) or "-"
        out.append(
            f"{r['phase']}: {r['staged']} of {r['trainings']} trainings; winner "
            f"{r['winner_staged']} vs full grid {r['winner_full']}: {same}; pruned (single "
            f"seed): {pruned}"
        )
    if phases and phases[-1]["winner_staged"] != phases[-1]["winner_full"]:
        out.append(f"later phases were trained on {phases[-1]['winner_full']}: not replayed")
    staged, full = (sum(r[k] for r in phases) for k in ("staged", "trainings"))
    return out + [f"trainings: {staged} staged of {full}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=str(ROOT / "config.yaml"))
    ap.add_argument("--replay", help="a finished study's folder (every seed trained)")
    args = ap.parse_args()
    cfg, _ = load_study(args.config)
    print(f"{args.config}: trainings and estimated GPU-hours")
    print(f"{'plan':<36} {'trainings':>10} {'GPU-h':>14}")
    for label, runs, hours in rows(cfg):
        print(f"{label:<36} {runs:>10} {hours:>14}")
    if args.replay:
        print(f"staged seeds replayed on {args.replay}:")
        for line in replay_lines(cfg, Path(args.replay)):
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
