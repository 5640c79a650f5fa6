"""Evaluation ops: compiled CPU kernels (``csrc/evaluation``) with pure-numpy references.

Three ops on integer data, each computed by ``torch.ops.d2ext.*`` when the compiled extension is
loaded, else by its reference; both paths give identical integers (no floating point is
involved) and raise ``ValueError`` for the same bad inputs:

* :func:`rle_run_lengths` - COCO RLE run lengths of row-major masks (used by
  :func:`d2ext.evaluation.encode_masks`);
* :func:`png_panoptic_ids` - PNG scanline unfiltering + panopticapi's ``rgb2id`` (used by
  :func:`d2ext.evaluation.read_panoptic_png`);
* :func:`id_pair_counts` - panopticapi's ``np.unique(gt * 2**24 + pred, return_counts=True)``
  (used by :func:`d2ext.evaluation.panoptic_image_stats`).

The ops run on the host (predictions and ground truth are read there): inputs must be CPU
tensors. :func:`eval_ops_compiled` is this module's one gate. Two callers also consult it to
pick a faster route of their own when the ops are not compiled (OpenCV decodes whole PNG files,
a lookup table + ``np.bincount`` counts id pairs), because the references of those two ops are
written for clarity, not speed.
"""

from typing import Tuple

import numpy as np
import torch

from ._ext import extension_available

__all__ = [
    "eval_ops_compiled",
    "rle_run_lengths",
    "rle_run_lengths_reference",
    "png_panoptic_ids",
    "png_panoptic_ids_reference",
    "id_pair_counts",
    "id_pair_counts_reference",
]

ID_LIMIT = 1 << 24  # panoptic segment ids are 24-bit RGB colours


def eval_ops_compiled() -> bool:
    """True when the evaluation ops run their compiled kernels (``d2ext._C`` loaded)."""
    return extension_available()


