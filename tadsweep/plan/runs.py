"""Expand a validated study into its training runs (phases x arms x seeds), resolve each run's
parameters (params.json), and list the post-processing settings swept on every run."""

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from tadsweep import readers
from tadsweep.atomic import write_json
from tadsweep.errors import ConfigError, InputError
from tadsweep.plan.axes import AXES


@dataclass(frozen=True)
class Run:
    phase: str
    arm: str  # "base" or "lora=A+schedule=v2" (axes in AXES order)
    seed: int
    overrides: dict = field(hash=False, compare=False)

    @property
    def config_id(self) -> str:
        return f"{self.phase}/{self.arm}"

    @property
    def run_id(self) -> str:
        return f"{self.phase}/{self.arm}/seed={self.seed}"


def arm_name(overrides: dict) -> str:
    # "+" joins axes: names may not contain it, and Snakemake's job encoding splits on commas
    return "+".join(f"{axis}={overrides[axis]}" for axis in AXES if axis in overrides) or "base"


def phase_arms(cfg: dict, phase: str, source: str = "config") -> list[dict]:
    """The arms a phase trains: the base itself (phases on the baseline only), explicit arms, then
    the grid. A grid may hold the base or an explicit arm (merged); explicit arms never repeat."""
    ph = cfg["phases"][phase]
    base = cfg["baseline"] if ph["base"] == "baseline" else None
    grid = ph["grid"]
    gridded = [dict(zip(grid, v)) for v in itertools.product(*grid.values())] if grid else []
    arms: dict[str, dict] = {"base": {}} if base is not None else {}
    for i, arm in enumerate([dict(a) for a in ph["arms"]] + gridded):
        if base is not None:  # drop overrides that restate the baseline: equal configs, one id
            arm = {a: v for a, v in arm.items() if base[a] != v}
        name = arm_name(arm)
        if name in arms and i < len(ph["arms"]):
            what = "the base, which is always trained" if name == "base" else f"arm {name}"
            raise ConfigError(f"{source}: phases.{phase}.arms[{i}]: repeats {what}")
        arms.setdefault(name, arm)
    return list(arms.values())


def expand(cfg: dict) -> list[Run]:
    """Every training run of the study, in phase order; ids are stable across expansions."""
    return [
        Run(phase, arm_name(arm), seed, arm)
        for phase in cfg["phase_order"]
        for arm in phase_arms(cfg, phase)
        for seed in cfg["phases"][phase]["seeds"]
    ]


def run_by_id(cfg: dict) -> dict[str, Run]:
    return {r.run_id: r for r in expand(cfg)}


def resolve_params(cfg: dict, run: Run, base_variants: dict | None = None) -> dict:
    """The params.json of a run: everything a backend needs. Its variants: its base's (the
    baseline, or `base_variants`: the base phase's winner) plus its overrides."""
    base = cfg["phases"][run.phase]["base"]
    if base == "baseline":
        base_variants = cfg["baseline"]
    elif base_variants is None:
        raise ValueError(f"run {run.run_id} needs the winner of phase {base}")
    v = {axis: run.overrides.get(axis, base_variants[axis]) for axis in AXES}
    model = cfg["model"]
    blocks = {a: axis.params(cfg["variants"][a][v[a]], cfg) for a, axis in AXES.items()}
    return {
        "study": cfg["study"]["name"],
        "run_id": run.run_id,
        "phase": run.phase,
        "arm": run.arm,
        "config_id": run.config_id,
        "seed": run.seed,
        "backend": cfg["study"]["backend"],
        "variants": v,
        **blocks,
        "batch_size": model["batch_size"],
        "ema": model["ema"],
        "amp": model["amp"],
        "postprocess_default": dict(cfg["postprocess"]["default"]),
        "tious": [float(t) for t in cfg["evaluation"]["tious"]],
        "model": {"depth": model["depth"]},
    }


def params_tious(params: dict, source: str) -> list:
    """A params.json's "tious" (evaluation.tious), checked again where a backend reads it: a
    params file may have been edited by hand."""
    tious = params.get("tious")
    numbers = isinstance(tious, list) and all(type(t) in (int, float) for t in tious)
    if not numbers or not tious or not all(0 < t < 1 for t in tious):
        raise InputError(f"{source}: tious must be a non-empty list of numbers in (0, 1)")
    return list(tious)


