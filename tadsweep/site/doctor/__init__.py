"""The baseline doctor (docs/doctor.md): why a baseline sits far under upstream's figure, found
from the user's files before any GPU job. Every kind of finding is declared once (`KINDS`) with its
severity, expected effect on the result and the public source of that effect."""

import dataclasses
import json
from fnmatch import fnmatchcase

from tadsweep.atomic import atomic_path

SEVERITIES = ("error", "warning", "info")

# Public sources of the effects the findings quote (docs/doctor.md has the details).
ZOO = "OpenTAD configs/adatad/README.md (VideoMAE-S, 2 GPUs: 69.03)"
ISSUE_1GPU = "OpenTAD issue #41 (1 GPU instead of 2: 60.30)"
ISSUE_DATA = "OpenTAD issue #36 (other videos, annotations or checkpoint: 5.12)"
ISSUE_NOISE = "OpenTAD issue #78 (about +-0.5 between identical runs)"
THUMOS_PY = "opentad/datasets/thumos.py (seconds -> frames with the annotation's frame/duration)"
ONE_GPU = "the recipe's 69.03 was trained on 2 GPUs; the same recipe on 1 GPU gave 60.30"
RANDOM_INIT = "those weights stay randomly initialised: mmengine's non-strict load only warns"

# id -> (severity, expected effect, source, group): every kind of finding, declared once
KINDS = {
    # the configs (config-differs takes its severity and effect from config.KNOWN)
    "lr-not-scaled": ("info", "the global batch differs from the recipe's; OpenTAD keeps the "
                      "learning rates as written", ZOO, "learning rates"),
    # the training log
    "log-world-size": ("warning", ONE_GPU, ISSUE_1GPU, "effective batch"),
    "log-batch": ("info", "what each optimizer step averaged over", ZOO, "effective batch"),
    "log-no-epoch": ("warning", "the log holds no finished training epoch", "", "schedule"),
    "log-epochs": ("info", "epochs the log completed", "", "schedule"),
    "log-stopped-early": ("warning", "training stopped before its last epoch (killed, or not "
                          "resumed)", "", "schedule"),
    "loss-not-finite": ("error", "the training diverged (NaN or inf loss): later weights are "
                        "meaningless", "", "learning rates"),
    "log-lr": ("info", "the learning rate over time, as upstream's warmup + cosine", ZOO,
               "learning rates"),
    "log-lr-differs": ("warning", "the learning rate over time is not upstream's warmup + "
                       "cosine at its base LR", ZOO, "learning rates"),
    "lora-not-trained": ("error", "the config adds LoRA but no LoRA parameter is in an optimizer "
                         "group: the run is adapter-only with frozen random LoRA matrices", ZOO,
                         "learning rates"),
    "log-no-eval": ("info", "no in-training evaluation: no mAP curve to read", ZOO, "evaluation"),
    "map-curve": ("info", "the in-training evaluation's average mAP", ZOO, "evaluation"),
    "map-peaked-early": ("warning", "peaked early and fell: fewer epochs or a lower learning "
                         "rate", ISSUE_NOISE, "schedule"),
    "map-still-rising": ("warning", "still rising at the end: more epochs would help",
                         ISSUE_NOISE, "schedule"),
    "log-tious": ("warning", "average mAP over other tIoUs is not comparable with 69.03", ZOO,
                  "evaluation"),
    # the data
    "annotation": ("info", "what the doctor read", "", "data"),
    "annotation-duplicate-id": ("error", "a repeated id keeps one entry: the other's segments "
                                "are lost", "", "data"),
    "annotation-video-invalid": ("error", "OpenTAD maps seconds to frames with duration and "
                                 "frame", THUMOS_PY, "data"),
    "annotation-subset-count": ("warning", "other videos than OpenTAD's THUMOS-14 annotation: "
                                "results are not comparable", ISSUE_DATA, "data"),
    "annotation-classes": ("warning", "the detector head has THUMOS-14's 20 classes", ZOO, "data"),
    "class-map": ("warning", "class indices follow the file's order", ZOO, "data"),
    "label-missing-from-class-map": ("error", "OpenTAD's loader fails on it (class_map.index)",
                                     THUMOS_PY, "data"),
    "segment-invalid": ("error", "an unreadable segment", "", "data"),
    "segment-empty": ("warning", "an empty or inverted segment teaches nothing", "", "data"),
    "segment-past-end": ("warning", "a duration or frame rate that does not match the video "
                         "shifts or cuts these segments", THUMOS_PY, "data"),
    "annotation-duplicate-segment": ("info", "upstream's evaluator drops them", "", "data"),
    "video-missing": ("error", "the loader fails on it, or the video silently drops out of "
                      "training and testing", ISSUE_DATA, "data"),
    "video-empty": ("error", "a zero-length file cannot be decoded", ISSUE_DATA, "data"),
    "video-truncated": ("error", "the end of the video is missing: its last segments have no "
                        "frames", ISSUE_DATA, "data"),
    "video-undecodable": ("error", "decord cannot read it: training or testing fails on it",
                          ISSUE_DATA, "data"),
    "video-fps-mismatch": ("error", "re-encoded at another frame rate: upstream maps seconds to "
                           "frames with the annotation's frame/duration, so every segment "
                           "shifts", THUMOS_PY, "data"),
    "video-frames-mismatch": ("error", "another cut of the video: segments land on the wrong "
                              "frames", THUMOS_PY, "data"),
    "video-unannotated": ("warning", "a video no split uses: the wrong annotation file, or a "
                          "renamed video", ISSUE_DATA, "data"),
    "video-removed-upstream": ("info", "removed on purpose by OpenTAD (wrong or empty "
                               "annotations)", ISSUE_DATA, "data"),
    # the checkpoint
    "checkpoint-sha256": ("info", "identifies the weights (upstream publishes no checksum for "
                          "its VideoMAE-S checkpoint)", ISSUE_DATA, "checkpoint"),
    "checkpoint-not-recorded": ("error", "not the checkpoint recorded in doctor.checkpoint_sha256",
                                ISSUE_DATA, "checkpoint"),
    "checkpoint-missing-keys": ("error", RANDOM_INIT, ISSUE_DATA, "checkpoint"),
    "checkpoint-unexpected-keys": ("warning", "ignored by the load: another architecture or "
                                   "renamed layers", ISSUE_DATA, "checkpoint"),
    "checkpoint-shape-mismatch": ("error", "another model size: the load fails or skips them",
                                  ISSUE_DATA, "checkpoint"),
    "checkpoint-dtype": ("info", "cast to the model's dtype on load", "", "checkpoint"),
    "checkpoint-loaded": ("info", "what the load fills (adapters are new by design)", "",
                          "checkpoint"),
}  # fmt: skip