def _check_cpu_tensor(x, name: str, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.device.type != "cpu":
        raise ValueError(
            f"{what}: {name} must be a CPU tensor (evaluation ops run on the host), got {x.device}"
        )


# --------------------------------------------------------------------------- COCO RLE
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


def rle_run_lengths_reference(masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """numpy :func:`rle_run_lengths`, without per-mask transposing copies.

    A column-major run ends exactly where a pixel differs from the one *above* it (same column)
    or, at the top of a column, from the bottom pixel of the previous column. The first kind is
    found by comparing the row-major buffer with itself shifted by one row, eight bytes at a
    time; only the few pixels on a boundary are then touched individually.
    """
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    masks = masks.contiguous().numpy()
    masks = (masks if masks.dtype == np.bool_ else masks != 0).view(np.uint8)  # nonzero = 1
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
    counts = torch.from_numpy((start - prev).astype(np.int64))
    lengths = torch.from_numpy(np.bincount(img, minlength=n).astype(np.int64))
    return counts, lengths


def rle_run_lengths(masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """COCO RLE run lengths of row-major masks, without transposing copies.

    COCO RLE walks a mask in column-major order: its uncompressed "counts" are the lengths of
    the alternating runs of 0s and 1s of ``mask.T.ravel()``, starting with 0s.

    Args:
        masks (Tensor): (N, H, W) bool or uint8 on the CPU (nonzero = foreground), H, W > 0.

    Returns:
        (counts, lengths): int64 (sum(lengths),) all masks' counts concatenated, and int64 (N,)
        the number of counts of each mask.
    """
    what = "rle_run_lengths"
    _check_cpu_tensor(masks, "masks", what)
    if masks.dim() != 3:
        raise ValueError(f"{what}: masks must be (N, H, W), got shape {tuple(masks.shape)}")
    if masks.dtype not in (torch.bool, torch.uint8):
        raise ValueError(f"{what}: masks must be bool or uint8, got {masks.dtype}")
    if masks.shape[1] == 0 or masks.shape[2] == 0:
        raise ValueError(
            f"{what}: masks must have a non-empty image size, got {tuple(masks.shape)}"
        )
    if eval_ops_compiled():
        return torch.ops.d2ext.rle_run_lengths(masks)
    return rle_run_lengths_reference(masks)


# --------------------------------------------------------------------------- panoptic PNG
def _unfilter_sequential(kind: int, line: np.ndarray, up: np.ndarray, bpp: int) -> np.ndarray:
    """Average (3) or Paeth (4) filter reversal, byte by byte as the PNG spec (section 9) reads."""
    line, up = line.tolist(), up.tolist()
    cur = [0] * len(line)
    for i, x in enumerate(line):
        a = cur[i - bpp] if i >= bpp else 0  # left
        b = up[i]  # up
        if kind == 3:
            pred = (a + b) >> 1
        else:
            c = up[i - bpp] if i >= bpp else 0  # up-left
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        cur[i] = (x + pred) & 0xFF
    return np.array(cur, dtype=np.int64)


def png_panoptic_ids_reference(
    raw: torch.Tensor, height: int, width: int, channels: int
) -> torch.Tensor:
    """numpy/Python :func:`png_panoptic_ids`: a statement of the PNG spec, not a fast decoder
    (Average and Paeth rows are reversed one byte at a time)."""
    stride = width * channels
    lines = raw.numpy().reshape(height, stride + 1)
    pixels = np.zeros((height, stride), dtype=np.int64)
    up = np.zeros(stride, dtype=np.int64)  # the scanline above the first one is zeros
    for y in range(height):
        kind, line = int(lines[y, 0]), lines[y, 1:].astype(np.int64)
        if kind == 0:  # None
            cur = line
        elif kind == 1:  # Sub: add the byte one pixel to the left, i.e. a running sum per channel
            cur = np.cumsum(line.reshape(width, channels), axis=0).reshape(-1) & 0xFF
        elif kind == 2:  # Up
            cur = (line + up) & 0xFF
        elif kind in (3, 4):
            cur = _unfilter_sequential(kind, line, up, channels)
        else:
            raise ValueError(f"corrupt PNG: scanline filter type {kind} (valid: 0-4)")
        pixels[y] = cur
        up = cur
    rgb = pixels.reshape(height, width, channels)[:, :, :3]  # alpha is ignored, as in rgb2id
    ids = rgb[:, :, 0] + 256 * rgb[:, :, 1] + 256 * 256 * rgb[:, :, 2]
    return torch.from_numpy(ids.astype(np.int32))


def png_panoptic_ids(raw: torch.Tensor, height: int, width: int, channels: int) -> torch.Tensor:
    """Segment ids of a COCO panoptic PNG from its inflated image data.

    Args:
        raw (Tensor): (height * (1 + width * channels),) uint8 on the CPU: the inflated IDAT
            stream of a non-interlaced 8-bit PNG, ``height`` scanlines of one filter-type byte
            followed by ``width * channels`` bytes.
        height, width (int): the image size from the PNG header, >= 0.
        channels (int): 3 (RGB) or 4 (RGBA).

    Returns:
        IntTensor (height, width): ``R + 256 G + 256**2 B`` of each pixel (panopticapi's
        ``rgb2id``; alpha is ignored). A bad filter type or a data size that does not match the
        header raises ``ValueError("corrupt PNG: ...")``.
    """
    what = "png_panoptic_ids"
    _check_cpu_tensor(raw, "raw", what)
    if raw.dtype != torch.uint8 or raw.dim() != 1:
        raise ValueError(
            f"{what}: raw must be a 1-D uint8 tensor, got {raw.dtype} {tuple(raw.shape)}"
        )
    height, width, channels = int(height), int(width), int(channels)
    if channels not in (3, 4):
        raise ValueError(f"{what}: channels must be 3 (RGB) or 4 (RGBA), got {channels}")
    if height < 0 or width < 0:
        raise ValueError(f"{what}: height and width must be >= 0, got {height}x{width}")
    size = height * (1 + width * channels)
    if raw.numel() != size:
        raise ValueError(
            f"corrupt PNG: the image data has {raw.numel()} bytes, a {width}x{height} image with "
            f"{channels} channels needs {size}"
        )
    if eval_ops_compiled():
        return torch.ops.d2ext.png_panoptic_ids(raw, height, width, channels)
    return png_panoptic_ids_reference(raw, height, width, channels)


# --------------------------------------------------------------------------- panoptic matching
def id_pair_counts_reference(
    gt: torch.Tensor, pred: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """numpy :func:`id_pair_counts`: panopticapi's sort-based ``np.unique``."""
    g, p = gt.numpy().astype(np.int64).ravel(), pred.numpy().astype(np.int64).ravel()
    for ids, name in ((g, "gt"), (p, "pred")):
        bad = np.flatnonzero((ids < 0) | (ids >= ID_LIMIT))
        if bad.size:
            raise ValueError(
                f"segment ids must be in [0, 2^24), got {name} {int(ids[bad[0]])} at pixel {int(bad[0])}"
            )
    keys, counts = np.unique(g * ID_LIMIT + p, return_counts=True)
    return torch.from_numpy(keys.astype(np.int64)), torch.from_numpy(counts.astype(np.int64))


def id_pair_counts(gt: torch.Tensor, pred: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The overlaps of two segment-id maps, in one pass over the pixels.

    Args:
        gt, pred (Tensor): id maps of one shape on the CPU, both int32 or both int64, ids in
            [0, 2**24) (``ValueError`` naming the first one outside).

    Returns:
        (keys, counts): int64 (M,) sorted unique ``gt * 2**24 + pred`` and their pixel counts,
        i.e. ``np.unique(gt * 2**24 + pred, return_counts=True)``.
    """
    what = "id_pair_counts"
    _check_cpu_tensor(gt, "gt", what)
    _check_cpu_tensor(pred, "pred", what)
    if gt.shape != pred.shape:
        raise ValueError(
            f"{what}: gt and pred must have one shape, got {tuple(gt.shape)} and {tuple(pred.shape)}"
        )
    if gt.dtype != pred.dtype or gt.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"{what}: gt and pred must both be int32 or both int64, got {gt.dtype} and {pred.dtype}"
        )
    if eval_ops_compiled():
        return torch.ops.d2ext.id_pair_counts(gt, pred)
    return id_pair_counts_reference(gt, pred)
