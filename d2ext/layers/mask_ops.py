"""Mask post-processing ops: fused resize + threshold kernels with pure-torch references.

Three public ops, each computed by ``torch.ops.d2ext.*`` (``csrc/mask_ops``) when the compiled
extension is loaded and supports the tensor's device, else by its pure-torch reference. Both
paths give the same booleans (see "Parity" below):

* :func:`resize_threshold` - the primitive: bilinear resize + threshold of (N, h, w) maps in one
  of the two sampling conventions the mask paths need (``F.interpolate`` or D2's
  ``F.grid_sample`` paste).
* :func:`assemble_masks` - YOLACT's mask assembly (``sigmoid(P @ c)`` -> crop -> upsample ->
  ``> threshold``) in dbolya/yolact's exact order.
* :func:`paste_masks` - D2's :func:`paste_masks_in_image` (bool output).

Parity. The kernels replay torch's float32 arithmetic per pixel, rounding step by rounding step
(source coordinate, floor, weights, FMA-fused weighted sums as ATen's AVX2/AVX512 kernels compute
them; see ``csrc/mask_ops/mask_ops_math.h``), so on such CPUs the booleans are bit-identical to the
references even at exact threshold ties. Elsewhere (a CPU without FMA, where torch rounds twice;
torch's own CUDA kernels) values can differ by 1 ulp, which flips only pixels within 1 ulp of the
threshold: ties, in practice < 1e-6 of the pixels.

The compiled ops take float32 (CPU, and CUDA when built with it); other dtypes (e.g. float64
for checks) and devices run the reference. Output is always bool; thresholds must be >= 0.

NaN. NaN probabilities/coefficients give ``False`` pixels (NaN compares false) exactly as in the
references. Non-finite boxes are rejected with a ``ValueError`` by the Python functions (the
compiled ops, called directly, stay in bounds for them: a NaN box gives an empty mask).
"""
from typing import Sequence, Tuple, Union

import torch
from torch.nn import functional as F

from detectron2.layers.mask_ops import paste_masks_in_image
from detectron2.structures import Boxes

from ._ext import cuda_built, extension_available

__all__ = [
    "resize_threshold",
    "resize_threshold_reference",
    "assemble_masks",
    "assemble_masks_reference",
    "paste_masks",
    "paste_masks_reference",
]

_CONVENTIONS = ("interpolate", "grid_sample")


def _use_ext(*tensors: torch.Tensor) -> bool:
    """The compiled op runs iff it is loaded, all tensors are float32 and on a supported device."""
    if torch.jit.is_scripting() or not extension_available():
        return False
    if any(t.dtype != torch.float32 for t in tensors):
        return False
    device = tensors[0].device
    if device.type == "cuda":
        return cuda_built()
    return device.type == "cpu"


def _check_out_hw(out_hw: Sequence[int], what: str) -> Tuple[int, int]:
    if len(out_hw) != 2 or any(int(s) < 0 for s in out_hw):
        raise ValueError(f"{what}: out_hw must be (height, width) >= 0, got {tuple(out_hw)}")
    return int(out_hw[0]), int(out_hw[1])


def _check_threshold(threshold: float, what: str) -> float:
    threshold = float(threshold)
    if not threshold >= 0.0 or threshold == float("inf"):  # also rejects NaN
        raise ValueError(
            f"{what}: threshold must be a finite number >= 0 (probabilities are thresholded into "
            f"bool masks), got {threshold}"
        )
    return threshold


def _check_boxes(boxes: torch.Tensor, n: int, what: str) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4 or boxes.shape[0] != n:
        raise ValueError(f"{what}: boxes must have shape ({n}, 4), got {tuple(boxes.shape)}")
    if not boxes.dtype.is_floating_point:
        raise ValueError(f"{what}: boxes must be floating point, got {boxes.dtype}")
    if n and not bool(torch.isfinite(boxes).all()):
        bad = (~torch.isfinite(boxes)).any(dim=1).nonzero()[:, 0].tolist()
        raise ValueError(f"{what}: boxes must be finite; rows {bad[:10]} are not")


