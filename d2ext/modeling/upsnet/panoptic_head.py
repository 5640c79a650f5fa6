"""UPSNet's parameter-free panoptic head (Sec. 3.3 of the paper).

For an image with semantic logits ``sem`` (S stuff then T thing channels) and K instances
(boxes, classes c_i, mask-head logits), the panoptic logits are ``[stuff, things, unknown]``:

* stuff: ``sem[:S]``;
* thing i: ``Y_i + X_i`` where ``Y_i = sem[S + c_i]`` inside box i and 0 outside, and ``X_i`` is
  the instance's mask logit map resized and pasted into box i (0 outside);
* unknown: ``max(sem[S:], over channels) - max_i Y_i`` (``max_i Y_i`` is 0 for K = 0, the value
  every Y_i takes outside its box).

A pixel belongs to a box if the box overlaps it: pixel (y, x) covers [x, x+1) x [y, y+1).
"""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import nms
from detectron2.structures import Boxes

from d2ext.data.panoptic_label_space import PanopticLabelSpace
from d2ext.layers.mask_ops import paste_mask_values

__all__ = [
    "UPSNetPanopticHead",
    "box_regions",
    "panoptic_logits",
    "panoptic_targets",
    "remove_overlapping_masks",
    "select_panoptic_detections",
]


