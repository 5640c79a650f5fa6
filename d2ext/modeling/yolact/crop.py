"""The YOLACT box crop of prototype-space masks, differentiable (used by the mask loss).

Convention shared with :func:`d2ext.layers.assemble_masks` (the inference path): for a box
(x1, y1, x2, y2) normalised to [0, 1] and a (Hp, Wp) map, the kept columns are the integers c
with ``max(min(x1, x2) * Wp - padding, 0) <= c < min(max(x1, x2) * Wp + padding, Wp)`` (rows
likewise) -- the original's ``sanitize_coordinates(cast=False)`` + ``crop``.
"""
import torch

__all__ = ["crop_masks", "box_crop_region"]


def box_crop_region(boxes: torch.Tensor, height: int, width: int, padding: int = 1) -> torch.Tensor:
    """boxes: (N, 4) x1y1x2y2 normalised -> (N, height, width) float 0/1 region kept by the crop."""
    x1 = torch.clamp(torch.minimum(boxes[:, 0], boxes[:, 2]) * width - padding, min=0)
    x2 = torch.clamp(torch.maximum(boxes[:, 0], boxes[:, 2]) * width + padding, max=width)
    y1 = torch.clamp(torch.minimum(boxes[:, 1], boxes[:, 3]) * height - padding, min=0)
    y2 = torch.clamp(torch.maximum(boxes[:, 1], boxes[:, 3]) * height + padding, max=height)
    cols = torch.arange(width, device=boxes.device, dtype=boxes.dtype).view(1, 1, -1)
    rows = torch.arange(height, device=boxes.device, dtype=boxes.dtype).view(1, -1, 1)
    keep_x = (cols >= x1.view(-1, 1, 1)) & (cols < x2.view(-1, 1, 1))
    keep_y = (rows >= y1.view(-1, 1, 1)) & (rows < y2.view(-1, 1, 1))
    return (keep_x & keep_y).to(boxes.dtype)


def crop_masks(masks: torch.Tensor, boxes: torch.Tensor, padding: int = 1) -> torch.Tensor:
    """
    Args:
        masks: (N, Hp, Wp) float, e.g. sigmoid(prototypes . coefficients).
        boxes: (N, 4) x1y1x2y2 normalised to [0, 1] of the image the prototypes cover.
        padding: prototype pixels added on every side.
    Returns:
        (N, Hp, Wp) masks zeroed outside the padded box; gradients flow to ``masks``.
    """
    if masks.dim() != 3 or boxes.shape != (masks.shape[0], 4):
        raise ValueError(f"crop_masks: expected masks (N,H,W) and boxes (N,4); got {tuple(masks.shape)}, {tuple(boxes.shape)}")
    return masks * box_crop_region(boxes.to(masks.dtype), masks.shape[1], masks.shape[2], padding)