# --------------------------------------------------------------------------- primitive
def resize_threshold_reference(
    input: torch.Tensor, out_hw: Tuple[int, int], threshold: float = 0.5, convention: str = "interpolate"
) -> torch.Tensor:
    """Pure-torch :func:`resize_threshold`."""
    h, w = out_hw
    if convention == "interpolate":
        if input.shape[0] == 0 or h == 0 or w == 0:
            return torch.zeros((input.shape[0], h, w), dtype=torch.bool, device=input.device)
        up = F.interpolate(input[None], (h, w), mode="bilinear", align_corners=False)[0]
        return up > threshold
    n = input.shape[0]
    if n == 0 or h == 0 or w == 0:
        return torch.zeros((n, h, w), dtype=torch.bool, device=input.device)
    # the grid of D2's _do_paste_mask for the box (0, 0, w, h), same float32 formula
    gx = (torch.arange(w, dtype=torch.float32, device=input.device) + 0.5 - 0.0) / float(w) * 2 - 1
    gy = (torch.arange(h, dtype=torch.float32, device=input.device) + 0.5 - 0.0) / float(h) * 2 - 1
    grid = torch.stack([gx[None, :].expand(h, w), gy[:, None].expand(h, w)], dim=2)
    out = F.grid_sample(input[:, None], grid[None].expand(n, h, w, 2).to(input.dtype), align_corners=False)
    return out[:, 0] >= threshold


def resize_threshold(
    input: torch.Tensor, out_hw: Tuple[int, int], threshold: float = 0.5, convention: str = "interpolate"
) -> torch.Tensor:
    """Bilinear resize of N maps + threshold, written as bool without a full-size float tensor.

    Args:
        input (Tensor): (N, h, w) float maps.
        out_hw: output (H, W).
        threshold (float): >= 0.
        convention (str): how an output pixel (x, y) is sampled (align_corners=False in both):

            * ``"interpolate"``: as ``F.interpolate(input[None], (H, W), mode="bilinear")``: source
              x = max((x + 0.5) * w / W - 0.5, 0), neighbours clamped to the edge; then
              ``> threshold`` (YOLACT's ``gt_``).
            * ``"grid_sample"``: as D2's ``_do_paste_mask`` for the box (0, 0, W, H):
              ``F.grid_sample`` with zero padding (so the border fades towards 0); then
              ``>= threshold`` (D2's paste).

    Returns:
        BoolTensor (N, H, W).
    """
    what = "resize_threshold"
    if convention not in _CONVENTIONS:
        raise ValueError(f"{what}: convention must be one of {_CONVENTIONS}, got {convention!r}")
    if input.dim() != 3 or not input.dtype.is_floating_point:
        raise ValueError(f"{what}: input must be a float (N, h, w) tensor, got {input.dtype} {tuple(input.shape)}")
    h, w = _check_out_hw(out_hw, what)
    threshold = _check_threshold(threshold, what)
    if input.shape[0] and (input.shape[1] == 0 or input.shape[2] == 0):
        raise ValueError(f"{what}: input maps are empty: {tuple(input.shape)}")
    if _use_ext(input):
        return torch.ops.d2ext.resize_threshold(input, h, w, threshold, convention == "grid_sample")
    return resize_threshold_reference(input, (h, w), threshold, convention)


# --------------------------------------------------------------------------- YOLACT
def _yolact_crop_bounds(x1: torch.Tensor, x2: torch.Tensor, size: int, padding: int):
    """dbolya/yolact ``sanitize_coordinates(..., cast=False)``: float bounds in proto pixels."""
    x1 = x1 * size
    x2 = x2 * size
    lo = torch.clamp(torch.min(x1, x2) - padding, min=0)
    hi = torch.clamp(torch.max(x1, x2) + padding, max=size)
    return lo, hi


