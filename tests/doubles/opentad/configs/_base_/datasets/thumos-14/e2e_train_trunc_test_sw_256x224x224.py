# TEST DOUBLE of OpenTAD's THUMOS-14 end-to-end dataset base config: same keys and values as listed
# in docs/opentad-reference.md, written for tadsweep's tests (not OpenTAD's file).
annotation_path = "data/thumos-14/annotations/thumos_14_anno.json"
class_map = "data/thumos-14/annotations/category_idx.txt"
data_path = "data/thumos-14/raw_data/video"
block_list = None
window_size = 256


def _split(kind, subset, **extra):
    return dict(
        type=kind,
        ann_file=annotation_path,
        subset_name=subset,
        block_list=block_list,
        class_map=class_map,
        data_path=data_path,
        filter_gt=False,
        feature_stride=4,
        sample_stride=1,
        **extra,
    )


dataset = dict(
    train=_split("ThumosPaddingDataset", "training", pipeline=[]),
    val=_split(
        "ThumosSlidingDataset",
        "validation",
        window_size=window_size,
        window_overlap_ratio=0.25,
        pipeline=[],
    ),
    test=_split(
        "ThumosSlidingDataset",
        "validation",
        test_mode=True,
        window_size=window_size,
        window_overlap_ratio=0.5,
        pipeline=[],
    ),
)
evaluation = dict(
    type="mAP",
    subset="validation",
    tiou_thresholds=[0.3, 0.4, 0.5, 0.6, 0.7],
    ground_truth_filename=annotation_path,
)
