"""OpenTAD's per-video post-processing (``batched_nms``) of pooled pre-NMS candidates, and sweeps.

``apply`` reproduces, for every video, what OpenTAD's ``gather_ddp_results`` does with the
candidates of all sliding windows: labels indexed per video in order of first appearance,
``batched_nms`` (multiclass: (soft-)NMS per class, each class capped at ``max_seg_num``;
class-agnostic: one (soft-)NMS then score voting when ``voting_thresh > 0``), a final sort by score
and cut to ``max_seg_num``, and rounding (segments to 2 decimals, scores to 4).

The knobs are declared in tadsweep/detections/knobs.py. Those of stage "video", not part of
``batched_nms`` (``video_thresh``: keep scores > thresh; ``video_topk``: keep the k best), act
**per video on the pooled candidates**, keeping their original order (ties in the top-k cut go
to the earlier candidate). They are not OpenTAD's ``pre_nms_thresh``/``pre_nms_topk``, which act
per sliding window inside the detector *before* the candidates are written and so cannot be swept
here; leave them unset (None) to reproduce OpenTAD.

``sweep`` loads candidates once and evaluates a grid of settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from tadsweep import cli, readers
from tadsweep.atomic import atomic_path
from tadsweep.detections import knobs, nms
from tadsweep.detections.evaluate import (
    DEFAULT_TIOUS,
    check_against_ground_truth,
    evaluate,
    half_column,
    half_metric_names,
    load_ground_truth,
    metric_names,
    write_matches,
)
from tadsweep.detections.formats import Detections, as_detections, dump, load_detections
from tadsweep.errors import InputError

F32 = np.float32


def _check(self) -> None:
    problems = [p for k in knobs.swept() if (p := k.problem(getattr(self, k.name)))]
    if problems:
        raise InputError("; ".join(problems))


def _from_dict(cls, d: dict, source: str = "setting"):
    """Build from a mapping; unknown keys are errors, ints are accepted for numbers."""
    if not isinstance(d, dict):
        raise InputError(f"{source}: expected an object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(PARAM_NAMES) - {"setting"})
    if unknown:
        raise InputError(f"{source}: unknown key(s) {', '.join(unknown)}")
    kwargs = {k: v for k, v in d.items() if k in PARAM_NAMES}
    for k, v in kwargs.items():
        if knobs.KNOBS[k].kind == "number" and type(v) is int:
            kwargs[k] = float(v)
    try:
        return cls(**kwargs)
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from None


PARAM_NAMES = [k.name for k in knobs.swept()]
# One post-processing setting: a field per knob of tadsweep/detections/knobs.py, upstream's
# batched_nms defaults where unset, checked against the knobs' bounds.
NMSSetting = dataclasses.make_dataclass(
    "NMSSetting",
    [(k.name, object, dataclasses.field(default=k.upstream)) for k in knobs.swept()],
    frozen=True,
    namespace={
        "__post_init__": _check,
        "from_dict": classmethod(_from_dict),
        "as_dict": dataclasses.asdict,
    },
)


def round_like_python(values: np.ndarray, ndigits: int) -> np.ndarray:
    """``round(float(v), ndigits)`` for float32 ``values``, vectorized and exact.

    A float32 times 10**4 fits in a float64 exactly, so ``rint`` sees the exact value and rounds
    half to even like Python; dividing gives the double nearest the decimal, as Python does.
    """
    scale = 10.0**ndigits
    return np.rint(np.asarray(values, F32).astype(np.float64) * scale) / scale


def _prefilter(det: Detections, s) -> Detections:
    """The per-video cuts of pooled candidates before NMS (knobs of stage "video")."""
    cuts = [(k.cut, getattr(s, k.name)) for k in knobs.swept() if k.cut]
    cuts = [(cut, v) for cut, v in cuts if v is not None]
    if not cuts:
        return det
    keep = np.ones(len(det), dtype=bool)
    for cut, value in cuts:
        keep = cut(det, keep, value)
    return det.select(keep)


def _class_groups(det: Detections) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped per (video, class), classes in order of first appearance in the video.

    Returns ``(rows, offsets)``: ``rows[offsets[g]:offsets[g+1]]`` are group g's rows in order.
    """
    if len(det) == 0:
        return np.zeros(0, np.int64), np.zeros(1, np.int64)
    return nms.group_by_class(det.offsets, det.label, len(det.labels))


def apply(results, setting: NMSSetting | dict) -> dict:
    """Post-process pooled pre-NMS candidates of every video like OpenTAD (see module doc).

    Returns the ``{video: [{"segment", "label", "score"}]}`` mapping; see
    :func:`apply_detections` for the columnar form (faster to evaluate or chain).
    """
    return apply_detections(results, setting).to_dict()


