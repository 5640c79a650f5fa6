"""COCO run-length encoding of a batch of row-major masks without per-mask Fortran copies.

COCO RLE walks a mask in column-major order, so ``pycocotools.mask.encode`` wants an (H, W, N)
Fortran-ordered uint8 array, and D2's ``instances_to_coco_json`` makes one transposing copy per
mask to get it, which costs more than the encoding itself at image size. Here the run lengths
come from :func:`d2ext.layers.rle_run_lengths` (compiled, or its numpy reference: both scan the
row-major masks directly) and are compressed into COCO's string format by pycocotools itself,
so the result is byte-identical to ``pycocotools.mask.encode``.
"""

from typing import Dict, List, Union

import numpy as np
import pycocotools.mask as mask_util
import torch

from d2ext.layers import rle_run_lengths

__all__ = ["encode_masks"]


def encode_masks(masks: Union[torch.Tensor, np.ndarray]) -> List[Dict[str, object]]:
    """Encode binary masks as compressed COCO RLEs.

    Args:
        masks: (N, H, W) masks in row-major (C) order, torch (any device) or numpy; bool, or any
            dtype whose nonzero entries are foreground after a cast to uint8 (D2's convention).

    Returns:
        N dicts ``{"size": [H, W], "counts": bytes}``, byte-identical to
        ``pycocotools.mask.encode(np.asfortranarray(masks.transpose(1, 2, 0)))``.
    """
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu()
        masks = masks if masks.dtype == torch.bool else masks.to(torch.uint8)
    else:
        masks = np.asarray(masks)
        if masks.dtype not in (np.bool_, np.uint8):
            masks = masks.astype(np.uint8)
        masks = torch.from_numpy(np.ascontiguousarray(masks))
    if masks.dim() != 3:
        raise ValueError(f"encode_masks expects (N, H, W) masks, got shape {tuple(masks.shape)}")
    n, h, w = masks.shape
    if n == 0:
        return []
    if h * w == 0:  # nothing to scan; let pycocotools describe the empty masks
        return mask_util.encode(np.zeros((h, w, n), dtype=np.uint8, order="F"))
    counts, lengths = rle_run_lengths(masks)
    counts, bounds = counts.tolist(), np.cumsum(lengths.numpy()).tolist()
    rles = [{"size": [h, w], "counts": counts[a:b]} for a, b in zip([0] + bounds[:-1], bounds)]
    return mask_util.frPyObjects(rles, h, w)
