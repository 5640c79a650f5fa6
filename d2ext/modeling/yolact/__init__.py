"""YOLACT (Bolya et al., ICCV 2019) in Detectron2. Importing registers the ``YOLACT``
meta-architecture, the ``build_yolact_resnet_fpn_backbone`` backbone and the
``YOLACTAnchorGenerator``; its train mapper is :class:`d2ext.data.mappers.YOLACTDatasetMapper`."""

from d2ext.config.yolact import add_yolact_config
from d2ext.layers.prototype_masks import crop_masks

from .anchor_generator import YOLACTAnchorGenerator
from .backbone import YOLACTFPN, build_yolact_resnet_fpn_backbone
from .checkpoint import convert_official_yolact_state_dict
from .fast_nms import fast_nms, standard_nms
from .heads import MaskIoUNet, ProtoNet, YOLACTHead
from .loss import YOLACTLoss
from .meta_arch import YOLACT

__all__ = [
    "add_yolact_config",
    "YOLACT",
    "YOLACTFPN",
    "build_yolact_resnet_fpn_backbone",
    "YOLACTAnchorGenerator",
    "ProtoNet",
    "YOLACTHead",
    "MaskIoUNet",
    "YOLACTLoss",
    "crop_masks",
    "convert_official_yolact_state_dict",
    "fast_nms",
    "standard_nms",
]
