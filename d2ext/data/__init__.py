"""Datasets and mappers. Importing registers the synthetic datasets (``synth_*``) in D2's
DatasetCatalog/MetadataCatalog; they are generated on first use (see ``d2ext.data.synthetic``)."""
from .build import MAPPER_REGISTRY, build_train_mapper
from . import synthetic  # noqa: F401  (registration)
from .dataset_checks import SafeMapper, add_dataset_checks, validate_dataset_dicts
from .synthetic import ensure_synthetic_generated

__all__ = [
    "MAPPER_REGISTRY",
    "build_train_mapper",
    "SafeMapper",
    "add_dataset_checks",
    "validate_dataset_dicts",
    "ensure_synthetic_generated",
]
