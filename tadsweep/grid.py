"""Expand a validated study into its training runs, resolve each run's parameters, and summarise the
plan (runs, GPU-hours, what the phasing saves)."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tadsweep.atomic import atomic_path, write_json
from tadsweep.config import AXES, load_study
from tadsweep.errors import ConfigError, run_cli


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
    if not overrides:
        return "base"
    # "+" joins axes: names may not contain it, and Snakemake's job encoding splits on commas
    return "+".join(f"{axis}={overrides[axis]}" for axis in AXES if axis in overrides)


def phase_arms(cfg: dict, phase: str, source: str = "config") -> list[dict]:
    """The arms a phase trains: the base itself (phases on the baseline only), explicit arms, then
    the grid. A grid may hold the base or an explicit arm (merged); explicit arms never repeat."""
    ph = cfg["phases"][phase]
    base = cfg["baseline"] if ph["base"] == "baseline" else None
    axes = list(ph["grid"])
    gridded = [dict(zip(axes, v)) for v in itertools.product(*(ph["grid"][a] for a in axes))]
    gridded = gridded if axes else []
    explicit = [dict(a) for a in ph["arms"]]
    arms: dict[str, dict] = {"base": {}} if base is not None else {}
    for i, arm in enumerate(explicit + gridded):
        if (
            base is not None
        ):  # drop overrides that restate the baseline, so equal configs share an id
            arm = {a: v for a, v in arm.items() if base[a] != v}
        name = arm_name(arm)
        if name in arms and i < len(explicit):
            what = "the base, which is always trained" if name == "base" else f"arm {name}"
            raise ConfigError(f"{source}: phases.{phase}.arms[{i}]: repeats {what}")
        arms.setdefault(name, arm)
    return list(arms.values())


def expand(cfg: dict) -> list[Run]:
    """Every training run of the study, in phase order; ids are stable across expansions."""
    runs = []
    for phase in cfg["phase_order"]:
        for arm in phase_arms(cfg, phase):
            for seed in cfg["phases"][phase]["seeds"]:
                runs.append(Run(phase, arm_name(arm), seed, arm))
    return runs


def run_by_id(cfg: dict) -> dict[str, Run]:
    return {r.run_id: r for r in expand(cfg)}


def resolve_variants(cfg: dict, run: Run, base_variants: dict | None) -> dict:
    """Variant names of a run: its base (baseline or the base phase's winner) plus its overrides."""
    ph = cfg["phases"][run.phase]
    if ph["base"] == "baseline":
        base_variants = cfg["baseline"]
    elif base_variants is None:
        raise ValueError(f"run {run.run_id} needs the winner of phase {ph['base']}")
    return {axis: run.overrides.get(axis, base_variants[axis]) for axis in AXES}


def resolve_params(cfg: dict, run: Run, base_variants: dict | None = None) -> dict:
    """The params.json of a run: everything a backend needs, with variant names resolved."""
    v = resolve_variants(cfg, run, base_variants)
    var, model = cfg["variants"], cfg["model"]
    lora = dict(var["lora"][v["lora"]])
    lora.pop("cost_factor", None)
    sch = var["schedule"][v["schedule"]]
    aug = var["augment"][v["augment"]]
    st = var["structure"][v["structure"]]
    return {
        "study": cfg["study"]["name"],
        "run_id": run.run_id,
        "phase": run.phase,
        "arm": run.arm,
        "config_id": run.config_id,
        "seed": run.seed,
        "backend": cfg["study"]["backend"],
        "variants": v,
        "lora": {
            "r": lora["r"],
            "alpha": lora["alpha"],
            "dropout": lora["dropout"],
            "targets": list(lora["targets"]),
        },
        "schedule": {
            "lr": sch["lr"],
            "head_lr": model["head_lr"],
            "weight_decay": model["weight_decay"],
            "warmup_epoch": sch["warmup_epoch"],
            "epochs": sch["epochs"],
            "cosine_epochs": sch["cosine_epochs"],
            "val_start_epoch": sch["epochs"] - model["eval_window"],
            "val_interval": model["val_interval"],
            "checkpoint_interval": model["checkpoint_interval"],
        },
        "augment": {"imgaug": aug["imgaug"], "randaugment": aug["randaugment"]},
        "structure": {"adapter_index": list(st["blocks"]), "drop_path_rate": st["drop_path_rate"]},
        "batch_size": model["batch_size"],
        "ema": model["ema"],
        "amp": model["amp"],
        "postprocess_default": dict(cfg["postprocess"]["default"]),
        "model": {"depth": model["depth"]},
    }


def gpu_hours(cfg: dict, variants: dict, rule: str = "train") -> float:
    """Estimated GPU-hours of one training run from the per-epoch time in the config."""
    res = cfg["resources"]
    epochs = cfg["variants"]["schedule"][variants["schedule"]]["epochs"]
    factor = cfg["variants"]["lora"][variants["lora"]]["cost_factor"]
    return epochs * res["minutes_per_epoch"] * factor / 60.0 * res[rule]["gpus"]


def runtime_minutes(cfg: dict, hours: float, attempt: int = 1) -> int:
    """Wall time asked of SLURM for a training job of `hours` GPU-hours; grows with each retry."""
    fixed = cfg["resources"]["train"]["runtime_min"]
    if fixed:
        return fixed * attempt
    wall = hours / cfg["resources"]["train"]["gpus"]
    return (math.ceil(wall * 60 * cfg["resources"]["runtime_margin"]) + 10) * attempt


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


def _canonical(setting: dict) -> dict:
    """Neutralise knobs that cannot act, so settings that must give equal results collapse."""
    s = dict(setting)
    if s["multiclass"]:
        s["voting_thresh"] = 0.0  # score voting runs only class-agnostic
    if s["use_soft_nms"] and s["method"] in (2, 3):
        s["iou_threshold"] = 0.0  # Gaussian decay ignores the threshold
    return s


def postprocess_settings(cfg: dict) -> list[dict]:
    """The sweep: the default setting (id 'default') plus the grid's distinct settings (s001...)."""
    from tadsweep.postprocess import PARAM_NAMES  # numba: only when needed

    pp = cfg["postprocess"]
    # the detector's own pre_nms_* act before candidates are saved: not part of the sweep
    default = _canonical({k: v for k, v in pp["default"].items() if k in PARAM_NAMES})
    keys = list(pp["grid"])
    out, seen = [{"setting": "default", **default}], {json.dumps(default, sort_keys=True)}
    for values in itertools.product(*(pp["grid"][k] for k in keys)):
        s = _canonical(dict(default, **dict(zip(keys, values))))
        key = json.dumps(s, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append({"setting": f"s{len(out):03d}", **s})
    return out


def plan_rows(cfg: dict) -> list[dict]:
    """One row per training run for plan.tsv; axes inherited from a winner read '<winner of pN>'."""
    costs = config_costs(cfg)
    rows = []
    for run in expand(cfg):
        base = cfg["phases"][run.phase]["base"]
        if base == "baseline":
            names = resolve_variants(cfg, run, None)
        else:
            names = {a: run.overrides.get(a, f"<winner of {base}>") for a in AXES}
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
    naive_cfgs = math.prod(len(cfg["variants"][a]) for a in AXES)
    seeds = max(len(p["seeds"]) for p in cfg["phases"].values())
    mean_h = total_h / max(total_runs, 1)
    lines += [
        f"{'total':<10} {'':<10} {'':>7} {'':>5} {total_runs:>5} <={total_h:>7.2f}",
        (
            f"naive cross product of all variants: {naive_cfgs} configs x {seeds} seeds = "
            f"{naive_cfgs * seeds} runs (about {naive_cfgs * seeds * mean_h:.0f} GPU-h); "
            f"the phasing trains {total_runs}"
        ),
        (
            f"post-processing: {n_settings} distinct settings per run ({n_naive} in the grid "
            f"before merging inert knobs), swept on saved candidates (no GPU)"
        ),
    ]
    lines += [f"warning: {w}" for w in warnings]
    return "\n".join(lines)


def stale_runs(cfg: dict, results_dir: str) -> list[str]:
    """Runs whose saved params.json differs from what the config resolves to now (a variant was
    edited, or a base phase's winner changed). They are reported, never silently retrained."""
    out = []
    for run in expand(cfg):
        saved = Path(results_dir, "runs", run.run_id, "params.json")
        if not saved.exists():
            continue
        base = cfg["phases"][run.phase]["base"]
        winner = Path(results_dir, "phases", base, "winner.json")
        if base != "baseline" and not winner.exists():
            continue
        variants = json.loads(winner.read_text())["variants"] if base != "baseline" else None
        now, old = resolve_params(cfg, run, variants), json.loads(saved.read_text())
        diff = sorted(k for k in now if now[k] != old.get(k))
        if diff:
            out.append(f"{saved.parent}: resolved differently now ({', '.join(diff)})")
    return out


def write_params(cfg: dict, run: Run, winner_files: list[str], out: str) -> None:
    base = None
    if winner_files:
        with open(winner_files[0]) as fh:
            base = json.load(fh)["variants"]
    write_json(resolve_params(cfg, run, base), out)


def write_study(cfg: dict, warnings: list[str], settings: list[dict], out) -> None:
    """study.json (the validated config, warnings, the baseline's id), the post-processing sweep
    and its default setting alone (for the ensemble)."""
    study = {**cfg, "warnings": list(warnings), "baseline_config_id": baseline_config_id(cfg)}
    write_json(study, out.study)
    write_json(settings, out.settings)
    write_json({k: v for k, v in settings[0].items() if k != "setting"}, out.default)


def baseline_config_id(cfg: dict) -> str:
    """The baseline's runs: the base arm of the first phase built on the baseline."""
    first = next(p for p in cfg["phase_order"] if cfg["phases"][p]["base"] == "baseline")
    return f"{first}/base"


def site_path(cfg: dict, key: str) -> str:
    """A site path from config.paths; relative ones live inside the OpenTAD checkout."""
    value = cfg["paths"][key]
    return (
        str(Path(cfg["paths"]["opentad_root"]) / value) if not Path(value).is_absolute() else value
    )


def check_site_paths(cfg: dict, out: str) -> None:
    """Before any GPU job: every site path of a real study exists (one line naming the key)."""
    root = cfg["paths"]["opentad_root"]
    if not root or not Path(root, "tools", "train.py").is_file():
        raise ConfigError(
            f"paths.opentad_root: {root!r} is not an OpenTAD checkout (no tools/train.py)"
        )
    for key in ("base_config", "annotation", "class_map", "video_dir", "pretrained"):
        if not Path(site_path(cfg, key)).exists():
            raise ConfigError(f"paths.{key}: {site_path(cfg, key)} does not exist")
    image = cfg["container"]["image"]
    if "://" not in image and not Path(image).is_file():
        raise ConfigError(
            f"container.image: {image} does not exist (build it with `make container`)"
        )
    write_json({k: site_path(cfg, k) for k in cfg["paths"] if k != "opentad_root"}, out)


def slurm_site(cfg: dict) -> dict:
    """Partition and account of the GPU jobs: the config, else $TADSWEEP_PARTITION /
    $TADSWEEP_ACCOUNT, else nothing (the cluster's defaults)."""
    out = {}
    for key, env in (
        ("slurm_partition", "TADSWEEP_PARTITION"),
        ("slurm_account", "TADSWEEP_ACCOUNT"),
    ):
        value = cfg["resources"][key] or os.environ.get(env)
        if value:
            out[key] = value
    return out


def container_binds(cfg: dict, existing: str | None = None) -> str:
    """APPTAINER_BIND for the GPU jobs: the OpenTAD checkout, base config, data and weights
    read-only (the working directory, which holds the results, is bound writable by Snakemake)."""
    keys = ("base_config", "annotation", "class_map", "video_dir", "pretrained")
    paths = [cfg["paths"]["opentad_root"]] + [site_path(cfg, k) for k in keys]
    dirs = []
    for p in paths:
        d = str(Path(p) if _looks_like_dir(p) else Path(p).parent)
        if d and d not in dirs and not any(d.startswith(x.rstrip("/") + "/") for x in dirs):
            dirs.append(d)
    binds = [f"{d}:{d}:ro" for d in dirs]
    existing = os.environ.get("APPTAINER_BIND") if existing is None else existing
    if existing:
        binds = [b for b in existing.split(",") if b] + [b for b in binds if b not in existing]
    return ",".join(binds)


def prepare_environment(cfg: dict, basedir: str) -> None:
    """Environment that every job inherits: PYTHONPATH with this checkout's package (apptainer
    passes the environment into the container), and APPTAINER_BIND for the opentad backend."""
    path = os.environ.get("PYTHONPATH")
    if basedir not in (path or "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (basedir, path) if p)
    if cfg["study"]["backend"] == "opentad":
        os.environ["APPTAINER_BIND"] = container_binds(cfg)


def _looks_like_dir(path: str) -> bool:
    """Treat a path as a folder when it is one, or when it has no file suffix (not there yet)."""
    p = Path(path)
    return p.is_dir() or (not p.exists() and not p.suffix)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tadsweep.grid", description=__doc__)
    ap.add_argument("configfile", help="study config (YAML)")
    ap.add_argument("--tsv", help="also write the runs table (plan.tsv) here")
    args = ap.parse_args(argv)
    cfg, warnings = load_study(args.configfile)
    print(plan_summary(cfg, warnings))
    if args.tsv:
        write_plan(plan_rows(cfg), args.tsv)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
