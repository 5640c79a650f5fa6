"""YOLACT's masks at prototype resolution: ``sigmoid(P @ c)`` and the box crop (pure torch,
differentiable).

The one home of both rules. The YOLACT training loss, YOLACT++'s mask re-scoring and the
reference of :func:`d2ext.layers.assemble_masks` call these functions; the compiled
``assemble_masks`` computes the same product in ``csrc/mask_ops/mask_ops.h``.

Crop rule (dbolya/yolact ``sanitize_coordinates(cast=False)`` + ``crop``): for a box
(x1, y1, x2, y2) normalised to [0, 1] and an (Hp, Wp) map, the kept columns are the integers c
with ``max(min(x1, x2) * Wp - padding, 0) <= c < min(max(x1, x2) * Wp + padding, Wp)`` (float
bounds, not rounded), rows likewise; every other pixel is zeroed.
"""

from typing import Tuple

import torch

__all__ = ["prototype_masks", "box_crop_region", "crop_masks"]


def prototype_masks(protos: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Mask probabilities ``sigmoid(sum_j coeffs[n, j] * protos[j])`` at prototype resolution.

    Args:
        protos (Tensor): (k, Hp, Wp) prototypes (already activated).
        coeffs (Tensor): (N, k) mask coefficients, same dtype.

    Returns:
        Tensor: (N, Hp, Wp), contiguous.
    """
    # the original's (Hp, Wp, k) @ (k, N) with the sigmoid on that (Hp, Wp, N) layout: the float
    # rounding of dbolya/yolact and of the compiled assemble_masks (an einsum over k sums in
    # another order for some shapes and differs by an ulp; the sigmoid's vector and scalar loops
    # differ by an ulp too, so the layout it runs on matters for bit-identical booleans)
    masks = torch.sigmoid(protos.permute(1, 2, 0).contiguous() @ coeffs.t())
    return masks.permute(2, 0, 1).contiguous()


def _crop_bounds(
    a: torch.Tensor, b: torch.Tensor, size: int, padding: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N,) box edges normalised to [0, 1] -> (N,) float [lo, hi) in pixels of a side ``size``."""
    a = a * size
    b = b * size
    lo = torch.clamp(torch.min(a, b) - padding, min=0)
    hi = torch.clamp(torch.max(a, b) + padding, max=size)
    return lo, hi


def box_crop_region(boxes: torch.Tensor, height: int, width: int, padding: int = 1) -> torch.Tensor:
    """The pixels YOLACT's crop keeps (module doc).

    Args:
        boxes (Tensor): (N, 4) x1y1x2y2 normalised to [0, 1] of the map (either corner order).
        height, width (int): the map's size (Hp, Wp).
        padding (int): pixels added on every side of each box.

    Returns:
        Tensor: (N, height, width) 0/1 in ``boxes.dtype`` (the bounds are computed in it too).
    """
    x1, x2 = _crop_bounds(boxes[:, 0], boxes[:, 2], width, padding)
    y1, y2 = _crop_bounds(boxes[:, 1], boxes[:, 3], height, padding)
    cols = torch.arange(width, device=boxes.device, dtype=boxes.dtype).view(1, 1, -1)
    rows = torch.arange(height, device=boxes.device, dtype=boxes.dtype).view(1, -1, 1)
    keep_x = (cols >= x1.view(-1, 1, 1)) & (cols < x2.view(-1, 1, 1))
    keep_y = (rows >= y1.view(-1, 1, 1)) & (rows < y2.view(-1, 1, 1))
    return (keep_x & keep_y).to(boxes.dtype)


def crop_masks(masks: torch.Tensor, boxes: torch.Tensor, padding: int = 1) -> torch.Tensor:
    """Zero ``masks`` outside YOLACT's padded box crop (module doc); gradients flow to ``masks``.

    Args:
        masks (Tensor): (N, Hp, Wp) float, e.g. :func:`prototype_masks`.
        boxes (Tensor): (N, 4) x1y1x2y2 normalised to [0, 1] of the image the prototypes cover;
            the bounds are computed in ``masks.dtype``.
        padding (int): prototype pixels added on every side.

    Returns:
        Tensor: (N, Hp, Wp).
    """
    if masks.dim() != 3 or boxes.shape != (masks.shape[0], 4):
        raise ValueError(
            f"crop_masks: expected masks (N, H, W) and boxes (N, 4); "
            f"got {tuple(masks.shape)}, {tuple(boxes.shape)}"
        )
    region = box_crop_region(boxes.to(masks.dtype), masks.shape[1], masks.shape[2], padding)
    return masks * region
