"""GPU-hours only where they can change the answer: a budget and staged seeds (docs/cluster.md).
Every arm trains its first seed, the baseline and the control all theirs (the guaranteed part);
a gated phase's other seeds wait for its gate (`phases/<phase>/gate.json`)."""

import argparse

from tadsweep import cli, readers
from tadsweep.atomic import write_json
from tadsweep.errors import ConfigError, InputError
from tadsweep.plan import spend
from tadsweep.plan.costs import config_costs, gpu_hours
from tadsweep.plan.runs import arm_name, expand, phase_arms


def staged(cfg: dict, phase: str) -> bool:
    """Staged seeds in this phase: `staging.enabled`, or by default when it has 3+ seeds."""
    seeds = len(cfg["phases"][phase]["seeds"])
    enabled = cfg["staging"]["enabled"]
    return seeds >= 2 and (seeds >= 3 if enabled is None else enabled)


def gated(cfg: dict, phase: str) -> bool:
    """A phase whose remaining seeds wait for its gate (staged, or any phase under a budget)."""
    has_budget = cfg["budget"]["gpu_hours"] is not None
    return len(cfg["phases"][phase]["seeds"]) >= 2 and (has_budget or staged(cfg, phase))


def gated_phases(cfg: dict) -> list[str]:
    return [p for p in cfg["phase_order"] if gated(cfg, p)]


def protected(cfg: dict, phase: str, arm: dict) -> str | None:
    """'baseline' or 'control' for the arms a gate never prunes, else None."""
    if cfg["phases"][phase]["base"] != "baseline":
        return None
    if not arm:
        return "baseline"
    control = cfg["reported"].get("control", {}).get("variants", {})
    control = {a: v for a, v in control.items() if cfg["baseline"][a] != v}
    return "control" if control and arm == control else None


def waits(cfg: dict, phase: str, arm: dict, seed: int) -> bool:
    """Whether a run trains only if its phase's gate admits it."""
    ph = cfg["phases"][phase]
    return gated(cfg, phase) and seed != ph["seeds"][0] and not protected(cfg, phase, arm)


def bounds(cfg: dict) -> dict[str, dict]:
    """Per phase: trainings and GPU-hours at least (the guaranteed part) and at most."""
    costs = config_costs(cfg)
    out = {
        p: {"min_runs": 0, "max_runs": 0, "min_h": 0.0, "max_h": 0.0} for p in cfg["phase_order"]
    }
    for r in expand(cfg):
        b, hours = out[r.phase], costs[r.config_id][0]
        b["max_runs"] += 1
        b["max_h"] += hours
        if not waits(cfg, r.phase, r.overrides, r.seed):
            b["min_runs"] += 1
            b["min_h"] += hours
    return out


def check(cfg: dict, source: str = "config") -> None:
    """Refuse a budget below the guaranteed part, in one line naming the key."""
    budget = cfg["budget"]["gpu_hours"]
    if budget is None:
        return
    b = bounds(cfg).values()
    runs, hours = sum(x["min_runs"] for x in b), sum(x["min_h"] for x in b)
    if hours > budget:
        raise ConfigError(
            f"{source}: budget.gpu_hours: {budget:g} is below the study's guaranteed part "
            f"({runs} trainings: every arm's first seed, all seeds of the baseline and control, "
            f"about {hours:.2f} GPU-h): raise it, or drop arms or seeds"
        )