def box_regions(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(K, height, width) bool: the pixels each XYXY box (K, 4) overlaps."""
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype)
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype)
    x0, y0, x1, y1 = (v[:, None] for v in boxes.unbind(1))
    in_x = (xs[None] + 1 > x0) & (xs[None] < x1)  # (K, W)
    in_y = (ys[None] + 1 > y0) & (ys[None] < y1)  # (K, H)
    return in_y[:, :, None] & in_x[:, None, :]


def panoptic_logits(
    sem_logits: torch.Tensor,
    boxes: torch.Tensor,
    classes: torch.Tensor,
    mask_logits: torch.Tensor,
    num_stuff: int,
    unknown: bool = True,
) -> torch.Tensor:
    """Panoptic logits of one image.

    Args:
        sem_logits: (S+T, H, W) semantic logits.
        boxes: (K, 4) XYXY in the pixel coordinates of ``sem_logits``.
        classes: (K,) thing class indices in [0, T).
        mask_logits: (K, M, M) mask-head logits of each instance's class.
        num_stuff: S.
        unknown: append the unknown channel.
    Returns:
        (S + K [+ 1], H, W): stuff, one channel per instance, [unknown].
    """
    h, w = sem_logits.shape[-2:]
    stuff = sem_logits[:num_stuff]
    things = sem_logits[num_stuff:]
    if len(boxes):
        inside = box_regions(boxes, h, w).to(sem_logits.dtype)
        y = things[classes] * inside
        x = paste_mask_values(mask_logits, boxes, (h, w))
        instances = y + x.to(sem_logits.dtype) * inside
        max_y = y.max(dim=0).values
    else:
        instances = sem_logits.new_zeros((0, h, w))
        max_y = sem_logits.new_zeros((h, w))
    parts = [stuff, instances]
    if unknown:
        parts.append((things.max(dim=0).values - max_y)[None])
    return torch.cat(parts, dim=0)


def panoptic_targets(
    sem_target: torch.Tensor,
    kept_masks: torch.Tensor,
    num_stuff: int,
    unknown: bool = True,
    ignore_value: int = 255,
) -> torch.Tensor:
    """Targets of :func:`panoptic_logits` (UPSNet's mask matching).

    Args:
        sem_target: (H, W) long labels in UPSNet's space (stuff < S <= things, ignore_value).
        kept_masks: (K, H, W) bool masks of the instances given to the panoptic head, in order.
    Returns:
        (H, W) long: stuff and ignored pixels keep their label; pixels of instance k get S + k
        (later instances win overlaps); the remaining thing pixels (dropped instances, crowd
        regions) get the unknown class S + K, or ignore_value when ``unknown`` is False.
    """
    out = torch.where(
        (sem_target < num_stuff) | (sem_target == ignore_value),
        sem_target,
        torch.full_like(sem_target, -1),
    )
    for k in range(kept_masks.shape[0]):
        out[kept_masks[k]] = num_stuff + k
    out[out == -1] = num_stuff + kept_masks.shape[0] if unknown else ignore_value
    return out


def select_panoptic_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_size: Tuple[int, int],
    score_thresh: float,
    nms_thresh: float,
    topk: int,
) -> Tuple[Boxes, torch.Tensor, torch.Tensor]:
    """UPSNet's detections for the panoptic head: every (proposal, class) pair with score >=
    ``score_thresh`` and a class-agnostic NMS over them.

    Args:
        boxes: (R, T*4) class-specific or (R, 4) agnostic boxes (``predict_boxes``).
        scores: (R, T+1) probabilities from ``predict_probs`` (background last, as in D2).
    Returns:
        boxes (Boxes, clipped), scores (D,), classes (D,), by decreasing score, D <= topk.
    """
    num_classes = scores.shape[1] - 1
    boxes = Boxes(boxes.reshape(-1, 4))
    boxes.clip(image_size)
    # (R, T, 4): class-specific boxes, or the agnostic box repeated (R may be 0: no proposals)
    boxes = boxes.tensor.view(scores.shape[0], -1 if scores.shape[0] else 1, 4)
    boxes = boxes.expand(-1, num_classes, -1)
    cand = (scores[:, :-1] >= score_thresh).nonzero()
    r, c = cand.unbind(1)
    sel_boxes, sel_scores = boxes[r, c], scores[r, c]
    keep = nms(sel_boxes, sel_scores, nms_thresh)  # sorted by decreasing score
    if topk >= 0:
        keep = keep[:topk]
    return Boxes(sel_boxes[keep]), sel_scores[keep], c[keep]


def remove_overlapping_masks(
    masks: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, overlap_thresh: float
) -> torch.Tensor:
    """UPSNet's mask removal: visit instances by decreasing score and drop those with an empty
    mask or whose mask lies more than ``overlap_thresh`` inside kept masks of the same class.

    Args:
        masks: (K, H, W) bool.
    Returns:
        indices of the kept instances, by decreasing score.
    """
    occupied: Dict[int, torch.Tensor] = {}
    keep = []
    for i in torch.argsort(scores, descending=True).tolist():
        area = masks[i].sum()
        if area == 0:
            continue
        c = int(classes[i])
        if c in occupied and (masks[i] & occupied[c]).sum() > overlap_thresh * area:
            continue
        keep.append(i)
        occupied[c] = masks[i] | occupied[c] if c in occupied else masks[i].clone()
    return torch.as_tensor(keep, dtype=torch.long, device=masks.device)


class UPSNetPanopticHead(torch.nn.Module):
    """Loss and inference of the panoptic head; it has no parameters."""

    @configurable
    def __init__(
        self,
        *,
        label_space: PanopticLabelSpace,
        unknown_class: bool = True,
        box_keep_fraction: float = 0.7,
        loss_weight: float = 0.1,
        score_thresh: float = 0.6,
        nms_thresh: float = 0.5,
        overlap_thresh: float = 0.3,
        stuff_override_fraction: float = 0.5,
        stuff_area_limit: int = 4096,
        detections_per_image: int = 100,
        ignore_value: int = 255,
    ):
        """Arguments are the keys of ``MODEL.UPSNET.PANOPTIC`` (see d2ext/config/upsnet.py);
        ``label_space`` gives the output category ids of the internal classes."""
        super().__init__()
        if not 0.0 < box_keep_fraction <= 1.0:
            raise ValueError(f"BOX_KEEP_FRACTION must be in (0, 1], got {box_keep_fraction}")
        self.label_space = label_space
        self.num_stuff = label_space.num_stuff
        self.unknown_class = unknown_class
        self.box_keep_fraction = box_keep_fraction
        self.loss_weight = loss_weight
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.overlap_thresh = overlap_thresh
        self.stuff_override_fraction = stuff_override_fraction
        self.stuff_area_limit = stuff_area_limit
        self.detections_per_image = detections_per_image
        self.ignore_value = ignore_value

    @classmethod
    def from_config(cls, cfg, label_space: Optional[PanopticLabelSpace] = None):
        p = cfg.MODEL.UPSNET.PANOPTIC
        return {
            "label_space": label_space or PanopticLabelSpace.from_config(cfg),
            "unknown_class": p.UNKNOWN_CLASS,
            "box_keep_fraction": p.BOX_KEEP_FRACTION,
            "loss_weight": cfg.MODEL.UPSNET.PANOPTIC_LOSS_WEIGHT,
            "score_thresh": p.SCORE_THRESH,
            "nms_thresh": p.NMS_THRESH,
            "overlap_thresh": p.OVERLAP_THRESH,
            "stuff_override_fraction": p.STUFF_OVERRIDE_FRACTION,
            "stuff_area_limit": p.STUFF_AREA_LIMIT,
            "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "ignore_value": cfg.MODEL.UPSNET.IGNORE_VALUE,
        }

    def sample_instances(self, num_instances: int, device=None) -> torch.Tensor:
        """Training: random indices of the GT instances kept (a fraction, at least one)."""
        if num_instances == 0 or self.box_keep_fraction >= 1.0:
            return torch.arange(num_instances, device=device)
        n = max(int(num_instances * self.box_keep_fraction), 1)
        return torch.randperm(num_instances, device=device)[:n]

    def losses(
        self,
        sem_logits: torch.Tensor,
        sem_targets: torch.Tensor,
        boxes: List[torch.Tensor],
        classes: List[torch.Tensor],
        mask_logits: List[torch.Tensor],
        kept_masks: List[torch.Tensor],
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            sem_logits: (N, S+T, h, w) semantic logits (P2 grid).
            sem_targets: (N, h, w) semantic labels on the same grid.
            boxes: per image (K_i, 4) kept GT boxes, XYXY in the pixels of the h x w grid.
            classes: per image (K_i,) their thing classes.
            mask_logits: per image (K_i, M, M) mask-head logits of those boxes and classes.
            kept_masks: per image (K_i, h, w) bool GT masks of the same instances.
        """
        total, valid = sem_logits.sum() * 0.0, 0
        for i in range(sem_logits.shape[0]):
            logits = panoptic_logits(
                sem_logits[i],
                boxes[i],
                classes[i],
                mask_logits[i],
                self.num_stuff,
                self.unknown_class,
            )
            target = panoptic_targets(
                sem_targets[i],
                kept_masks[i],
                self.num_stuff,
                self.unknown_class,
                self.ignore_value,
            )
            total = total + F.cross_entropy(
                logits[None], target[None], ignore_index=self.ignore_value, reduction="sum"
            )
            valid += int((target != self.ignore_value).sum())
        return {"loss_panoptic": self.loss_weight * total / max(valid, 1)}

    def inference(
        self,
        sem_logits: torch.Tensor,
        boxes: torch.Tensor,
        scores: torch.Tensor,
        classes: torch.Tensor,
        mask_logits: torch.Tensor,
    ) -> Tuple[torch.Tensor, List[Dict]]:
        """Panoptic segmentation of one image, in D2's ``panoptic_seg`` format.

        Args:
            sem_logits: (S+T, H, W) semantic logits at output resolution.
            boxes: (K, 4) XYXY output-image pixels of the selected detections (see
                :func:`select_panoptic_detections`); scores, classes: (K,).
            mask_logits: (K, M, M) mask-head logits of their classes.
        Returns:
            (H, W) int32 segment ids (0 = void) and the segments_info list of dicts
            ``{id, isthing, category_id (metadata contiguous id), area[, score, instance_id]}``.
        """
        h, w = sem_logits.shape[-2:]
        if len(boxes):
            pasted = paste_mask_values(mask_logits, boxes, (h, w))
            masks = (pasted > 0) & box_regions(boxes, h, w)
            keep = remove_overlapping_masks(masks, scores, classes, self.overlap_thresh)
            boxes, scores, classes, mask_logits = (
                boxes[keep],
                scores[keep],
                classes[keep],
                mask_logits[keep],
            )
        logits = panoptic_logits(
            sem_logits, boxes, classes, mask_logits, self.num_stuff, self.unknown_class
        )
        pred = logits.argmax(dim=0)
        sem_pred = sem_logits.argmax(dim=0)
        num_sem = sem_logits.shape[0]
        panoptic = torch.zeros((h, w), dtype=torch.int32, device=sem_logits.device)
        segments: List[Dict] = []
        for k in range(len(boxes)):
            region = pred == self.num_stuff + k
            area = int(region.sum())
            if area == 0:
                continue
            cls = int(classes[k])
            if self.stuff_override_fraction > 0:
                counts = torch.bincount(sem_pred[region], minlength=num_sem)
                major = int(counts.argmax())
                if (
                    major != self.num_stuff + cls
                    and major < self.num_stuff
                    and counts[major] >= self.stuff_override_fraction * area
                ):
                    pred[region] = major  # the semantic head calls it stuff: it becomes stuff
                    continue
            panoptic[region] = len(segments) + 1
            segments.append(
                {
                    "id": len(segments) + 1,
                    "isthing": True,
                    "category_id": int(self.label_space.thing_ids[cls]),
                    "score": float(scores[k]),
                    "instance_id": k,
                    "area": area,
                }
            )
        for s in range(self.num_stuff):
            region = pred == s
            area = int(region.sum())
            if area == 0 or area < self.stuff_area_limit:
                continue  # small stuff -> void
            panoptic[region] = len(segments) + 1
            segments.append(
                {
                    "id": len(segments) + 1,
                    "isthing": False,
                    "category_id": int(self.label_space.stuff_ids[s]),
                    "area": area,
                }
            )
        return panoptic, segments  # unknown (and anything else unassigned) stays void (0)
