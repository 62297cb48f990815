"""Load and validate a study config: JSON Schema (with defaults) plus the semantic checks a schema
cannot express. Every problem is one line that names the file and the key."""

import copy
import re
from pathlib import Path

import jsonschema

from tadsweep import readers
from tadsweep.detections import knobs
from tadsweep.detections.evaluate import metric_names
from tadsweep.errors import ConfigError, InputError
from tadsweep.plan import budget, schema
from tadsweep.plan.axes import AXES
from tadsweep.plan.runs import arm_name, expand, phase_arms

_NUMBER_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def read_yaml(path: str | Path) -> dict:
    """Read a YAML config file (tadsweep.readers: UTF-8, no duplicate keys, sizes capped); any
    problem is a one-line ConfigError."""
    try:
        data = readers.read_yaml(path)
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a study config must be a mapping of keys, not {type(data).__name__}"
        )
    return data


def _key(path) -> str:
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return key or "(top level)"


def _pattern(validator, pattern, instance, schema):
    """JSON Schema's `pattern` with ECMA 262's `$` (end of text): Python's `$` also matches before
    a trailing newline, which would let "demo\\n" pass as a name."""
    if isinstance(instance, str) and not re.search(re.sub(r"\$$", r"\\Z", pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _with_defaults(validator_class):
    """A validator that fills in schema defaults while validating (as snakemake.utils.validate)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(
        validator_class, {"properties": set_defaults, "pattern": _pattern}
    )


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key(error.absolute_path)
    inst = error.instance
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(inst) - set(allowed)) if isinstance(inst, dict) else []
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"{key}: unknown key {extra[0]!r}{hint}" if extra else f"{key}: {error.message}"
    if error.validator == "type" and isinstance(inst, str) and _NUMBER_TEXT.match(inst.strip()):
        hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if "e" in inst.lower() else ""
        return f"{key}: {inst!r} is text, not a number; write it unquoted{hint}"
    if error.validator == "maxLength":
        return f"{key}: {inst[:40]!r}... is longer than {error.validator_value} characters"
    if error.validator == "pattern" and key == "study.results":  # the rule is "relative"
        if inst.startswith("/"):
            what = "is an absolute path"
        elif ".." in inst.split("/"):
            what = "climbs out of the working directory with '..'"
        else:
            what = "is no plain relative folder"
        return (
            f"{key}: {inst!r} {what}: results go to a folder relative to the working directory, "
            "never above it (no '..'; parts of letters, digits and _ . -, joined by /, none "
            "starting with '.'); to put them elsewhere, run snakemake --directory DIR (results "
            "then go under DIR)"
        )
    if error.validator == "pattern" and "/" in error.validator_value:
        return (
            f"{key}: {inst!r} may only use letters, digits and _ . - + @ / "
            f"(it becomes a path and a shell argument)"
        )
    if error.validator == "pattern" or "propertyNames" in error.schema_path:
        return (
            f"{key}: name {inst!r} may only use letters, digits and _ . - "
            f"(names become run ids, paths and shell arguments)"
        )
    return f"{key}: {error.message}"


def schema_validate(config: dict, source: str = "config") -> dict:
    """Validate against the JSON Schema, filling defaults; returns the filled copy."""
    try:
        readers.check_shape(config, source)
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    bad = readers.finite_problem(config)
    if bad is not None:  # JSON Schema lets NaN pass every bound, and has no integer range
        raise ConfigError(f"{source}: {_key(bad[0])}: {bad[1]}")
    cfg = copy.deepcopy(config)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema.build())
    error = jsonschema.exceptions.best_match(validator.iter_errors(cfg))
    if error is not None:
        # best_match picks the deepest error; the defaults filled so far are discarded with cfg.
        raise ConfigError(f"{source}: {_describe(error)}")
    return cfg


def _phase_order(cfg: dict, source: str) -> list[str]:
    """Phases in dependency order; refuses unknown bases and cycles."""
    phases = cfg["phases"]
    for name, ph in phases.items():
        if ph["base"] != "baseline" and ph["base"] not in phases:
            raise ConfigError(
                f"{source}: phases.{name}.base: unknown phase {ph['base']!r} "
                f"(use 'baseline' or one of: {', '.join(phases)})"
            )
    order: list[str] = []
    for phase in phases:
        chain: list[str] = []  # phase, its base, its base's base... until one already ordered
        while phase != "baseline" and phase not in order:
            if phase in chain:
                cycle = " -> ".join(chain[chain.index(phase) :] + [phase])
                raise ConfigError(
                    f"{source}: phases.{phase}.base: phases depend on each other in a cycle "
                    f"({cycle})"
                )
            chain.append(phase)
            phase = phases[phase]["base"]
        order += reversed(chain)
    return order


def _distinct_ignoring_case(names, key: str, source: str) -> None:
    """Names that become folders (phases, variants: run ids) must differ by more than case: "B"
    and "b" are one folder on a case-insensitive filesystem (macOS, Windows, some shares)."""
    seen: dict[str, str] = {}
    for name in names:
        first = seen.setdefault(name.casefold(), name)
        if first != name:
            raise ConfigError(
                f"{source}: {key}: {first!r} and {name!r} differ only in case; they become "
                "folders, one folder on a case-insensitive filesystem: rename one"
            )


def _results_folder(cfg: dict, source: str) -> None:
    """study.results and the study's folder under it must be folders where they exist: an
    existing file there would stop Snakemake at its first look inside."""
    full = Path(cfg["study"]["results"], cfg["study"]["name"])
    for here in [*reversed(full.parents), full]:
        if here.exists() and not here.is_dir():
            raise ConfigError(
                f"{source}: study.results: {str(here)!r} is an existing file, not a folder "
                f"(results go to {full}/ under the working directory); move it, or "
                "name another folder"
            )


def _incumbent_arms(cfg: dict, source: str) -> list[str]:
    """Warnings: an arm of a phase built on a phase P that some config of P already is. Should
    that config win P, the arm is the incumbent again: GPU-hours on a duplicate (rule resolve
    says so again once P's winner is known). P's configs are known when P is on the baseline."""
    out = []
    for name in cfg["phase_order"]:
        base = cfg["phases"][name]["base"]
        if base == "baseline" or cfg["phases"][base]["base"] != "baseline":
            continue
        configs = {arm_name(a): {**cfg["baseline"], **a} for a in phase_arms(cfg, base, source)}
        for arm in phase_arms(cfg, name, source):
            same = [c for c, v in configs.items() if all(v[a] == x for a, x in arm.items())]
            if len(same) == len(configs):
                out.append(
                    f"phases.{name}: arm {arm_name(arm)} changes nothing in any config of phase "
                    f"{base}: it trains {base}'s winner, the incumbent, again (GPU-hours on a "
                    "duplicate)"
                )
            elif same:
                out.append(
                    f"phases.{name}: arm {arm_name(arm)} equals phase {base}'s "
                    f"{', '.join(same)}: should {'it' if len(same) == 1 else 'one of them'} win "
                    f"{base}, this arm trains the incumbent again (GPU-hours on a duplicate)"
                )
    return out


def _ensemble_runs(cfg: dict) -> list[str]:
    """Warnings: an ensemble.top_k above the runs that may join (ensemble.phases)."""
    ens = cfg["ensemble"]
    if not ens["enabled"]:
        return []
    phases = set(ens["phases"] or cfg["phases"])
    n = sum(r.phase in phases for r in expand(cfg))
    if ens["top_k"] <= n:
        return []
    return [
        f"ensemble.top_k: {ens['top_k']} but only {n} run{'s' * (n != 1)} may join "
        f"(ensemble.phases): the ensemble's candidates are all {n}"
    ]


def _known(cfg: dict, axis: str, var, key: str, source: str) -> None:
    if var not in cfg["variants"][axis]:
        raise ConfigError(
            f"{source}: {key}: unknown variant {var!r} (known: {', '.join(cfg['variants'][axis])})"
        )


def semantic_check(cfg: dict, source: str = "config") -> list[str]:
    """Checks across keys: raises ConfigError on the first error; returns one-line warnings."""
    warnings: list[str] = []
    variants = cfg["variants"]
    _distinct_ignoring_case(cfg["phases"], "phases", source)
    for name in AXES:
        _distinct_ignoring_case(variants[name], f"variants.{name}", source)
    _results_folder(cfg, source)
    for name, axis in AXES.items():
        _known(cfg, name, cfg["baseline"][name], f"baseline.{name}", source)
        for variant_name, variant in variants[name].items():
            warnings += axis.check(variant_name, variant, cfg, source)

    order = _phase_order(cfg, source)
    for name in order:
        ph = cfg["phases"][name]
        ph.setdefault("seeds", list(cfg["study"]["seeds"]))
        if not ph["arms"] and not ph["grid"] and ph["base"] != "baseline":
            raise ConfigError(f"{source}: phases.{name}: no arms or grid: nothing to train")
        for i, arm in enumerate(ph["arms"]):
            for axis, var in arm.items():
                _known(cfg, axis, var, f"phases.{name}.arms[{i}].{axis}", source)
        for axis, values in ph["grid"].items():
            for var in values:
                _known(cfg, axis, var, f"phases.{name}.grid.{axis}", source)
    cfg["phase_order"] = order
    for name in order:
        phase_arms(cfg, name, source)  # refuses duplicate arms
    warnings += _incumbent_arms(cfg, source)

    for step in ("train", "detect"):
        gres, gpus = cfg["resources"][step]["gres"], cfg["resources"][step]["gpus"]
        if not gres:
            continue
        # torchrun starts `gpus` processes and GPU-hours count them: the gres must agree
        kind, *rest = gres.split(":")
        count = int(rest[-1]) if rest and rest[-1].isdigit() else 1
        key = f"{source}: resources.{step}.gres: {gres!r} asks"
        if kind != "gpu":
            raise ConfigError(f"{key} no GPU (write gpu[:type][:count])")
        if count != gpus:
            raise ConfigError(
                f"{key} {count} GPU(s) but resources.{step}.gpus is {gpus}; set gpus: {count}"
            )

    control = cfg["reported"].get("control", {}).get("variants", {})
    for axis, var in control.items():
        if axis not in variants or var not in variants[axis]:
            known = ", ".join(variants.get(axis, AXES))
            raise ConfigError(
                f"{source}: reported.control.variants.{axis}: unknown {var!r} (known: {known})"
            )

    evaluated = metric_names(cfg["evaluation"]["tious"])
    if cfg["selection"]["metric"] not in evaluated:
        raise ConfigError(
            f"{source}: selection.metric: {cfg['selection']['metric']} is not evaluated "
            f"(evaluation.tious gives {', '.join(evaluated)})"
        )

    warnings += knobs.check_config(cfg["postprocess"], source)  # inert knobs
    for ph in cfg["ensemble"]["phases"]:
        if ph not in cfg["phases"]:
            raise ConfigError(f"{source}: ensemble.phases: unknown phase {ph!r}")
    warnings += _ensemble_runs(cfg)
    for i, claim in enumerate(cfg["claims"]):
        if claim["low"] > claim["high"]:
            raise ConfigError(f"{source}: claims[{i}]: low {claim['low']} > high {claim['high']}")
    budget.check(cfg, source)  # a budget below the guaranteed part
    return warnings


def load_study(config: dict | str | Path, source: str | None = None) -> tuple[dict, list[str]]:
    """Validated study config (defaults filled, derived keys added) and its warnings."""
    if not isinstance(config, dict):
        source = source or str(config)
        config = read_yaml(config)
    source = source or "config"
    cfg = schema_validate(config, source)
    return cfg, semantic_check(cfg, source)