def apply_detections(results, setting: NMSSetting | dict) -> Detections:
    """:func:`apply`, returning columnar :class:`Detections`."""
    s = setting if isinstance(setting, NMSSetting) else NMSSetting.from_dict(setting)
    det = _prefilter(as_detections(results), s)
    x1 = det.start.astype(F32)
    x2 = det.end.astype(F32)
    sc = det.score.astype(F32)
    vid = det.video_of_row
    if s.multiclass:
        rows, offsets = _class_groups(det)
    else:
        rows, offsets = np.arange(len(det)), det.offsets.astype(np.int64)
    gx1, gx2, gsc = x1[rows], x2[rows], sc[rows]
    if s.use_soft_nms:
        params = nms.KernelParams(s.iou_threshold, s.sigma, s.min_score, s.method, s.t1, s.t2)
        idx, out_sc, counts = nms.soft_nms(gx1, gx2, gsc, offsets, params, s.max_seg_num)
    else:  # NMSop keeps scores > min_score first (only when min_score > 0)
        kept = np.flatnonzero(gsc > F32(s.min_score)) if s.min_score > 0 else np.arange(len(gsc))
        off = np.searchsorted(kept, offsets, side="left")
        idx, counts = nms.hard_nms(
            gx1[kept], gx2[kept], gsc[kept], off, s.iou_threshold, s.max_seg_num
        )
        idx = kept[idx]
        out_sc = gsc[idx]
    sel_rows = rows[idx]
    out_x1, out_x2 = x1[sel_rows], x2[sel_rows]
    sel_vid = vid[sel_rows] if len(sel_rows) else np.zeros(0, np.int64)

    if not s.multiclass and s.voting_thresh > 0:
        vo = np.r_[0, np.cumsum(counts)]  # one group per video: counts are per video
        for v in range(len(det.videos)):
            lo, hi = int(det.offsets[v]), int(det.offsets[v + 1])
            a, b = int(vo[v]), int(vo[v + 1])
            if b > a:
                out_x1[a:b], out_x2[a:b] = nms.seg_voting(
                    out_x1[a:b], out_x2[a:b], x1[lo:hi], x2[lo:hi], sc[lo:hi], s.voting_thresh
                )

    # Final per-video ordering: torch.sort(descending) of the concatenated float32 scores,
    # then the cut to max_seg_num.
    vid_off = np.searchsorted(sel_vid, np.arange(len(det.videos) + 1), side="left")
    order = nms.sort_desc_groups(out_sc, vid_off)
    keep = np.zeros(len(order), dtype=bool)
    counts_v = np.diff(vid_off)
    pos = np.arange(len(order)) - np.repeat(vid_off[:-1], counts_v)
    keep[pos < s.max_seg_num] = True
    order = order[keep]
    final_counts = np.minimum(counts_v, s.max_seg_num)
    return Detections(
        videos=list(det.videos),
        offsets=np.r_[0, np.cumsum(final_counts)].astype(np.int64),
        start=round_like_python(out_x1[order], 2),
        end=round_like_python(out_x2[order], 2),
        score=round_like_python(out_sc[order], 4),
        label=det.label[sel_rows[order]].astype(np.int32),
        labels=list(det.labels),
        source=f"{det.source} (post-processed)",
    )


def sweep(gt, results, settings: list[dict], tious=DEFAULT_TIOUS, save_dir=None, log=None,
          matches=None):  # fmt: skip
    """Post-process and evaluate every setting; one row (setting id, params, metrics) each.
    With ``matches`` (a path), the default setting's matches are written there
    (``evaluate.match_arrays``: what the bootstrap over videos re-weights).
    Each metric also on both cross-fitting halves (``a:average_mAP``, ...) from the same
    evaluation (see ``evaluate.split_halves``)."""
    det = as_detections(results)
    check_against_ground_truth(gt, det)
    parsed = []
    for k, d in enumerate(settings):
        name = d.get("setting", f"s{k}") if isinstance(d, dict) else f"s{k}"
        parsed.append((str(name), NMSSetting.from_dict(d, source=f"setting {name}")))
    rows = []
    for name, s in parsed:
        t0 = time.perf_counter()
        out = apply_detections(det, s)
        keep = matches is not None and name == "default"
        metrics = evaluate(gt, out, tious, strict=False, halves=True, matches=keep)
        if keep:
            write_matches(metrics["matches"], matches)
        if save_dir is not None:
            dump(out, Path(save_dir) / f"{name}.npz")
        row = {"setting": name, **s.as_dict()}
        row.update({k: metrics[k] for k in metric_names(tious)})
        for half, half_metrics in metrics["halves"].items():
            row.update({half_column(k, half): v for k, v in half_metrics.items()})
        rows.append(row)
        if log:
            took = time.perf_counter() - t0
            log(f"{name}: average_mAP={metrics['average_mAP']:.4f} ({took:.2f} s)")
    return rows


