# Smoke overlay: upstream's AdaTAD VideoMAE-S adapter config with only its sizes shrunk, so the real
# OpenTAD code runs on CPU in seconds (tests, `make test-opentad`, `make gpu-check ARGS=--tiny`).
# Use it as `paths.base_config`: a rendered run config is its child, so everything a run sets
# (LoRA, schedule, optimizer, augmentation slot, structure, post-processing) is applied on top and
# nothing here touches those keys. What shrinks: frames per window (768 -> 64), resolution
# (160 -> 32, pretrained grid 64 as upstream's 224 so the position-embedding interpolation runs),
# width (384 -> 32), heads (6 -> 2), detector channels (512 -> 32). Depth stays 12, so adapter
# placements (`first_half`, `last_half`) mean what they mean at full size.
# window_size and chunk_num are Python variables in upstream's file: every entry built from them
# is restated here with the small values (mmengine merges dicts, but replaces lists wholesale).
_base_ = ["{{$OPENTAD_ROOT:}}/configs/adatad/thumos/e2e_thumos_videomae_s_768x1_160_adapter.py"]

window_size = 64
scale_factor = 1
chunk_num = window_size * scale_factor // 16
embed_dims = 32
channels = 32

dataset = dict(
    train=dict(
        pipeline=[
            dict(type="PrepareVideoInfo", format="mp4"),
            dict(type="mmaction.DecordInit", num_threads=4),
            dict(
                type="LoadFrames",
                num_clips=1,
                method="random_trunc",
                trunc_len=window_size,
                trunc_thresh=0.75,
                crop_ratio=[0.9, 1.0],
                scale_factor=scale_factor,
            ),
            dict(type="mmaction.DecordDecode"),
            dict(type="mmaction.Resize", scale=(-1, 36)),
            dict(type="mmaction.RandomResizedCrop"),
            dict(type="mmaction.Resize", scale=(32, 32), keep_ratio=False),
            dict(type="mmaction.Flip", flip_ratio=0.5),
            dict(type="mmaction.ImgAug", transforms="default"),
            dict(type="mmaction.ColorJitter"),
            dict(type="mmaction.FormatShape", input_format="NCTHW"),
            dict(type="ConvertToTensor", keys=["imgs", "gt_segments", "gt_labels"]),
            dict(type="Collect", inputs="imgs", keys=["masks", "gt_segments", "gt_labels"]),
        ],
    ),
    val=dict(
        window_size=window_size,
        pipeline=[
            dict(type="PrepareVideoInfo", format="mp4"),
            dict(type="mmaction.DecordInit", num_threads=4),
            dict(
                type="LoadFrames", num_clips=1, method="sliding_window", scale_factor=scale_factor
            ),
            dict(type="mmaction.DecordDecode"),
            dict(type="mmaction.Resize", scale=(-1, 32)),
            dict(type="mmaction.CenterCrop", crop_size=32),
            dict(type="mmaction.FormatShape", input_format="NCTHW"),
            dict(type="ConvertToTensor", keys=["imgs", "gt_segments", "gt_labels"]),
            dict(type="Collect", inputs="imgs", keys=["masks", "gt_segments", "gt_labels"]),
        ],
    ),
    test=dict(
        window_size=window_size,
        pipeline=[
            dict(type="PrepareVideoInfo", format="mp4"),
            dict(type="mmaction.DecordInit", num_threads=4),
            dict(
                type="LoadFrames", num_clips=1, method="sliding_window", scale_factor=scale_factor
            ),
            dict(type="mmaction.DecordDecode"),
            dict(type="mmaction.Resize", scale=(-1, 32)),
            dict(type="mmaction.CenterCrop", crop_size=32),
            dict(type="mmaction.FormatShape", input_format="NCTHW"),
            dict(type="ConvertToTensor", keys=["imgs"]),
            dict(type="Collect", inputs="imgs", keys=["masks"]),
        ],
    ),
)

model = dict(
    backbone=dict(
        backbone=dict(
            img_size=64,
            embed_dims=embed_dims,
            num_heads=2,
            total_frames=window_size * scale_factor,
        ),
        custom=dict(
            pre_processing_pipeline=[
                dict(
                    type="Rearrange",
                    keys=["frames"],
                    ops="b n c (t1 t) h w -> (b t1) n c t h w",
                    t1=chunk_num,
                ),
            ],
            post_processing_pipeline=[
                dict(type="Reduce", keys=["feats"], ops="b n c t h w -> b c t", reduction="mean"),
                dict(
                    type="Rearrange", keys=["feats"], ops="(b t1) c t -> b c (t1 t)", t1=chunk_num
                ),
                dict(type="Interpolate", keys=["feats"], size=window_size),
            ],
        ),
    ),
    projection=dict(in_channels=embed_dims, out_channels=channels, max_seq_len=window_size),
    neck=dict(in_channels=channels, out_channels=channels),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
)