def plan_lines(cfg: dict) -> list[str]:
    """The plan's lines on the rule: trainings at most and at least, against the budget."""
    b = bounds(cfg)
    keys = ("min_runs", "max_runs", "min_h", "max_h")
    lo, hi, lo_h, hi_h = (sum(x[k] for x in b.values()) for k in keys)
    out = []
    for phase in gated_phases(cfg):
        why = (
            f"staged seeds: remaining seeds only within {cfg['staging']['margin']:g} points of "
            "the best first seed, or baseline/control"
            if staged(cfg, phase)
            else "remaining seeds within the budget"
        )
        x = b[phase]
        out.append(
            f"gate {phase}: up to {x['max_runs']} trainings, at least {x['min_runs']} ({why})"
        )
    if lo != hi:
        out.append(f"up to {hi} trainings ({hi_h:.2f} GPU-h), at least {lo} ({lo_h:.2f} GPU-h)")
    budget = cfg["budget"]["gpu_hours"]
    if budget is not None:
        fits = "fits" if hi_h <= budget else "gates decide the rest"
        out.append(f"budget: {budget:g} GPU-h; guaranteed {lo_h:.2f}, at most {hi_h:.2f}: {fits}")
    return out


def committed_runs(cfg: dict, previous: list[dict]) -> list:
    """Runs the study is committed to: the guaranteed part of every phase, and the remaining
    seeds earlier gates admitted."""
    admitted = {
        r for g in previous for a in g["arms"] if a["decision"] == "train" for r in a["runs"]
    }
    return [
        r
        for r in expand(cfg)
        if not waits(cfg, r.phase, r.overrides, r.seed) or r.run_id in admitted
    ]


def decide(cfg: dict, phase: str, scores, previous: list[dict], spent: dict) -> dict:
    """A phase's gate from its scored first seeds (scores.run_scores rows), the earlier gates and
    the GPU-hours spent so far per run (the ledger). A committed run counts as the more of its
    spend and its estimate, so the decision never hangs on how fast a job happened to run."""
    ph = cfg["phases"][phase]
    first, margin = ph["seeds"][0], cfg["staging"]["margin"]
    is_staged, budget = staged(cfg, phase), cfg["budget"]["gpu_hours"]
    est = config_costs(cfg)
    committed = sum(
        max(spent.get(r.run_id, 0.0), est[r.config_id][0]) for r in committed_runs(cfg, previous)
    )
    from tadsweep.detections.evaluate import basis_name
    from tadsweep.plan.scores import SCORES  # pandas: only in the gate step

    # decisions see what selection sees: half a when cross-fitting, else all videos
    basis = "a" if cfg["selection"]["crossfit"] else "all"
    own = scores[(scores["phase"] == phase) & (scores["seed"] == first)]
    own = own.assign(score=own[SCORES[basis]])
    by_config = {r.config_id: r for r in own.itertuples()}
    # sweeps hold fractions; the margin and the report use points
    best = 100 * float(own["score"].max()) if len(own) else None
    arms = []
    for arm in phase_arms(cfg, phase):
        config_id = f"{phase}/{arm_name(arm)}"
        rest = [f"{config_id}/seed={s}" for s in ph["seeds"] if waits(cfg, phase, arm, s)]
        row = by_config.get(config_id)
        rec = {"config_id": config_id, "runs": rest, "first_seed_score": None}
        if row is not None:
            rec["first_seed_score"] = 100 * float(row.score)
            rec["hours"] = len(rest) * gpu_hours(cfg, row.variants)
        if not rest:
            rec.update(decision="train", reason=protected(cfg, phase, arm) or "one seed")
        elif row is None:
            rec.update(decision="skipped", reason="its first seed has no result")
        elif is_staged and rec["first_seed_score"] < best - margin:
            rec.update(
                decision="pruned",
                reason=f"single seed {rec['first_seed_score']:.2f}, more than {margin:g} points "
                f"below the phase's best first seed ({best:.2f}), on {basis_name(basis)}",
            )
        arms.append(rec)
    # admit the rest by first-seed score, best first, while the budget allows
    open_ = sorted((a for a in arms if "decision" not in a), key=lambda a: -a["first_seed_score"])
    for rec in open_:
        if budget is not None and committed + rec["hours"] > budget:
            rec.update(
                decision="skipped",
                reason=f"budget: {committed:.3f} of {budget:g} GPU-h committed, its "
                f"{len(rec['runs'])} remaining seed(s) need {rec['hours']:.3f}",
            )
        else:
            rec.update(decision="train", reason=f"within {margin:g} points" if is_staged else "")
            committed += rec["hours"]
    return {
        "phase": phase,
        "staged": is_staged,
        "margin": margin,
        "budget_gpu_hours": budget,
        "scored_on": basis_name(basis),
        "best_first_seed": best,
        "committed_gpu_hours": committed,
        "arms": arms,
        "skipped_runs": [r for a in arms if a["decision"] != "train" for r in a["runs"]],
        "incomplete": [a["config_id"] for a in arms if a["decision"] != "train"],
    }


