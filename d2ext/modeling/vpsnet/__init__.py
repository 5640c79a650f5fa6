"""VPSNet (Kim et al., "Video Panoptic Segmentation", CVPR 2020): the Fuse module and the track
head with its per-video memory. Nothing is registered yet; config keys:
:func:`d2ext.config.add_vpsnet_config`."""

from d2ext.config.vpsnet import add_vpsnet_config

from .fuse import (
    FlowRefinement,
    TemporalSpatialAttention,
    VPSNetFuse,
    gather_levels,
    local_correlation,
    resize_flow,
    scatter_levels,
)
from .track_head import (
    TrackHead,
    TrackMemory,
    comprehensive_scores,
    match_logits,
    resolve_matches,
    track_targets,
)

__all__ = [
    "add_vpsnet_config",
    "FlowRefinement",
    "TemporalSpatialAttention",
    "TrackHead",
    "TrackMemory",
    "VPSNetFuse",
    "comprehensive_scores",
    "gather_levels",
    "local_correlation",
    "match_logits",
    "resize_flow",
    "resolve_matches",
    "scatter_levels",
    "track_targets",
]
