"""Per-instance annotation structures that D2's ``Instances`` carry for d2ext models."""

from .densepose import DensePoseData, DensePoseList

__all__ = ["DensePoseData", "DensePoseList"]