def assemble_masks_reference(
    protos: torch.Tensor,
    coeffs: torch.Tensor,
    boxes: torch.Tensor,
    out_hw: Tuple[int, int],
    threshold: float = 0.5,
    crop_padding: int = 1,
) -> torch.Tensor:
    """The torch chain of dbolya/yolact ``postprocess`` (see :func:`assemble_masks`)."""
    n = coeffs.shape[0]
    k, hp, wp = protos.shape
    h, w = out_hw
    if n == 0 or h == 0 or w == 0:
        return torch.zeros((n, h, w), dtype=torch.bool, device=protos.device)
    # original: proto_data (Hp, Wp, k) @ coeffs.t() -> sigmoid -> crop -> permute(2, 0, 1)
    masks = torch.sigmoid(protos.permute(1, 2, 0).contiguous() @ coeffs.t())
    x1, x2 = _yolact_crop_bounds(boxes[:, 0], boxes[:, 2], wp, crop_padding)
    y1, y2 = _yolact_crop_bounds(boxes[:, 1], boxes[:, 3], hp, crop_padding)
    cols = torch.arange(wp, device=masks.device, dtype=x1.dtype).view(1, -1, 1)
    rows = torch.arange(hp, device=masks.device, dtype=x1.dtype).view(-1, 1, 1)
    keep = (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)
    masks = (masks * keep.to(masks.dtype)).permute(2, 0, 1).contiguous()
    masks = F.interpolate(masks[None], (h, w), mode="bilinear", align_corners=False)[0]
    return masks > threshold


def assemble_masks(
    protos: torch.Tensor,
    coeffs: torch.Tensor,
    boxes: torch.Tensor,
    out_hw: Tuple[int, int],
    threshold: float = 0.5,
    crop_padding: int = 1,
) -> torch.Tensor:
    """YOLACT mask assembly, fused: no full-size float tensor is ever made.

    Same booleans as dbolya/yolact ``postprocess``: ``m = sigmoid(P @ c^T)`` at prototype
    resolution; ``crop(m, boxes, padding)`` zeroes proto pixel (col, row) unless
    ``x1 <= col < x2`` and ``y1 <= row < y2`` with ``x1 = max(min(bx1, bx2) * Wp - padding, 0)``,
    ``x2 = min(max(bx1, bx2) * Wp + padding, Wp)`` (float, not rounded: ``cast=False``), same for
    y; bilinear resize of the proto-resolution map to ``out_hw`` (``F.interpolate``,
    align_corners=False); ``> threshold``. The compiled op does the small matmul and sigmoid in
    ATen and then one kernel per output pixel (only inside the crop's footprint) writes the bool.

    Args:
        protos (Tensor): (k, Hp, Wp) float prototypes (CHW, already activated).
        coeffs (Tensor): (N, k) float mask coefficients.
        boxes (Tensor): (N, 4) x1y1x2y2 normalised to [0, 1] of the output image (YOLACT's
            convention; the output image and the proto map cover the same extent).
        out_hw: output (H, W).
        threshold (float): >= 0; a pixel is True iff its upsampled probability is > threshold.
        crop_padding (int): proto pixels added around each box before cropping (original: 1).

    Returns:
        BoolTensor (N, H, W).
    """
    what = "assemble_masks"
    if protos.dim() != 3 or not protos.dtype.is_floating_point:
        raise ValueError(f"{what}: protos must be a float (k, Hp, Wp) tensor, got {protos.dtype} {tuple(protos.shape)}")
    if protos.shape[1] == 0 or protos.shape[2] == 0:
        raise ValueError(f"{what}: protos have an empty spatial size {tuple(protos.shape)}")
    if coeffs.dim() != 2 or coeffs.shape[1] != protos.shape[0]:
        raise ValueError(
            f"{what}: coeffs must have shape (N, k={protos.shape[0]}) to match protos "
            f"{tuple(protos.shape)}, got {tuple(coeffs.shape)}"
        )
    if coeffs.dtype != protos.dtype:
        raise ValueError(f"{what}: coeffs dtype {coeffs.dtype} differs from protos dtype {protos.dtype}")
    _check_boxes(boxes, coeffs.shape[0], what)
    if coeffs.device != protos.device or boxes.device != protos.device:
        raise ValueError(f"{what}: protos, coeffs and boxes must be on one device")
    h, w = _check_out_hw(out_hw, what)
    threshold = _check_threshold(threshold, what)
    if int(crop_padding) < 0:
        raise ValueError(f"{what}: crop_padding must be >= 0, got {crop_padding}")
    if _use_ext(protos, coeffs, boxes):
        return torch.ops.d2ext.assemble_masks(protos, coeffs, boxes, h, w, threshold, int(crop_padding))
    return assemble_masks_reference(protos, coeffs, boxes, (h, w), threshold, int(crop_padding))


