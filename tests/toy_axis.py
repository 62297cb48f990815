"""A toy axis, declared the way a user adds one (docs/architecture.md, "Adding an axis"): the
detector head's learning rate as a multiple of model.head_lr.
Imported through $TADSWEEP_EXTRA_AXES."""

from tadsweep.plan.axes import Axis, register_axis


@register_axis
class Head(Axis):
    name = "head"
    description = "Detector head learning rate, as a multiple of model.head_lr."
    knobs = {
        "lr_scale": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 1.0,
            "description": "Factor on model.head_lr.",
        }
    }
    columns = {"head_lr_scale": "lr_scale"}

    def for_demo(self, block, settings):
        settings["schedule"]["head_lr"] *= block["lr_scale"]
