"""Datasets and mappers. Importing registers the synthetic datasets (``synth_*``) in D2's
DatasetCatalog/MetadataCatalog; they are generated on first use (see ``d2ext.data.synthetic``)."""
from .build import MAPPER_REGISTRY, build_train_mapper
from . import synthetic  # noqa: F401  (registration)

__all__ = ["MAPPER_REGISTRY", "build_train_mapper"]