# --------------------------------------------------------------------------- D2 paste
def _paste_region_nonempty(boxes: torch.Tensor, img_h: int, img_w: int) -> torch.Tensor:
    """(R,) bool: D2's CPU paste region [floor(x0) - 1, ceil(x1) + 1) x ... is non-empty.

    D2's ``_do_paste_mask`` fails (``torch.arange`` with end < start) for boxes more than a pixel
    outside the image or inverted; for those the paste is empty by definition here.
    """
    x0 = torch.clamp(boxes[:, 0].floor() - 1, min=0)
    y0 = torch.clamp(boxes[:, 1].floor() - 1, min=0)
    x1 = torch.clamp(boxes[:, 2].ceil() + 1, max=img_w)
    y1 = torch.clamp(boxes[:, 3].ceil() + 1, max=img_h)
    return (x1 > x0) & (y1 > y0)


def paste_masks_reference(
    masks: torch.Tensor, boxes: torch.Tensor, out_hw: Tuple[int, int], threshold: float = 0.5
) -> torch.Tensor:
    """D2's :func:`paste_masks_in_image` on the boxes whose paste region is non-empty."""
    n = masks.shape[0]
    h, w = out_hw
    out = torch.zeros((n, h, w), dtype=torch.bool, device=masks.device)
    if n == 0 or h == 0 or w == 0:
        return out
    ok = _paste_region_nonempty(boxes, h, w)
    if bool(ok.all()):
        return paste_masks_in_image(masks, boxes, (h, w), threshold)
    if bool(ok.any()):
        out[ok] = paste_masks_in_image(masks[ok], boxes[ok], (h, w), threshold)
    return out


def paste_masks(
    masks: torch.Tensor,
    boxes: Union[torch.Tensor, Boxes],
    out_hw: Tuple[int, int],
    threshold: float = 0.5,
) -> torch.Tensor:
    """D2's :func:`paste_masks_in_image`, fused: bool output, work only inside each box.

    Output pixel (x, y) of mask i samples ``masks[i]`` at the ``F.grid_sample`` location
    (align_corners=False, zero padding) of grid coordinate ``((x + 0.5 - x0) / (x1 - x0)) * 2 - 1``
    (likewise y), exactly D2's float32 formula, and is True iff the value is ``>= threshold``.
    As in D2 on CPU, only the box's integer-expanded region ``[floor(x0) - 1, ceil(x1) + 1)`` x
    ``[floor(y0) - 1, ceil(y1) + 1)`` (clipped to the image) is computed; the rest is False. (D2
    on GPU samples the whole image; the two agree for threshold >= 0.5 and masks in [0, 1],
    because the zero padding keeps every value outside that region below 0.5.) Boxes whose
    region is empty (outside the image, inverted) give empty masks; zero-width boxes give NaN
    grid values, hence False pixels, as in D2.

    Args:
        masks (Tensor): (R, M, M) float probabilities (D2's mask head output without channel).
        boxes (Tensor or Boxes): (R, 4) XYXY in absolute output-image pixels.
        out_hw: output (H, W).
        threshold (float): >= 0.

    Returns:
        BoolTensor (R, H, W).
    """
    what = "paste_masks"
    if isinstance(boxes, Boxes):
        boxes = boxes.tensor
    if masks.dim() != 3 or not masks.dtype.is_floating_point:
        raise ValueError(f"{what}: masks must be a float (R, M, M) tensor, got {masks.dtype} {tuple(masks.shape)}")
    if masks.shape[1] != masks.shape[2] or (masks.shape[0] and masks.shape[1] == 0):
        raise ValueError(f"{what}: masks must be square and non-empty (R, M, M), got {tuple(masks.shape)}")
    _check_boxes(boxes, masks.shape[0], what)
    if boxes.device != masks.device:
        raise ValueError(f"{what}: masks ({masks.device}) and boxes ({boxes.device}) must be on one device")
    h, w = _check_out_hw(out_hw, what)
    threshold = _check_threshold(threshold, what)
    if _use_ext(masks, boxes):
        return torch.ops.d2ext.paste_masks(masks, boxes, h, w, threshold)
    return paste_masks_reference(masks, boxes, (h, w), threshold)
