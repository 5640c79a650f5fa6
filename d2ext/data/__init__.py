"""Datasets and mappers. Importing registers the synthetic datasets (``synth_*``) in D2's
DatasetCatalog/MetadataCatalog; they are generated on first use (see ``d2ext.data.synthetic``)."""

from . import (
    mappers,  # noqa: F401  (registration: YOLACT and UPSNet train mappers)
    synthetic,  # noqa: F401  (registration)
)
from .build import MAPPER_REGISTRY, build_train_mapper
from .dataset_checks import SafeMapper, add_dataset_checks, validate_dataset_dicts
from .datasets import DATASET_FORMATS, register_datasets
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
]