@dataclasses.dataclass
class Finding:
    """One thing the doctor found. `why` says what it does to the result (the expected effect);
    `source` where that effect is documented."""

    id: str
    severity: str
    subject: str
    found: object
    expected: object
    why: str
    source: str = ""
    group: str = ""  # what it changes: effective batch, learning rates, data, checkpoint, ...


def finding(kind: str, subject, found, expected, **override) -> Finding:
    """A finding of a declared kind (KINDS)."""
    severity, why, source, group = KINDS[kind]
    fields = dict(severity=severity, why=why, source=source, group=group) | override
    return Finding(kind, subject=str(subject), found=found, expected=expected, **fields)


def allow(findings: list[Finding], patterns: list[str]) -> list[Finding]:
    """Errors the user accepted (`ID` or `ID:SUBJECT`, shell-style patterns matching the whole
    subject: `*name*` for a file anywhere) become warnings."""
    out = []
    for f in findings:
        hit = any(
            fnmatchcase(f.id, p.split(":", 1)[0])
            and (":" not in p or fnmatchcase(f.subject, p.split(":", 1)[1]))
            for p in patterns
        )
        if f.severity == "error" and hit:
            f = dataclasses.replace(f, severity="warning", why=f"{f.why} (allowed: doctor.allow)")
        out.append(f)
    return out


# the order findings are listed in, within a severity: the groups that moved past baselines most
RANKED_GROUPS = ("effective batch", "data", "checkpoint", "learning rates", "epochs and schedule",
                 "schedule", "frames, window and resolution")  # fmt: skip


def ranked(findings: list[Finding]) -> list[Finding]:
    def key(f: Finding):
        group = RANKED_GROUPS.index(f.group) if f.group in RANKED_GROUPS else len(RANKED_GROUPS)
        return SEVERITIES.index(f.severity), group

    return sorted(findings, key=key)


def write(findings: list[Finding], path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps([dataclasses.asdict(f) for f in ranked(findings)], indent=1))


def read(path) -> list[Finding]:
    from tadsweep import readers

    return [Finding(**f) for f in readers.read_json(path)]


def table(findings: list[Finding], width: int = 60) -> str:
    """Findings as an aligned text table (stdout, the rule's log)."""

    def cut(value) -> str:
        text = " ".join(str(value).split())
        return text if len(text) <= width else text[: width - 3] + "..."

    rows = [("severity", "id", "subject", "found", "expected")]
    rows += [(f.severity, f.id, *map(cut, (f.subject, f.found, f.expected))) for f in findings]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def line(f: Finding) -> str:
    """One line for the plan's output."""
    return f"doctor {f.severity}: {f.subject}: {f.found} (expected {f.expected}): {f.why}"


def error_lines(log) -> list[str]:
    """The error rows of a doctor run's table (its log), for the console of a stopped study."""
    try:
        with open(log, encoding="utf-8", errors="replace") as fh:
            rows = fh.read().splitlines()
    except OSError:
        return []
    return [" ".join(r.split()[1:]) for r in rows if r.startswith("error ")]