def read_winner(path) -> dict:
    """A phase's winner.json, checked: a JSON object whose `variants` name a variant per axis and
    whose `run_ids` list its runs. Anything else is one line naming the file and what to do."""
    todo = "delete it: the workflow rebuilds it from the phase's runs"
    try:
        data = readers.read_json(path)
    except InputError as exc:
        raise InputError(f"{exc}; {todo}") from None
    variants = data.get("variants") if isinstance(data, dict) else None
    ok = isinstance(variants, dict) and all(isinstance(variants.get(a), str) for a in AXES)
    if not (ok and isinstance(data.get("run_ids"), list)):
        raise InputError(f"{path}: not a winner.json (needs variants per axis and run_ids); {todo}")
    return data


def write_params(cfg: dict, run: Run, winner_files: list[str], out: str) -> str | None:
    """A run's params.json from its base phase's winner. One that exists is the run's record
    and is kept (rule resolve's output is update()); stale_runs reports a difference. Returns a
    warning when the run's variants are the winner's own: its arm trains the incumbent again."""
    if Path(out).exists():
        return None
    base = read_winner(winner_files[0])["variants"] if winner_files else None
    params = resolve_params(cfg, run, base)
    write_json(params, out)
    if base is not None and params["variants"] == {a: base[a] for a in AXES}:
        phase = cfg["phases"][run.phase]["base"]
        return (
            f"{run.run_id}: the same variants as phase {phase}'s winner ({winner_files[0]}): "
            "this arm trains the incumbent again (GPU-hours on a duplicate)"
        )
    return None


def stale_runs(cfg: dict, saved: dict, winners: dict) -> list[str]:
    """Runs whose saved params.json (saved[run id]) differs from what the config resolves to now
    (a variant was edited, or a base phase's winner -- winners[phase] -- changed). They are
    reported, never silently retrained. A file that cannot be read is reported too, in one line
    naming it and what to do: one bad run never stops the study."""
    out = []
    for run in expand(cfg):
        path = Path(saved[run.run_id])
        if not path.exists():
            continue
        base = cfg["phases"][run.phase]["base"]
        winner = Path(winners[base]) if base != "baseline" else None
        if winner is not None and not winner.exists():
            continue
        try:
            variants = read_winner(winner)["variants"] if winner else None
        except InputError as exc:
            if str(exc) not in out:  # once per winner.json
                out.append(str(exc))
            continue
        try:
            old = readers.read_json(path)
            if not isinstance(old, dict):
                raise InputError(f"{path}: not a params.json (expected a JSON object)")
        except InputError as exc:
            out.append(f"{exc}; delete {path.parent} to train that run again")
            continue
        now = resolve_params(cfg, run, variants)
        if diff := sorted(k for k in now if now[k] != old.get(k)):
            out.append(
                f"{path.parent}: resolved differently now ({', '.join(diff)}); results are "
                f"kept: delete that folder to retrain it"
            )
    return out


def baseline_config_id(cfg: dict) -> str:
    """The baseline's runs: the base arm of the first phase built on the baseline."""
    first = next(p for p in cfg["phase_order"] if cfg["phases"][p]["base"] == "baseline")
    return f"{first}/base"


def postprocess_settings(cfg: dict) -> list[dict]:
    """The sweep: the default setting (id 'default') plus the grid's distinct settings (s001...);
    knobs that cannot act are merged (knobs.canonical), so no two settings must score alike."""
    from tadsweep.detections import knobs

    pp = cfg["postprocess"]
    # the detector's own pre_nms_* act before candidates are saved: not part of the sweep
    swept = {k.name for k in knobs.swept()}
    default = knobs.canonical({k: v for k, v in pp["default"].items() if k in swept})
    keys = list(pp["grid"])
    grid = (dict(default, **dict(zip(keys, v))) for v in itertools.product(*pp["grid"].values()))
    unique = {json.dumps(s, sort_keys=True): s for s in [default, *map(knobs.canonical, grid)]}
    return [
        {"setting": f"s{i:03d}" if i else "default", **s} for i, s in enumerate(unique.values())
    ]


def write_study(cfg: dict, warnings: list[str], settings: list[dict], out) -> None:
    """study.json (the validated config, warnings, the baseline's id), the post-processing sweep
    and its default setting alone (for the ensemble)."""
    study = {**cfg, "warnings": list(warnings), "baseline_config_id": baseline_config_id(cfg)}
    write_json(study, out.study)
    write_json(settings, out.settings)
    write_json({k: v for k, v in settings[0].items() if k != "setting"}, out.default)
