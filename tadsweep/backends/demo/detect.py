"""Pre-NMS candidates of a trained demo detector, as OpenTAD's test.py makes them with
post_processing.nms=None and save_dict=True, written as candidates.npz."""

import torch

from tadsweep.backends.demo import data
from tadsweep.backends.demo.model import Detector, build_detector, load_trainable_state
from tadsweep.backends.demo.params import load_params
from tadsweep.errors import InputError

EVAL_BATCH = 16  # videos per forward pass (all demo videos have the same length)


@torch.no_grad()
def candidates(model: Detector, videos, classes, topk: int, thresh: float) -> dict:
    was_training = model.training
    model.eval()
    results = {}
    for i in range(0, len(videos), EVAL_BATCH):
        chunk = videos[i : i + EVAL_BATCH]
        if len({v.feats.shape for v in chunk}) == 1:
            outputs = zip(*model(torch.stack([v.feats for v in chunk])), strict=True)
        else:
            outputs = (tuple(o[0] for o in model(v.feats[None])) for v in chunk)
        for video, (logits, dist) in zip(chunk, outputs, strict=True):
            results[video.name] = _video_candidates(video, logits, dist, classes, topk, thresh)
    model.train(was_training)
    return results


def _video_candidates(video, logits, dist, classes, topk, thresh) -> list[dict]:
    scores = torch.sigmoid(logits).flatten()  # (T*K,), index = step * K + class
    keep = torch.nonzero(scores > thresh).flatten()
    if keep.numel() > topk:
        keep = keep[scores[keep].topk(topk).indices]
    keep = keep[scores[keep].argsort(descending=True, stable=True)]
    step, cls = keep // len(classes), keep % len(classes)
    point = step.to(torch.float32) + 0.5
    start = ((point - dist[step, 0]) / video.rate).clamp(0.0, video.duration)
    end = ((point + dist[step, 1]) / video.rate).clamp(0.0, video.duration)
    return [
        {"segment": [round(s, 2), round(e, 2)], "label": classes[c], "score": round(p, 4)}
        for s, e, c, p in zip(
            start.tolist(), end.tolist(), cls.tolist(), scores[keep].tolist(), strict=True
        )
    ]


def load_checkpoint(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as err:
        raise InputError(f"{path}: cannot read checkpoint ({type(err).__name__}: {err})") from None


def detect(params_path, data_dir, backbone_path, checkpoint_path, out) -> int:
    """Write candidates of the checkpoint's (EMA, if params.ema) weights; returns their count."""
    from tadsweep.detections import formats

    params = load_params(params_path)
    torch.set_num_threads(1)
    ds = data.load(data_dir)
    pretrained = load_checkpoint(backbone_path)
    ckpt = load_checkpoint(checkpoint_path)
    torch.manual_seed(0)  # LoRA/adapters get overwritten; seeding only keeps this quiet
    model = build_detector(pretrained, params, len(ds.classes))
    # OpenTAD's test.py loads state_dict_ema when solver.ema is on.
    key = "state_dict_ema" if params.get("ema") and "state_dict_ema" in ckpt else "state_dict"
    try:
        load_trainable_state(model, ckpt[key])
    except ValueError as err:
        raise InputError(f"{checkpoint_path}: {err}") from None
    results = candidates(model, ds.val, ds.classes, *candidate_limits(params))
    formats.dump(results, out)
    return sum(len(v) for v in results.values())


def candidate_limits(params: dict) -> tuple[int, float]:
    """Per-video top-k and score floor of the candidates; unset, OpenTAD's per-window defaults."""
    from tadsweep.detections.knobs import KNOBS

    post = params["postprocess_default"]
    topk, thresh = (
        KNOBS[k].upstream if post.get(k) is None else post[k]
        for k in ("pre_nms_topk", "pre_nms_thresh")
    )
    return int(topk), float(thresh)
