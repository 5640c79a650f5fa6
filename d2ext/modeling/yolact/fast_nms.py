"""YOLACT post-NMS selection: the paper's Fast NMS, and D2's standard NMS for comparison."""

from typing import Tuple

import torch
from detectron2.layers import batched_nms

__all__ = ["fast_nms", "standard_nms", "batched_box_iou"]


def batched_box_iou(boxes: torch.Tensor) -> torch.Tensor:
    """boxes (C, D, 4) XYXY -> (C, D, D) IoU of every pair within each of the C sets.

    Written like the original ``jaccard`` (no epsilon, no +1): all C x D x D pairs in one
    tensor op, which is what makes Fast NMS fast; D2's ``pairwise_iou`` is 2-D only.
    """
    x1, y1, x2, y2 = (c.contiguous() for c in boxes.unbind(dim=2))
    iw = (
        torch.minimum(x2[:, :, None], x2[:, None, :])
        - torch.maximum(x1[:, :, None], x1[:, None, :])
    ).clamp_(min=0)
    ih = (
        torch.minimum(y2[:, :, None], y2[:, None, :])
        - torch.maximum(y1[:, :, None], y1[:, None, :])
    ).clamp_(min=0)
    inter = iw.mul_(ih)
    area = (x2 - x1) * (y2 - y1)
    return inter / (area[:, :, None] + area[:, None, :] - inter)


def fast_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    *,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_detections: int = 100,
    score_threshold: float = 0.05,
    second_threshold: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fast NMS (Bolya et al. 2019, Sec. 3.4), exactly as the original ``Detect.fast_nms``.

    Args:
        boxes: (R, 4) XYXY candidate boxes (any consistent unit).
        scores: (C, R) foreground class scores of those candidates (softmax, background
            excluded); the caller already dropped candidates whose best score is below the
            score threshold.
        iou_threshold: a candidate is suppressed when its IoU with any higher-scored candidate
            of its class (upper triangle of the IoU matrix) exceeds this.
        top_k: candidates per class entering NMS (sorted by score).
        max_detections: detections kept over all classes (by score).
        score_threshold, second_threshold: with ``second_threshold`` the kept candidates must
            also score above ``score_threshold`` in their class (the original leaves it off).
    Returns:
        indices into R (K,), classes (K,) 0-based foreground, scores (K,); by decreasing score.
    """
    # stable sorts: tied scores keep the lower candidate first, in eager and exported graphs
    scores, idx = scores.sort(dim=1, descending=True, stable=True)
    idx = idx[:, :top_k].contiguous()
    scores = scores[:, :top_k]
    num_classes, num_dets = idx.shape
    cand = boxes[idx.view(-1)].view(num_classes, num_dets, 4)
    iou = batched_box_iou(cand).triu_(diagonal=1)
    iou_max, _ = iou.max(dim=1) if num_dets else (iou.new_zeros((num_classes, 0)), None)
    keep = iou_max <= iou_threshold
    if second_threshold:
        keep &= scores > score_threshold
    classes = torch.arange(num_classes, device=boxes.device)[:, None].expand_as(keep)[keep]
    idx, scores = idx[keep], scores[keep]
    scores, order = scores.sort(dim=0, descending=True, stable=True)
    order = order[:max_detections]
    return idx[order], classes[order], scores[:max_detections]


def standard_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    *,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_detections: int = 100,
    score_threshold: float = 0.05,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class greedy NMS with D2's ``batched_nms`` on the same candidates as :func:`fast_nms`
    (per class top-k above ``score_threshold``). Same arguments and returns."""
    num_classes, num_boxes = scores.shape
    k = min(top_k, num_boxes)
    top_scores, top_idx = scores.sort(dim=1, descending=True, stable=True)
    top_scores, top_idx = top_scores[:, :k], top_idx[:, :k]
    classes = torch.arange(num_classes, device=boxes.device)[:, None].expand_as(top_idx)
    valid = top_scores > score_threshold
    idx, classes, top_scores = top_idx[valid], classes[valid], top_scores[valid]
    cand = boxes[idx].float()
    # D2's batched_nms keeps classes apart by offsets of (max coordinate + 1), which assumes
    # coordinates >= 0; these decoded boxes are unclipped, so shift them there (IoU is unchanged)
    if len(cand):
        cand = cand - cand.min()
    keep = batched_nms(cand, top_scores.float(), classes, iou_threshold)[:max_detections]
    return idx[keep], classes[keep], top_scores[keep]
