"""Pieces shared by several d2ext models (one home each)."""

from .heatmap_codec import HeatmapCodec, flip_heatmaps, flip_indices, flip_test_average
from .landmark_coding import Landmark2AnchorTransform

__all__ = [
    "HeatmapCodec",
    "Landmark2AnchorTransform",
    "flip_heatmaps",
    "flip_indices",
    "flip_test_average",
]
