"""Train-time dataset mappers, registered in :data:`d2ext.data.MAPPER_REGISTRY` under their class
names and selected with ``INPUT.DATASET_MAPPER_NAME`` (see :func:`d2ext.data.build_train_mapper`).
A mapper whose class sets ``used_at_test_time = True`` (the top-down landmark crops) maps the test
sets too (``d2ext.engine.Trainer.build_test_mapper``)."""

from .densepose import DensePoseMapper
from .landmark_topdown import (
    AffineCropTransform,
    RandomLandmarkCrop,
    TopDownLandmarkMapper,
    crop_affine,
)
from .retinaface import RetinaFaceMapper
from .upsnet_panoptic import UPSNetPanopticMapper
from .video_pairs import YolactEdgePairMapper, transform_flow
from .vpsnet import VPSNetPairMapper
from .yolact import YOLACTDatasetMapper, build_scale_jitter

__all__ = [
    "AffineCropTransform",
    "DensePoseMapper",
    "RandomLandmarkCrop",
    "RetinaFaceMapper",
    "TopDownLandmarkMapper",
    "UPSNetPanopticMapper",
    "VPSNetPairMapper",
    "YOLACTDatasetMapper",
    "YolactEdgePairMapper",
    "build_scale_jitter",
    "crop_affine",
    "transform_flow",
]
