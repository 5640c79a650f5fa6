"""UPSNet (Xiong et al., CVPR 2019) on stock D2 Mask R-CNN. Importing registers the ``UPSNet``
meta-architecture; its train mapper is :class:`d2ext.data.mappers.UPSNetPanopticMapper` and its
label space :class:`d2ext.data.PanopticLabelSpace`; config keys:
:func:`d2ext.config.add_upsnet_config`."""

from d2ext.config.upsnet import add_upsnet_config

from .meta_arch import UPSNet
from .panoptic_head import (
    UPSNetPanopticHead,
    panoptic_logits,
    panoptic_targets,
    remove_overlapping_masks,
    select_panoptic_detections,
)
from .semantic_head import DeformConvWithOffset, UPSNetSemanticHead

__all__ = [
    "add_upsnet_config",
    "DeformConvWithOffset",
    "UPSNet",
    "UPSNetPanopticHead",
    "UPSNetSemanticHead",
    "panoptic_logits",
    "panoptic_targets",
    "remove_overlapping_masks",
    "select_panoptic_detections",
]
