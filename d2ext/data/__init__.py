"""Datasets and mappers. Importing registers the synthetic datasets (``synth_*``) in D2's
DatasetCatalog/MetadataCatalog; they are generated on first use (see ``d2ext.data.synthetic``).
It also registers ``widerface_{train,val}`` (WIDER FACE under ``$DETECTRON2_DATASETS/widerface``)
and ``densepose_coco_2014_*`` (DensePose-COCO under ``$DETECTRON2_DATASETS/coco``), read when
first used."""

from . import (
    mappers,  # noqa: F401  (registration: YOLACT and UPSNet train mappers)
    synthetic,  # noqa: F401  (registration)
)
from .build import MAPPER_REGISTRY, build_train_mapper
from .dataset_checks import SafeMapper, add_dataset_checks, validate_dataset_dicts
from .datasets import DATASET_FORMATS, register_datasets
from .densepose_coco import (
    load_densepose_coco_json,
    register_densepose_coco,
    register_densepose_coco_builtins,
)
from .ibug_pts import load_ibug_pts_dataset, read_pts, register_ibug_pts
from .keypoint_metadata import (
    IBUG_68_CONNECTION_RULES,
    IBUG_68_FLIP_MAP,
    IBUG_68_INTEROCULAR,
    IBUG_68_KEYPOINT_NAMES,
    ibug68_metadata,
)
from .panoptic_label_space import PanopticLabelSpace
from .synthetic import ensure_synthetic_generated
from .wider_face import (
    load_wider_bbx_gt,
    load_wider_face_label,
    register_wider_bbx,
    register_wider_face,
    register_wider_face_builtins,
    wider_face_metadata,
)
from .wider_face_mat import read_wider_gt_mats, write_wider_gt_mats

# WIDER FACE and DensePose-COCO under $DETECTRON2_DATASETS, as D2 registers its builtin COCO
register_wider_face_builtins()
register_densepose_coco_builtins()

__all__ = [
    "MAPPER_REGISTRY",
    "build_train_mapper",
    "PanopticLabelSpace",
    "SafeMapper",
    "add_dataset_checks",
    "validate_dataset_dicts",
    "DATASET_FORMATS",
    "register_datasets",
    "read_pts",
    "load_ibug_pts_dataset",
    "register_ibug_pts",
    "IBUG_68_KEYPOINT_NAMES",
    "IBUG_68_FLIP_MAP",
    "IBUG_68_CONNECTION_RULES",
    "IBUG_68_INTEROCULAR",
    "ibug68_metadata",
    "ensure_synthetic_generated",
    "load_wider_face_label",
    "load_wider_bbx_gt",
    "register_wider_face",
    "register_wider_bbx",
    "register_wider_face_builtins",
    "load_densepose_coco_json",
    "register_densepose_coco",
    "register_densepose_coco_builtins",
    "wider_face_metadata",
    "read_wider_gt_mats",
    "write_wider_gt_mats",
]
