"""Mask post-processing ops: fused resize + threshold kernels with pure-torch references.

Three public ops, each computed by ``torch.ops.d2ext.*`` (``csrc/mask_ops``) when the compiled
extension is loaded and supports the tensor's device, else by its pure-torch reference. Both
paths give the same booleans (see "Parity" below):

* :func:`resize_threshold` - the primitive: bilinear resize + threshold of (N, h, w) maps in one
  of the two sampling conventions the mask paths need (``F.interpolate`` or D2's
  ``F.grid_sample`` paste).
* :func:`assemble_masks` - YOLACT's mask assembly (``sigmoid(P @ c)`` -> crop -> upsample ->
  ``> threshold``) in dbolya/yolact's exact order; the product and the crop rule live in
  :mod:`d2ext.layers.prototype_masks`.
* :func:`paste_masks` - a drop-in for D2's :func:`paste_masks_in_image` (bool output; scriptable
  and traceable like D2's).

And :func:`paste_mask_values`, D2's paste before its threshold (float values on the whole image),
for heads that combine pasted logits (UPSNet) and for tests.

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

from typing import List, Tuple

import torch
from detectron2.layers.mask_ops import _do_paste_mask, paste_masks_in_image
from torch.nn import functional as F

from ._ext import cuda_built, extension_available
from .prototype_masks import box_crop_region, prototype_masks

__all__ = [
    "resize_threshold",
    "resize_threshold_reference",
    "assemble_masks",
    "assemble_masks_reference",
    "paste_masks",
    "paste_masks_reference",
    "paste_mask_values",
]

_CONVENTIONS = ("interpolate", "grid_sample")


def _use_ext(*tensors: torch.Tensor) -> bool:
    """The compiled op runs iff it is loaded, all tensors are float32 and on a supported device,
    and the call is not being scripted, traced or exported to ONNX: an exported graph holds the
    pure-torch reference (same results), so it runs without d2ext's extension."""
    if torch.jit.is_scripting() or not extension_available():
        return False
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    if any(t.dtype != torch.float32 for t in tensors):
        return False
    device = tensors[0].device
    if device.type == "cuda":
        return cuda_built()
    return device.type == "cpu"


# The checks are TorchScript-compatible because paste_masks is (D2's paste is scriptable).
def _check_out_hw(out_hw: Tuple[int, int], what: str) -> Tuple[int, int]:
    if len(out_hw) != 2:
        raise ValueError(f"{what}: out_hw must be (height, width), got {out_hw}")
    h = int(out_hw[0])
    w = int(out_hw[1])
    if h < 0 or w < 0:
        raise ValueError(f"{what}: out_hw must be (height, width) >= 0, got ({h}, {w})")
    return h, w


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
        raise ValueError(f"{what}: boxes must have shape ({n}, 4), got {list(boxes.shape)}")
    if not boxes.is_floating_point():
        raise ValueError(f"{what}: boxes must be floating point, got {boxes.dtype}")
    if n > 0 and not bool(torch.isfinite(boxes).all()):
        bad = torch.jit.annotate(
            List[int], (~torch.isfinite(boxes)).any(dim=1).nonzero()[:10, 0].tolist()
        )
        raise ValueError(f"{what}: boxes must be finite; rows {bad} are not")


