"""VPSNet (Kim et al., "Video Panoptic Segmentation", CVPR 2020): the Fuse module, the track
head with its per-video memory and the ``VPSNet`` meta-architecture on d2ext's UPSNet. Importing
registers ``VPSNet``; its train mapper is :class:`d2ext.data.mappers.VPSNetPairMapper`; config
keys: :func:`d2ext.config.add_vpsnet_config`."""

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
from .meta_arch import STUFF_SEGMENT_ID_BASE, VPSNet, VPSNetVideoState
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
    "STUFF_SEGMENT_ID_BASE",
    "TemporalSpatialAttention",
    "TrackHead",
    "TrackMemory",
    "VPSNet",
    "VPSNetFuse",
    "VPSNetVideoState",
    "comprehensive_scores",
    "gather_levels",
    "local_correlation",
    "match_logits",
    "resize_flow",
    "resolve_matches",
    "scatter_levels",
    "track_targets",
]
