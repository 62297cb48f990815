"""Learning rate and schedule of the adapter and LoRA parameters: warmup, the epochs trained and
the length of the cosine (upstream AdaTAD trains 60 of a 100-epoch cosine)."""

from tadsweep.errors import ConfigError, InputError
from tadsweep.plan.axes import Axis, opentad, register_axis


@register_axis
class Schedule(Axis):
    name = "schedule"
    description = "Learning rate and schedule of the adapter and LoRA parameters."
    knobs = {
        "lr": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 1,
            "description": "Learning rate of adapter and LoRA parameters, at most 1.",
        },
        "warmup_epoch": {
            "type": "integer",
            "minimum": 0,
            "maximum": 10000,
            "description": "Linear warmup epochs.",
        },
        "epochs": {
            "type": "integer",
            "minimum": 1,
            "maximum": 10000,
            "description": "Epochs trained (OpenTAD workflow.end_epoch), at most 10,000 (a demo "
            "epoch takes a second).",
        },
        "cosine_epochs": {
            "type": "integer",
            "minimum": 1,
            "maximum": 10000,
            "description": "Length of the cosine decay (scheduler.max_epoch); defaults to epochs. "
            "Upstream uses 100 with 60 epochs trained.",
        },
    }
    required = ("lr", "warmup_epoch", "epochs")
    columns = {k: k for k in ("lr", "head_lr", "warmup_epoch", "epochs", "cosine_epochs")}

    def check(self, name, variant, cfg, source):
        key = f"variants.schedule.{name}"
        epochs, warmup = variant["epochs"], variant["warmup_epoch"]
        cosine = variant.setdefault("cosine_epochs", epochs)
        if warmup >= epochs:
            raise ConfigError(
                f"{source}: {key}.warmup_epoch: {warmup} warmup epochs leave nothing "
                f"of the {epochs} epochs trained"
            )
        if warmup >= cosine:
            raise ConfigError(
                f"{source}: {key}.warmup_epoch: warmup ({warmup}) must end before "
                f"cosine_epochs ({cosine})"
            )
        if cosine < epochs:
            raise ConfigError(
                f"{source}: {key}.cosine_epochs: {cosine} < epochs {epochs}: the cosine schedule "
                f"would restart its decay past its end; set cosine_epochs >= epochs"
            )
        window = cfg["model"]["eval_window"]
        if window >= epochs:
            raise ConfigError(
                f"{source}: model.eval_window: evaluation window of {window} epochs "
                f"does not fit in the {epochs} epochs of {key}"
            )
        if cosine > epochs:
            return [
                f"{key}: trains {epochs} of {cosine} cosine epochs, so the LR never decays to 0 "
                f"(upstream AdaTAD does the same: 60 of 100)"
            ]
        return []

    def params(self, variant, cfg):
        model = cfg["model"]
        return {
            "lr": variant["lr"],
            "head_lr": model["head_lr"],
            "weight_decay": model["weight_decay"],
            "warmup_epoch": variant["warmup_epoch"],
            "epochs": variant["epochs"],
            "cosine_epochs": variant["cosine_epochs"],
            "val_start_epoch": variant["epochs"] - model["eval_window"],
            "val_interval": model["val_interval"],
            "checkpoint_interval": model["checkpoint_interval"],
        }

    def cost(self, variant):
        return variant["epochs"]

    def for_opentad(self, block, out, params, base):
        # epochs, the cosine and the evaluation window move together: a 120-epoch run whose
        # cosine still ends at 100 would restart its decay (LinearWarmupCosineAnnealingLR).
        def get(key, kind):
            return opentad.get(block, key, kind, "schedule")

        epochs, cosine, warmup = (get(k, int) for k in ("epochs", "cosine_epochs", "warmup_epoch"))
        if epochs < 1 or cosine < epochs:
            raise InputError("params: schedule needs 1 <= epochs <= cosine_epochs")
        if not 0 <= warmup < cosine:
            raise InputError("params: schedule.warmup_epoch must be in [0, cosine_epochs)")
        for key in ("val_interval", "checkpoint_interval"):
            if get(key, int) < 1:
                raise InputError(f"params: schedule.{key} must be >= 1")
        lr, wd = get("lr", float), get("weight_decay", float)
        optimizer = out.setdefault("optimizer", {})
        optimizer.update(lr=get("head_lr", float), weight_decay=wd)
        opentad.custom_groups(out).insert(0, dict(name="adapter", lr=lr, weight_decay=wd))
        out["scheduler"] = dict(warmup_epoch=warmup, max_epoch=cosine)
        out["workflow"] = dict(
            end_epoch=epochs,
            val_start_epoch=get("val_start_epoch", int),
            val_eval_interval=get("val_interval", int),
            checkpoint_interval=get("checkpoint_interval", int),
        )
