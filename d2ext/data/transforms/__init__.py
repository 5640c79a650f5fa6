"""d2ext's augmentations: D2 :class:`~detectron2.data.transforms.Augmentation` subclasses that
any mapper can put in its augmentation list (``detectron2.data.transforms`` holds D2's own)."""

from .ssd import (
    Expand,
    PhotometricDistort,
    RandomSampleCrop,
    build_ssd_augmentations,
    centers_inside,
)

__all__ = [
    "PhotometricDistort",
    "Expand",
    "RandomSampleCrop",
    "build_ssd_augmentations",
    "centers_inside",
]