def read_gate(path) -> dict:
    """A phase's gate.json, checked; anything else is one line naming the file and what to do."""
    todo = "delete it: the workflow decides the gate again"
    try:
        data = readers.read_json(path)
    except InputError as exc:
        raise InputError(f"{exc}; {todo}") from None
    keys = ("skipped_runs", "incomplete", "arms")
    if not (isinstance(data, dict) and all(isinstance(data.get(k), list) for k in keys)):
        raise InputError(f"{path}: not a gate.json (needs {', '.join(keys)}); {todo}")
    return data


def report_lines(gates: list[dict], best: str | None = None) -> list[tuple[str, str]]:
    """The report's first screen: what the gates did not train, and why; and a note when the
    best configuration by mean (`best`) is an arm left on one seed, which cannot win its phase."""
    out = []
    for gate in gates:
        if best in gate["incomplete"]:
            note = (
                f"{best} is an arm its gate left on one seed: it cannot win phase {gate['phase']}"
            )
            out.append(("Best configuration, note", f"{note} (see winner.json)"))
        for a in gate["arms"]:
            if a["decision"] == "pruned":
                out.append((f"Pruned arm ({gate['phase']})", f"{a['config_id']}: {a['reason']}"))
            elif a["decision"] == "skipped":
                score = a["first_seed_score"]
                shown = "" if score is None else f" (single seed {score:.2f})"
                what = f"{len(a['runs'])} training(s) not run{shown}"
                text = f"{a['config_id']}: {what}; {a['reason']}"
                out.append((f"Skipped ({gate['phase']})", text))
    return out


def main(argv=None) -> int:
    from tadsweep.plan.scores import run_scores  # pandas: only in the gate step

    ap = argparse.ArgumentParser(prog="python -m tadsweep.plan.budget", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gate", help="decide which of a phase's remaining seeds train")
    g.add_argument("--study", required=True, help="study.json (the validated config)")
    g.add_argument("--phase", required=True)
    g.add_argument("--params", nargs="*", default=[], help="first-seed runs' params.json")
    g.add_argument("--sweeps", nargs="*", default=[], help="their sweep.tsv, same order")
    g.add_argument("--previous", nargs="*", default=[], help="earlier phases' gate.json")
    g.add_argument("--runs", nargs="*", default=[], help="every run id of the study")
    spend.add_arguments(g)
    g.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    ledger = spend.files_from(args, len(args.runs), "gate")
    inputs = [args.study, args.params, args.sweeps, args.previous]
    cli.check_outputs([*inputs, args.attempts, args.bench_train, args.bench_detect], [args.out])
    cfg = readers.read_json(args.study)
    if args.phase not in cfg.get("phases", {}):
        raise ConfigError(f"{args.study}: phases: no phase {args.phase!r}")
    metric, crossfit = cfg["selection"]["metric"], cfg["selection"]["crossfit"]
    scores = run_scores(args.params, args.sweeps, metric, halves=crossfit)
    previous = [read_gate(p) for p in args.previous]
    files, gpus = dict(zip(args.runs, ledger)), spend.step_gpus(cfg)
    committed = [r.run_id for r in committed_runs(cfg, previous) if r.run_id in files]
    spent = {rid: spend.run_ledger(files[rid], gpus)["gpu_hours_actual"] for rid in committed}
    write_json(decide(cfg, args.phase, scores, previous, spent), args.out)
    return 0


if __name__ == "__main__":
    cli.run(main)
