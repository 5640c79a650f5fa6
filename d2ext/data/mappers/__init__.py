"""Train-time dataset mappers, registered in :data:`d2ext.data.MAPPER_REGISTRY` under their class
names and selected with ``INPUT.DATASET_MAPPER_NAME`` (see :func:`d2ext.data.build_train_mapper`)."""

from .upsnet_panoptic import UPSNetPanopticMapper
from .yolact import YOLACTDatasetMapper, build_scale_jitter

__all__ = ["UPSNetPanopticMapper", "YOLACTDatasetMapper", "build_scale_jitter"]
