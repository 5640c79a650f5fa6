"""Model-like predictions made from ground truth, for evaluator parity tests and benchmarks.

They exercise every rule of COCO AP and PQ: near and far (shifted) copies of the gt, dropped
objects, duplicates, wrong classes and false positives for instances; dropped, shifted, merged,
split and relabelled segments, void areas and new segments for panoptic.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from detectron2.structures import Boxes, Instances

__all__ = ["instance_predictions_from_gt", "perturb_panoptic"]


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` (H, W) moved by (dy, dx) pixels; what leaves the image is lost."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = mask[ys, xs]
    return out


def _random_blob(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random axis-aligned rectangle or ellipse mask, (H, W) bool."""
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(2, max(3.0, h / 4)), rng.uniform(2, max(3.0, w / 4))
    yy, xx = np.ogrid[:h, :w]
    if rng.random() < 0.5:
        return (np.abs(yy - cy) < ry) & (np.abs(xx - cx) < rx)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1


def instance_predictions_from_gt(
    coco_api,
    image_id: int,
    dataset_id_to_contiguous_id: Dict[int, int],
    rng: np.random.Generator,
    *,
    jitter: float = 3.0,
    drop_prob: float = 0.1,
    duplicate_prob: float = 0.1,
    wrong_class_prob: float = 0.05,
    max_false_positives: int = 4,
) -> Tuple[dict, dict]:
    """One image's (model input, model output) made from its COCO ground truth.

    Args:
        coco_api: pycocotools ``COCO`` of the ground truth.
        image_id: the image.
        dataset_id_to_contiguous_id: the dataset's ``thing_dataset_id_to_contiguous_id``.
        rng: randomness.
        jitter: std (pixels) of the random shift of each gt mask.

    Returns:
        ``({"image_id", "height", "width", "file_name"}, {"instances": Instances})`` with
        ``pred_boxes`` (N, 4) XYXY absolute, ``scores`` (N,), ``pred_classes`` (N,) contiguous
        ids and ``pred_masks`` (N, H, W) bool, as a D2 instance-segmentation model returns.
    """
    img = coco_api.imgs[image_id]
    h, w = int(img["height"]), int(img["width"])
    num_classes = len(dataset_id_to_contiguous_id)
    masks, classes = [], []
    for ann in coco_api.imgToAnns[image_id]:
        if ann.get("iscrowd", 0) or rng.random() < drop_prob:
            continue
        gt_mask = coco_api.annToMask(ann).astype(bool)
        cls = dataset_id_to_contiguous_id[ann["category_id"]]
        for _ in range(2 if rng.random() < duplicate_prob else 1):
            dy, dx = np.round(rng.normal(0, jitter, size=2)).astype(int)
            masks.append(_shift(gt_mask, int(dy), int(dx)))
            classes.append(
                int(rng.integers(num_classes)) if rng.random() < wrong_class_prob else cls
            )
    for _ in range(int(rng.integers(0, max_false_positives + 1))):
        masks.append(_random_blob(rng, h, w))
        classes.append(int(rng.integers(num_classes)))

    n = len(masks)
    mask_t = torch.from_numpy(np.stack(masks)) if n else torch.zeros((0, h, w), dtype=torch.bool)
    boxes = torch.zeros((n, 4))
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if ys.size:
            boxes[i] = torch.tensor(
                [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32
            )
    boxes += torch.from_numpy(rng.normal(0, 1.0, size=(n, 4))).float()
    inst = Instances((h, w))
    inst.pred_boxes = Boxes(boxes)
    inst.scores = torch.from_numpy(rng.uniform(0.05, 1.0, size=n)).float()
    inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
    inst.pred_masks = mask_t
    inputs = {
        "image_id": image_id,
        "height": h,
        "width": w,
        "file_name": img.get("file_name", f"{image_id}.jpg"),
    }
    return inputs, {"instances": inst}


def perturb_panoptic(
    gt_id_map: np.ndarray,
    gt_segments: Sequence[dict],
    category_ids: Sequence[int],
    rng: np.random.Generator,
    *,
    op_prob: float = 0.12,
    max_shift: int = 6,
    num_void_boxes: int = 1,
    max_new_segments: int = 2,
) -> Tuple[np.ndarray, List[dict]]:
    """A panoptic prediction made from ground truth by random edits.

    Each gt segment (crowd ones too, as models predict them as plain segments) is independently
    dropped to VOID, shifted, split in two, relabelled or merged into another segment of its
    category with probability ``op_prob`` each; then VOID boxes and new segments are painted,
    and all ids are replaced by random 24-bit ids.

    Args:
        gt_id_map: (H, W) integer gt segment ids, 0 = VOID.
        gt_segments: gt ``segments_info`` ("id", "category_id").
        category_ids: the categories to draw relabels and new segments from.

    Returns:
        pred_id_map (H, W) int64 and its ``segments_info`` ("id", "category_id"), each listed
        segment present in the map.
    """
    h, w = gt_id_map.shape
    known = {int(s["id"]): int(s["category_id"]) for s in gt_segments}
    pred = np.where(np.isin(gt_id_map, list(known)), gt_id_map, 0).astype(np.int64)
    cats = dict(known)
    next_id = max(known, default=0) + 1
    for sid, cat in known.items():
        op = rng.random() / op_prob
        region = pred == sid
        if op < 1:  # drop
            pred[region] = 0
        elif op < 2:  # shift
            dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
            pred[region] = 0
            pred[_shift(region, int(dy), int(dx))] = sid
        elif op < 3:  # split at a random column
            cols = np.nonzero(region.any(0))[0]
            if cols.size > 1:
                cut = int(rng.choice(cols[1:]))
                part = region.copy()
                part[:, :cut] = False
                pred[part] = next_id
                cats[next_id] = cat
                next_id += 1
        elif op < 4:  # relabel
            cats[sid] = int(rng.choice(category_ids))
        elif op < 5:  # merge into another segment of the category
            same = [o for o, c in known.items() if c == cat and o != sid]
            if same:
                pred[region] = int(rng.choice(same))
    for _ in range(num_void_boxes):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        pred[
            y0 : y0 + int(rng.integers(1, h // 3 + 2)), x0 : x0 + int(rng.integers(1, w // 3 + 2))
        ] = 0
    for _ in range(int(rng.integers(0, max_new_segments + 1))):
        pred[_random_blob(rng, h, w)] = next_id
        cats[next_id] = int(rng.choice(category_ids))
        next_id += 1

    present = np.unique(pred)
    present = present[present != 0]
    new_ids = rng.choice((1 << 24) - 1, size=present.size, replace=False) + 1
    lut = np.zeros(int(present.max(initial=0)) + 1, dtype=np.int64)
    lut[present] = new_ids
    segments = [{"id": int(n), "category_id": cats[int(o)]} for o, n in zip(present, new_ids)]
    return lut[pred], segments
