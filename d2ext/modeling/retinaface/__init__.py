"""RetinaFace (Deng et al., CVPR 2020): multi-task single-shot face detection with five
landmarks, faithful to biubug6/Pytorch_Retinaface, with its MobileNet-0.25 backbone."""

from .backbone import MobileNetV1, build_retinaface_mobilenet_backbone
from .checkpoint import convert_official_retinaface_state_dict, infer_official_retinaface_backbone
from .loss import match_anchors, retinaface_losses, retinaface_targets
from .meta_arch import RetinaFace
from .neck import SSH, RetinaFaceFPN

__all__ = [
    "MobileNetV1",
    "RetinaFace",
    "RetinaFaceFPN",
    "SSH",
    "build_retinaface_mobilenet_backbone",
    "convert_official_retinaface_state_dict",
    "infer_official_retinaface_backbone",
    "match_anchors",
    "retinaface_losses",
    "retinaface_targets",
]
