"""Python face of d2ext's compiled ops (``csrc/``); every op has a pure-torch reference and
falls back to it when ``d2ext._C`` is not built (see :mod:`d2ext.layers._ext`)."""
from ._ext import cuda_built, extension_available
from .mask_ops import (
    assemble_masks,
    assemble_masks_reference,
    paste_masks,
    paste_masks_reference,
    resize_threshold,
    resize_threshold_reference,
)

extension_available()  # loads d2ext._C when built, so torch.ops.d2ext.* exist after this import

__all__ = [
    "extension_available",
    "cuda_built",
    "assemble_masks",
    "assemble_masks_reference",
    "paste_masks",
    "paste_masks_reference",
    "resize_threshold",
    "resize_threshold_reference",
]
