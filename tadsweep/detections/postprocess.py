"""OpenTAD's per-video post-processing (``batched_nms``) of pooled pre-NMS candidates, and sweeps.

``apply`` does, for every video, what OpenTAD's ``gather_ddp_results`` does with the candidates of
all sliding windows: labels indexed per video in order of first appearance, ``batched_nms``
((soft-)NMS per class or class-agnostic, then score voting), a final sort by score, the cut to
``max_seg_num``, and rounding (segments to 2 decimals, scores to 4). The knobs of stage "video"
(knobs.py) first cut each video's pooled candidates, keeping their order. ``sweep`` evaluates a
grid of settings on candidates loaded once.
"""

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
    all_metric_names,
    check_against_ground_truth,
    evaluate,
    half_column,
    load_ground_truth,
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
    """Build from a mapping; unknown keys are errors, ints are taken for numbers."""
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
    """``round(float(v), ndigits)`` for float32 ``values``, exactly: a float32 times 10**4 is
    exact in a float64, so ``rint`` rounds half to even like Python."""
    scale = 10.0**ndigits
    return np.rint(np.asarray(values, F32).astype(np.float64) * scale) / scale


def _prefilter(det: Detections, s) -> Detections:
    """The per-video cuts of pooled candidates before NMS (knobs of stage "video")."""
    keep = np.ones(len(det), dtype=bool)
    for k in knobs.swept():
        if k.cut and getattr(s, k.name) is not None:
            keep = k.cut(det, keep, getattr(s, k.name))
    return det if keep.all() else det.select(keep)


def apply(results, setting: NMSSetting | dict) -> dict:
    """:func:`apply_detections` as the ``{video: [{"segment", "label", "score"}]}`` mapping."""
    return apply_detections(results, setting).to_dict()


def apply_detections(results, setting: NMSSetting | dict) -> Detections:
    """Post-process pooled pre-NMS candidates of every video like OpenTAD (module docstring)."""
    s = setting if isinstance(setting, NMSSetting) else NMSSetting.from_dict(setting)
    det = _prefilter(as_detections(results), s)
    x1, x2, sc = det.start.astype(F32), det.end.astype(F32), det.score.astype(F32)
    vid = det.video_of_row
    if s.multiclass:
        rows, offsets = nms.group_by_class(det.offsets, det.label, len(det.labels))
    else:
        rows, offsets = np.arange(len(det)), det.offsets.astype(np.int64)
    gx1, gx2, gsc = x1[rows], x2[rows], sc[rows]
    if s.use_soft_nms:
        idx, out_sc, counts = nms.soft_nms(gx1, gx2, gsc, offsets, s, s.max_seg_num)
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
    sel_vid = vid[sel_rows]

    if not s.multiclass and s.voting_thresh > 0:
        vo = np.r_[0, np.cumsum(counts)]  # one group per video: counts are per video
        for v in np.flatnonzero(counts):
            old, new = slice(det.offsets[v], det.offsets[v + 1]), slice(vo[v], vo[v + 1])
            out_x1[new], out_x2[new] = nms.seg_voting(
                out_x1[new], out_x2[new], x1[old], x2[old], sc[old], s.voting_thresh
            )

    # Per video: torch.sort(descending) of the float32 scores, then the cut to max_seg_num.
    vid_off = np.searchsorted(sel_vid, np.arange(len(det.videos) + 1), side="left")
    counts_v = np.diff(vid_off)
    order = nms.sort_desc_groups(out_sc, vid_off)
    order = order[np.arange(len(order)) - np.repeat(vid_off[:-1], counts_v) < s.max_seg_num]
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
    """Post-process and evaluate every setting: one row (setting id, params, every metric on all
    videos and on each cross-fitting half) each. ``matches``: a path for the default setting's
    matches (``evaluate.match_arrays``)."""
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
        metrics = score(gt, out, tious, matches=keep)
        if keep:
            write_matches(metrics["matches"], matches)
        if save_dir is not None:
            dump(out, Path(save_dir) / f"{name}.npz")
        row = {"setting": name, **s.as_dict()}
        rows.append(row | {k: metrics[k] for k in all_metric_names(tious)})
        if log:
            took = time.perf_counter() - t0
            log(f"{name}: average_mAP={metrics['average_mAP']:.4f} ({took:.2f} s)")
    return rows


def score(gt, det, tious=DEFAULT_TIOUS, matches: bool = False) -> dict:
    """:func:`all_metric_names` of detections already checked against ``gt`` (and matches)."""
    m = evaluate(gt, det, tious, strict=False, halves=True, matches=matches)
    for half, half_metrics in m.pop("halves").items():
        m.update({half_column(k, half): v for k, v in half_metrics.items()})
    return m


def write_tsv(path, rows: list[dict], columns: list[str]) -> None:
    """Write rows as a tab-separated table, atomically (temporary file + rename)."""
    import pandas as pd

    with atomic_path(path) as tmp:  # object dtype: ints stay ints next to None
        pd.DataFrame(rows, columns=columns, dtype=object).to_csv(tmp, sep="\t", index=False)


def sweep_columns(tious=DEFAULT_TIOUS) -> list[str]:
    return ["setting", *PARAM_NAMES, *all_metric_names(tious)]


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
    base = readers.read_json(args.setting) if args.setting else {}
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
