"""Python face of d2ext's compiled ops (``csrc/``): every ``torch.ops.d2ext.*`` call goes
through this package. Each op has a pure-torch (or numpy) reference and falls back to it when
``d2ext._C`` is not built (see :mod:`d2ext.layers._ext`)."""

from ._ext import cuda_built, extension_available
from .eval_ops import (
    eval_ops_compiled,
    id_pair_counts,
    id_pair_counts_reference,
    png_panoptic_ids,
    png_panoptic_ids_reference,
    rle_run_lengths,
    rle_run_lengths_reference,
)
from .mask_ops import (
    assemble_masks,
    assemble_masks_reference,
    paste_mask_values,
    paste_masks,
    paste_masks_reference,
    resize_threshold,
    resize_threshold_reference,
)
from .prototype_masks import box_crop_region, crop_masks, prototype_masks

extension_available()  # loads d2ext._C when built, so torch.ops.d2ext.* exist after this import

__all__ = [
    "extension_available",
    "cuda_built",
    "assemble_masks",
    "assemble_masks_reference",
    "paste_mask_values",
    "paste_masks",
    "paste_masks_reference",
    "prototype_masks",
    "crop_masks",
    "box_crop_region",
    "resize_threshold",
    "resize_threshold_reference",
    "eval_ops_compiled",
    "id_pair_counts",
    "id_pair_counts_reference",
    "png_panoptic_ids",
    "png_panoptic_ids_reference",
    "rle_run_lengths",
    "rle_run_lengths_reference",
]
