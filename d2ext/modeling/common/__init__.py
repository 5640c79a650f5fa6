"""Pieces shared by several d2ext models (one home each)."""

from .flow import (
    FlowNetMini,
    FlowNetOutput,
    RAFTFlow,
    convert_official_flow_state_dict,
    load_flow_weights,
)
from .heatmap_codec import HeatmapCodec, flip_heatmaps, flip_indices, flip_test_average
from .landmark_coding import Landmark2AnchorTransform
from .tracking import Tracker, mask_iou, match_by_iou
from .warp import (
    endpoint_error,
    feature_matching_loss,
    identity_grid,
    multiscale_endpoint_error,
    pixel_flow_to_normalized,
    warp_features,
)

__all__ = [
    "FlowNetMini",
    "FlowNetOutput",
    "HeatmapCodec",
    "Landmark2AnchorTransform",
    "RAFTFlow",
    "Tracker",
    "convert_official_flow_state_dict",
    "endpoint_error",
    "feature_matching_loss",
    "flip_heatmaps",
    "flip_indices",
    "flip_test_average",
    "identity_grid",
    "load_flow_weights",
    "mask_iou",
    "match_by_iou",
    "multiscale_endpoint_error",
    "pixel_flow_to_normalized",
    "warp_features",
]
