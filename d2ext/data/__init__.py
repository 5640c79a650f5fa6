"""Datasets and mappers. Importing registers the synthetic datasets (``synth_*``) in D2's
DatasetCatalog/MetadataCatalog; they are generated on first use (see ``d2ext.data.synthetic``)."""

from . import (
    mappers,  # noqa: F401  (registration: YOLACT and UPSNet train mappers)
    synthetic,  # noqa: F401  (registration)
)
from .build import MAPPER_REGISTRY, build_train_mapper
from .dataset_checks import SafeMapper, add_dataset_checks, validate_dataset_dicts
from .datasets import DATASET_FORMATS, register_datasets
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
    "ensure_synthetic_generated",
]
