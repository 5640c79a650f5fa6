"""COCO run-length encoding of a batch of row-major masks without per-mask Fortran copies.

COCO RLE walks a mask in column-major order: the counts are the lengths of alternating runs of
0s and 1s of ``mask.T.ravel()``, starting with 0s. ``pycocotools.mask.encode`` therefore wants an
(H, W, N) Fortran-ordered uint8 array, and D2's ``instances_to_coco_json`` makes one transposing
copy per mask to get it, which costs more than the encoding itself at image size.

A column-major run ends exactly where a pixel differs from the one *above* it (same column) or,
at the top of a column, from the bottom pixel of the previous column. The first kind is found by
comparing the row-major buffer with itself shifted by one row, eight bytes at a time; only the
few pixels on a boundary are then touched individually. The compiled ``rle_run_lengths`` op does this per
mask in one pass (masks in parallel); the numpy version below is the fallback without the
extension. The run lengths are compressed into
COCO's string format by pycocotools itself, so the result is byte-identical to
``pycocotools.mask.encode``.
"""

from typing import Dict, List, Union

import numpy as np
import pycocotools.mask as mask_util
import torch

from d2ext.layers._ext import extension_available

__all__ = ["encode_masks"]


def _row_changes(flat: np.ndarray, width: int) -> np.ndarray:
    """Indices p >= width of ``flat`` (uint8, 1-d) with ``flat[p] != flat[p - width]``, sorted."""
    n_words = (flat.size - width) // 8
    # numpy compares unaligned uint64 views directly, so any width works
    below = np.frombuffer(flat, dtype=np.uint64, count=n_words, offset=width)
    above = np.frombuffer(flat, dtype=np.uint64, count=n_words, offset=0)
    words = np.flatnonzero(below != above)  # rare: run ends are on object boundaries only
    # the differing bytes of those words, in memory order whatever the endianness
    word, byte = np.nonzero((below[words] ^ above[words]).view(np.uint8).reshape(-1, 8))
    pos = width + words[word] * 8 + byte
    tail = np.arange(width + n_words * 8, flat.size)
    return np.concatenate([pos, tail[flat[tail] != flat[tail - width]]])


def _run_lengths(masks: np.ndarray) -> List[List[int]]:
    """Column-major run lengths of each mask of ``masks`` ((N, H, W) uint8, C-contiguous)."""
    n, h, w = masks.shape
    hw = h * w
    flat = masks.reshape(-1)

    # runs ending inside a column: pixel differs from the one above it
    pos = _row_changes(flat, w)
    img, rem = np.divmod(pos, hw)
    row, col = np.divmod(rem, w)
    keep = row > 0  # row 0 of mask i compared with the last row of mask i-1: not a run end
    img, start = img[keep], col[keep] * h + row[keep]

    # runs ending at a column break: top pixel differs from the previous column's bottom one
    top_img, top_col = np.nonzero(masks[:, 0, 1:] != masks[:, h - 1, :-1])
    # a mask starting with 1 has an empty leading run of 0s
    first_img = np.flatnonzero(masks[:, 0, 0])

    img = np.concatenate([img, top_img, first_img, np.arange(n)])
    start = np.concatenate([start, (top_col + 1) * h, np.zeros_like(first_img), np.full(n, hw)])
    order = np.argsort(img * (hw + 1) + start, kind="stable")
    img, start = img[order], start[order]
    prev = np.empty_like(start)
    prev[0] = 0
    prev[1:] = start[:-1]
    prev[np.r_[True, img[1:] != img[:-1]]] = 0  # each mask's first run starts at 0
    counts = (start - prev).tolist()
    bounds = np.cumsum(np.bincount(img, minlength=n)).tolist()
    return [counts[a:b] for a, b in zip([0] + bounds[:-1], bounds)]


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
    if extension_available():
        counts, lengths = torch.ops.d2ext.rle_run_lengths(masks)
        counts, bounds = counts.tolist(), np.cumsum(lengths.numpy()).tolist()
        per_mask = [counts[a:b] for a, b in zip([0] + bounds[:-1], bounds)]
    else:
        flat = masks.numpy() if masks.dtype == torch.bool else masks.numpy() != 0
        per_mask = _run_lengths(np.ascontiguousarray(flat).view(np.uint8))
    rles = [{"size": [h, w], "counts": c} for c in per_mask]
    return mask_util.frPyObjects(rles, h, w)
