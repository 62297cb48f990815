"""Detections: OpenTAD's detection files, its mAP evaluation and post-processing (soft-NMS, score
voting) reproduced exactly, the post-processing sweep and ensembles."""
