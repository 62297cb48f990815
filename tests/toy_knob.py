"""A toy post-processing knob, declared the way a user adds one (docs/architecture.md, "Adding a
post-processing knob"): pooled candidates shorter than a floor are dropped before NMS, per video.
Imported through $TADSWEEP_EXTRA_KNOBS."""

from tadsweep.detections.knobs import Knob, register_knob

register_knob(
    Knob(
        "min_length",
        {"type": ["number", "null"], "minimum": 0},
        upstream=None,  # OpenTAD has no such cut: unset keeps every candidate
        default=None,
        description="Sweep-only cut: pooled candidates shorter than this (seconds) are dropped "
        "before NMS; null keeps all.",
        stage="video",
        cut=lambda det, keep, value: keep & (det.end - det.start >= value),
    )
)
