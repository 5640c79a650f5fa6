"""Pieces shared by several d2ext models (one home each)."""

from .heatmap_codec import HeatmapCodec, flip_heatmaps, flip_indices, flip_test_average

__all__ = ["HeatmapCodec", "flip_heatmaps", "flip_indices", "flip_test_average"]