# --------------------------------------------------------------------------- primitive
def resize_threshold_reference(
    input: torch.Tensor,
    out_hw: Tuple[int, int],
    threshold: float = 0.5,
    convention: str = "interpolate",
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
    # D2's paste of every map into the box (0, 0, w, h), i.e. over the whole output (float32
    # boxes: D2's grid arithmetic)
    boxes = torch.tensor([[0.0, 0.0, w, h]], dtype=torch.float32, device=input.device).expand(n, 4)
    return paste_mask_values(input, boxes, (h, w)) >= threshold


def resize_threshold(
    input: torch.Tensor,
    out_hw: Tuple[int, int],
    threshold: float = 0.5,
    convention: str = "interpolate",
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
        raise ValueError(
            f"{what}: input must be a float (N, h, w) tensor, got {input.dtype} {tuple(input.shape)}"
        )
    h, w = _check_out_hw(out_hw, what)
    threshold = _check_threshold(threshold, what)
    if input.shape[0] and (input.shape[1] == 0 or input.shape[2] == 0):
        raise ValueError(f"{what}: input maps are empty: {tuple(input.shape)}")
    if _use_ext(input):
        return torch.ops.d2ext.resize_threshold(input, h, w, threshold, convention == "grid_sample")
    return resize_threshold_reference(input, (h, w), threshold, convention)


# --------------------------------------------------------------------------- YOLACT
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
    masks = prototype_masks(protos, coeffs)
    # crop bounds in the boxes' own dtype (float32 boxes crop float64 checks like float32 runs)
    masks = masks * box_crop_region(boxes, hp, wp, crop_padding).to(masks.dtype)
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
    resolution (:func:`~d2ext.layers.prototype_masks.prototype_masks`); YOLACT's crop of ``m`` to
    the padded boxes (:func:`~d2ext.layers.prototype_masks.box_crop_region`: float bounds, not
    rounded, as the original's ``cast=False``); bilinear resize of the proto-resolution map to
    ``out_hw`` (``F.interpolate``, align_corners=False); ``> threshold``. The compiled op does the
    small matmul and sigmoid in ATen and then one kernel per output pixel (only inside the crop's
    footprint) writes the bool.

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
        raise ValueError(
            f"{what}: protos must be a float (k, Hp, Wp) tensor, got {protos.dtype} {tuple(protos.shape)}"
        )
    if protos.shape[1] == 0 or protos.shape[2] == 0:
        raise ValueError(f"{what}: protos have an empty spatial size {tuple(protos.shape)}")
    if coeffs.dim() != 2 or coeffs.shape[1] != protos.shape[0]:
        raise ValueError(
            f"{what}: coeffs must have shape (N, k={protos.shape[0]}) to match protos "
            f"{tuple(protos.shape)}, got {tuple(coeffs.shape)}"
        )
    if coeffs.dtype != protos.dtype:
        raise ValueError(
            f"{what}: coeffs dtype {coeffs.dtype} differs from protos dtype {protos.dtype}"
        )
    _check_boxes(boxes, coeffs.shape[0], what)
    if coeffs.device != protos.device or boxes.device != protos.device:
        raise ValueError(f"{what}: protos, coeffs and boxes must be on one device")
    h, w = _check_out_hw(out_hw, what)
    threshold = _check_threshold(threshold, what)
    if int(crop_padding) < 0:
        raise ValueError(f"{what}: crop_padding must be >= 0, got {crop_padding}")
    if _use_ext(protos, coeffs, boxes):
        return torch.ops.d2ext.assemble_masks(
            protos, coeffs, boxes, h, w, threshold, int(crop_padding)
        )
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


@torch.jit.script_if_tracing
def paste_masks(
    masks: torch.Tensor, boxes: torch.Tensor, out_hw: Tuple[int, int], threshold: float = 0.5
) -> torch.Tensor:
    """A drop-in for D2's :func:`paste_masks_in_image`, fused: bool output, work only inside
    each box.

    Output pixel (x, y) of mask i samples ``masks[i]`` at the ``F.grid_sample`` location
    (align_corners=False, zero padding) of grid coordinate ``((x + 0.5 - x0) / (x1 - x0)) * 2 - 1``
    (likewise y), exactly D2's float32 formula, and is True iff the value is ``>= threshold``.
    As in D2 on CPU, only the box's integer-expanded region ``[floor(x0) - 1, ceil(x1) + 1)`` x
    ``[floor(y0) - 1, ceil(y1) + 1)`` (clipped to the image) is computed; the rest is False. (D2
    on GPU samples the whole image; the two agree for threshold >= 0.5 and masks in [0, 1],
    because the zero padding keeps every value outside that region below 0.5.) Boxes whose
    region is empty (outside the image, inverted) give empty masks; zero-width boxes give NaN
    grid values, hence False pixels, as in D2.

    D2's contract, kept: non-float masks (bool, uint8 0/1) are cast to float32 as D2 does;
    ``Boxes`` are accepted in eager mode; the function can be ``torch.jit.script``-ed and is
    scripted when traced (``torch.jit.script_if_tracing``, as D2's), so traced models keep
    data-dependent shapes. Scripted or traced it runs the reference, i.e. D2's paste
    (TorchScript resolves ``torch.ops`` at compile time and the compiled ops are optional).
    One difference: the output is bool also when R == 0, where D2 returns uint8 (its non-empty
    output is bool; D2's ``BitMasks`` casts both to bool, so model outputs agree). Thresholds
    must be >= 0 (D2's uint8 "threshold < 0" visualisation mode is not offered).

    Args:
        masks (Tensor): (R, M, M) probabilities (D2's mask head output without channel), or
            0/1 masks of another dtype (e.g. bool from D2's ``crop_and_resize``).
        boxes (Tensor or Boxes): (R, 4) XYXY in absolute output-image pixels.
        out_hw: output (H, W).
        threshold (float): >= 0.

    Returns:
        BoolTensor (R, H, W).
    """
    what = "paste_masks"
    if not isinstance(boxes, torch.Tensor):  # D2 Boxes; a scripted caller passes the tensor
        boxes = boxes.tensor
    if masks.dim() != 3:
        raise ValueError(f"{what}: masks must be an (R, M, M) tensor, got {list(masks.shape)}")
    if not masks.is_floating_point():  # 0/1 bool or integer masks, cast as D2 casts them
        masks = masks.float()
    if masks.shape[1] != masks.shape[2] or (masks.shape[0] > 0 and masks.shape[1] == 0):
        raise ValueError(
            f"{what}: masks must be square and non-empty (R, M, M), got {list(masks.shape)}"
        )
    _check_boxes(boxes, masks.shape[0], what)
    if boxes.device != masks.device:
        raise ValueError(
            f"{what}: masks ({masks.device}) and boxes ({boxes.device}) must be on one device"
        )
    h, w = _check_out_hw(out_hw, what)
    threshold = _check_threshold(threshold, what)
    if not torch.jit.is_scripting():
        if _use_ext(masks, boxes):
            return torch.ops.d2ext.paste_masks(masks, boxes, h, w, threshold)
    return paste_masks_reference(masks, boxes, (h, w), threshold)


def paste_mask_values(
    masks: torch.Tensor, boxes: torch.Tensor, out_hw: Tuple[int, int]
) -> torch.Tensor:
    """D2's paste before the threshold, on the whole image: ``masks[i]`` (any float map, e.g.
    logits) bilinearly resampled into ``boxes[i]`` of an (H, W) image with D2's grid and
    ``F.grid_sample`` (align_corners=False, zero padding outside the box).

    Args:
        masks (Tensor): (R, h, w) float.
        boxes (Tensor): (R, 4) XYXY in absolute output-image pixels.
        out_hw: output (H, W).

    Returns:
        Tensor: (R, H, W) in ``masks.dtype``.
    """
    # D2 has no public function for these values (paste_masks_in_image thresholds them, or
    # quantises them to uint8 for threshold < 0), so its private _do_paste_mask is called here,
    # the one place d2ext calls it: if D2 changes it, this function and its tests are what break.
    values, _ = _do_paste_mask(
        masks[:, None], boxes, int(out_hw[0]), int(out_hw[1]), skip_empty=False
    )
    return values
