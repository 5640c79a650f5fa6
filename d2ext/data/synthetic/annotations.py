"""Ground-truth encoders: visible masks to COCO instance annotations (polygons or RLE) and
to COCO panoptic segments / D2 "separated" semantic labels."""

from typing import Dict, List

import cv2
import numpy as np
import pycocotools.mask as mask_util


def mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """COCO polygons (flat xy lists) of a hole-free (H, W) bool mask, one per connected part.

    The contour is traced on the 2x nearest-upsampled mask, so its vertices lie a quarter pixel
    inside the pixel boundary; pycocotools then rasterizes the polygons back to exactly
    ``mask`` (pixel ``(y, x)`` covers ``[x, x+1) x [y, y+1)``). Holes are not representable.
    """
    up = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for c in contours:
        if len(c) >= 3:
            polygons.append(((c.reshape(-1).astype(np.float64) + 0.5) / 2.0).tolist())
    return polygons


def mask_to_rle(mask: np.ndarray) -> Dict:
    """Compressed COCO RLE of an (H, W) bool mask, with ``counts`` as a json-able str."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def mask_bbox(mask: np.ndarray) -> List[int]:
    """[x, y, w, h] (XYWH_ABS, integer pixels) tight box of a non-empty (H, W) bool mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def coco_instance_annotation(mask: np.ndarray, *, category_id: int, iscrowd: int) -> Dict:
    """COCO instance annotation (without ids) of a visible mask: polygons for non-crowd
    objects, RLE for crowd; ``area`` and ``bbox`` are those of ``mask``."""
    segmentation = mask_to_rle(mask) if iscrowd else mask_to_polygons(mask)
    return {
        "category_id": int(category_id),
        "iscrowd": int(iscrowd),
        "segmentation": segmentation,
        "area": int(mask.sum()),
        "bbox": mask_bbox(mask),
    }


def panoptic_to_semantic(
    panoptic_ids: np.ndarray, segments_info: List[Dict], category_id_map: Dict[int, int]
) -> np.ndarray:
    """(H, W) uint8 semantic labels from (H, W) panoptic segment ids, as D2's
    ``datasets/prepare_panoptic_fpn.py`` does: each segment gets
    ``category_id_map[category_id]`` (all things -> 0, stuff -> 1..S); unlabeled pixels 255."""
    out = np.full(panoptic_ids.shape, 255, np.uint8)
    for seg in segments_info:
        out[panoptic_ids == seg["id"]] = category_id_map[seg["category_id"]]
    return out
