# TEST DOUBLE of OpenTAD's ActionFormer model base config (shape only), for tadsweep's tests.
model = dict(
    type="ActionFormer",
    projection=dict(
        type="Conv1DTransformerProj",
        in_channels=2048,
        out_channels=512,
        max_seq_len=2304,
        attn_cfg=dict(n_head=4, n_mha_win_size=19),
    ),
    neck=dict(type="FPNIdentity", in_channels=512, out_channels=512, num_levels=6),
    rpn_head=dict(
        type="ActionFormerHead",
        num_classes=20,
        in_channels=512,
        feat_channels=512,
        loss=dict(cls_loss=dict(type="FocalLoss"), reg_loss=dict(type="DIOULoss")),
    ),
)