def write_tsv(path, rows: list[dict], columns: list[str]) -> None:
    """Write rows as a tab-separated table, atomically (temporary file + rename)."""
    import pandas as pd

    with atomic_path(path) as tmp:
        # object dtype keeps ints as ints next to None (pandas would turn them into floats)
        frame = pd.DataFrame(rows, columns=columns, dtype=object)
        frame.to_csv(tmp, sep="\t", index=False)


def sweep_columns(tious=DEFAULT_TIOUS) -> list[str]:
    return ["setting", *PARAM_NAMES, *metric_names(tious), *half_metric_names(tious)]


def load_grid(path) -> list[dict]:
    grid = readers.read_json(path)
    if not isinstance(grid, list) or not grid:
        raise InputError(f"{path}: expected a non-empty JSON list of settings")
    names = {}  # casefolded -> as given: ids become file names under --save-dir, and "S1" and
    # "s1" are one file on a case-insensitive filesystem
    for k, d in enumerate(grid):
        if not isinstance(d, dict):
            raise InputError(f"{path}: [{k}]: expected an object, got {type(d).__name__}")
        name = cli.check_name(d.get("setting", f"s{k}"), f"{path}: [{k}].setting")
        if name.casefold() in names:
            same = "" if names[name.casefold()] == name else f' (as "{names[name.casefold()]}"'
            same += ", ignoring case: one file name on some filesystems)" if same else ""
            raise InputError(f'{path}: [{k}].setting: duplicate setting id "{name}"{same}')
        names[name.casefold()] = name
        NMSSetting.from_dict(d, source=f"{path}: [{k}]")
    return grid


def _sweep(args) -> int:
    outputs = [args.out, args.matches]
    cli.check_outputs([args.gt, args.candidates, args.grid], outputs, [args.save_dir])
    grid = load_grid(args.grid)
    if args.matches and not any(d.get("setting") == "default" for d in grid):
        raise InputError(f'{args.grid}: no setting "default" to write --matches of')
    gt = load_ground_truth(args.gt, args.subset)
    det = load_detections(args.candidates)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    rows = sweep(gt, det, grid, args.tiou, args.save_dir, log=log, matches=args.matches)
    write_tsv(args.out, rows, sweep_columns(args.tiou))
    return 0


def _apply(args) -> int:
    cli.check_outputs([args.raw, args.setting], [args.out])
    base = {}
    if args.setting:
        base = readers.read_json(args.setting)
        if not isinstance(base, dict):
            raise InputError(f"{args.setting}: expected a JSON object")
    base.update({k: getattr(args, k) for k in PARAM_NAMES if getattr(args, k) is not None})
    setting = NMSSetting.from_dict(base, source=args.setting or "command line")
    dump(apply_detections(load_detections(args.raw), setting), args.out)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tadsweep.detections.postprocess",
        description="OpenTAD's batched_nms over pooled pre-NMS candidates, per video.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("apply", help="post-process one run's candidates with one setting")
    a.add_argument("raw", help="pre-NMS candidates (.npz, or OpenTAD's JSON, gzip ok)")
    a.add_argument("out", help="output detections (.npz; else OpenTAD's JSON, .gz: gzip)")
    a.add_argument("--setting", help="JSON file with a setting object (options override it)")
    for k in knobs.swept():  # an option per knob, bounded as the config schema bounds it
        if k.kind == "boolean":
            action = argparse.BooleanOptionalAction
            a.add_argument(k.option, dest=k.name, action=action, default=None, help=k.description)
        else:
            a.add_argument(k.option, dest=k.name, type=k.parse, help=k.description)
    a.set_defaults(func=_apply)
    w = sub.add_parser("sweep", help="evaluate a grid of settings on one run's candidates")
    w.add_argument("--gt", required=True, help="annotation JSON")
    w.add_argument("--candidates", required=True, help="pre-NMS candidates (.npz or JSON)")
    w.add_argument("--grid", required=True, help="JSON list of {setting, params...}")
    w.add_argument("--out", required=True, help="output TSV (written atomically)")
    w.add_argument("--subset", default="validation")
    w.add_argument("--tiou", type=cli.fraction, nargs="+", default=list(DEFAULT_TIOUS))
    w.add_argument("--save-dir", help="also write <setting>.npz detections here")
    w.add_argument("--matches", help="also write the default setting's matches (.npz) here")
    w.set_defaults(func=_sweep)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    cli.run(main)
