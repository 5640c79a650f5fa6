"""Backward warping of feature maps with a dense flow field (one ``grid_sample`` for every d2ext
video model), the flow unit conversion that goes with it, and the temporal losses: end-point
error (the original YolactEdge's ``OpticalFlowLoss``) and YolactEdge's feature-matching loss
(``Yolact.extra_loss``).

``warp_features(x, flow)[n, :, i, j]`` samples ``x[n]`` at the point the flow at ``(i, j)``
points to: the output lives on the *flow's* frame (YolactEdge: the current frame) and reads the
*features'* frame (the keyframe). Channel 0 of the flow is x (along W), channel 1 is y.

Flow units (``flow_units``):

* ``"normalized"`` - YolactEdge's ``deform_op``: the sampling grid is the identity grid in
  ``grid_sample``'s normalised coordinates plus ``flow * flow_scale`` (the original adds
  ``offset / 8``: a flow of 8 moves a whole half-width, so on a map of width ``w`` with
  ``align_corners=True`` a flow of ``8 * 2 / (w - 1)`` is one pixel). Values do not depend on the
  map size, which is why the same prediction is used at every pyramid level.
* ``"pixels"`` - ``flow * flow_scale`` in pixels of ``x`` (flow_scale 1 by default): a constant
  flow of ``(+3, -2)`` makes ``out[i, j] = x[i - 2, j + 3]`` exactly, zero where that falls
  outside.

``align_corners`` and ``padding_mode`` are ``grid_sample``'s; the identity grid is built in the
same convention, so a zero flow is the identity for both. YolactEdge uses ``align_corners=True``
(its grid is ``x * 2 / (w - 1) - 1``), bilinear sampling and zero padding. A map one pixel wide
with ``align_corners=True`` has a single normalised coordinate: every x samples that pixel
(``grid_sample``'s own convention), so it never moves along x.
"""

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "endpoint_error",
    "feature_matching_loss",
    "identity_grid",
    "multiscale_endpoint_error",
    "pixel_flow_to_normalized",
    "warp_features",
]

_UNITS = ("normalized", "pixels")


def _axis(size: int, align_corners: bool, like: torch.Tensor) -> torch.Tensor:
    """Normalised coordinate of each pixel index of one axis (``grid_sample``'s convention)."""
    idx = torch.arange(size, dtype=like.dtype, device=like.device)
    if align_corners:
        # the original's x * 2 / (w - 1) - 1; a 1-pixel axis has the single coordinate -1
        return idx * (2.0 / max(size - 1, 1)) - 1.0
    return (2.0 * idx + 1.0) / size - 1.0


def identity_grid(
    height: int, width: int, *, align_corners: bool, like: torch.Tensor
) -> torch.Tensor:
    """``(H, W, 2)`` normalised (x, y) of every pixel: ``grid_sample`` with it is the identity."""
    gx = _axis(width, align_corners, like).view(1, width).expand(height, width)
    gy = _axis(height, align_corners, like).view(height, 1).expand(height, width)
    return torch.stack((gx, gy), dim=-1)


def _pixel_to_normalized_factors(
    height: int, width: int, align_corners: bool
) -> Tuple[float, float]:
    if align_corners:
        return 2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)
    return 2.0 / width, 2.0 / height


def warp_features(
    features: torch.Tensor,
    flow: torch.Tensor,
    *,
    flow_units: str = "normalized",
    flow_scale: Optional[float] = None,
    align_corners: bool = True,
    padding_mode: str = "zeros",
    mode: str = "bilinear",
) -> torch.Tensor:
    """
    Args:
        features: (N, C, H, W) map to read from (the keyframe's).
        flow: (N, 2, H, W) offsets, channel 0 = x, 1 = y, in ``flow_units``.
        flow_units: ``"normalized"`` (YolactEdge) or ``"pixels"``; see the module docstring.
        flow_scale: multiplies the flow before it is added to the grid. Default: 1/8 for
            ``"normalized"`` (the original's ``offset / 8``; ``MODEL.YOLACT_EDGE.WARP_FLOW_SCALE``)
            and 1 for ``"pixels"``. Pass 1/8 with pixel flow at stride-1 resolution to warp a
            stride-8 map.
        align_corners, padding_mode, mode: passed to ``F.grid_sample``.
    Returns:
        (N, C, H, W) warped features, on the flow's grid.
    """
    if features.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(
            f"warp_features wants features (N, C, H, W) and flow (N, 2, H, W), got "
            f"{tuple(features.shape)} and {tuple(flow.shape)}"
        )
    if features.shape[0] != flow.shape[0] or features.shape[-2:] != flow.shape[-2:]:
        raise ValueError(
            f"warp_features: features {tuple(features.shape)} and flow {tuple(flow.shape)} "
            "differ in batch size or H, W (resize the flow to the feature map first)"
        )
    if flow_units not in _UNITS:
        raise ValueError(f"flow_units must be one of {_UNITS}, got {flow_units!r}")
    if flow_scale is None:
        flow_scale = 0.125 if flow_units == "normalized" else 1.0
    n, _, h, w = features.shape
    offset = flow.to(features.dtype) * flow_scale
    if flow_units == "pixels":
        fx, fy = _pixel_to_normalized_factors(h, w, align_corners)
        offset = offset * offset.new_tensor([fx, fy]).view(1, 2, 1, 1)
    grid = identity_grid(h, w, align_corners=align_corners, like=features).unsqueeze(0)
    grid = grid + offset.permute(0, 2, 3, 1)
    return F.grid_sample(
        features, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners
    )


def pixel_flow_to_normalized(
    flow: torch.Tensor, *, flow_scale: float = 0.125, image_size: Optional[Tuple[int, int]] = None
) -> torch.Tensor:
    """Pixel flow (N, 2, H, W) -> the units :class:`FlowNetMini` predicts and
    ``warp_features(flow_units="normalized", flow_scale=flow_scale)`` reads.

    The original's FlyingChairs loader: ``flow * 2 / (W, H) / flow_scale`` (``* 2 / [w, h] * 8``)
    with (H, W) the image the pixel flow was measured on (``image_size``, default the flow's own
    size). It divides by W, not W - 1, so under the ``align_corners=True`` warp the target moves
    a map of width w by ``(w - 1) / w`` of the true displacement; the original trains with it.
    """
    h, w = image_size if image_size is not None else flow.shape[-2:]
    factors = flow.new_tensor([2.0 / w, 2.0 / h]).view(1, 2, 1, 1)
    return flow * factors / flow_scale


def endpoint_error(
    pred: torch.Tensor, gt: torch.Tensor, valid: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Mean end-point error ``||pred - gt||_2`` over the (valid) pixels.

    Args:
        pred: (N, 2, h, w) flow.
        gt: (N, 2, H, W) flow; resized to (h, w) bilinearly (``align_corners=False``, values
            unchanged, as the original's ``OpticalFlowLoss``) when the sizes differ, so use
            size-independent units then (:func:`pixel_flow_to_normalized`).
        valid: optional (N, H, W) or (N, 1, H, W) mask of pixels with a ground truth; resized
            with nearest when needed. No valid pixel gives 0 (with a gradient), never NaN.
    """
    if pred.dim() != 4 or pred.shape[1] != 2 or gt.dim() != 4 or gt.shape[1] != 2:
        raise ValueError(
            f"endpoint_error wants (N, 2, h, w) flows, got {tuple(pred.shape)} and "
            f"{tuple(gt.shape)}"
        )
    size = pred.shape[-2:]
    if gt.shape[-2:] != size:
        gt = F.interpolate(gt, size=size, mode="bilinear", align_corners=False)
    epe = torch.linalg.vector_norm(pred - gt.to(pred.dtype), dim=1)
    if valid is None:
        return epe.mean()
    valid = valid.reshape(valid.shape[0], 1, *valid.shape[-2:]).float()
    if valid.shape[-2:] != size:
        valid = F.interpolate(valid, size=size, mode="nearest")
    valid = valid[:, 0]
    return (epe * valid).sum() / valid.sum().clamp(min=1.0)


def multiscale_endpoint_error(
    preds: Sequence[Optional[torch.Tensor]],
    gt: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Sum of :func:`endpoint_error` over the levels of a flow pyramid (None levels skipped):
    the original's flow-stage loss ``F`` on ``FlowNetOutput.flows``."""
    levels = [endpoint_error(p, gt, valid) for p in preds if p is not None]
    if not levels:
        raise ValueError("multiscale_endpoint_error got no flow prediction")
    return torch.stack(levels).sum()


def feature_matching_loss(
    warped: Sequence[torch.Tensor],
    target: Sequence[torch.Tensor],
    *,
    kind: str = "cosine",
    location: str = "L+P",
    output_convs: Optional[Sequence[nn.Conv2d]] = None,
    weight: float = 1.0,
) -> torch.Tensor:
    """YolactEdge's feature-matching loss ``W``: warped keyframe features vs. the current
    frame's own features, per level (P4, P5 in the original).

    Args:
        warped: the non-keyframe path's features (after warp, scale/bias and SPA).
        target: the same levels computed by the full backbone on the current frame; detached
            here (the original's ``outs_phase_1`` of the full pass are).
        kind: ``"cosine"``: ``mean(1 - cos)`` over channels (the video config) or
            ``"smooth_l1"``: ``smooth_l1(sum) / N / C``.
        location: ``"L"`` the features themselves, ``"P"`` after each level's FPN output conv
            + ReLU (weights detached: the loss only trains what produced the inputs), ``"L+P"``
            both (the video config); pairs ordered per level, L before P.
        output_convs: one conv per level, needed for ``"P"``. Parity quirk: the original
            indexes its reversed ``pred_layers`` (index 0 = P5's) with ``level + 1``, so P4
            goes through P4's output conv but P5 through P3's; pass ``[P4's, P3's]`` to
            reproduce it, ``[P4's, P5's]`` for the evident intent.
        weight: the original's ``fm_loss_alpha``.
    Returns:
        ``weight`` x the mean of the pair losses.
    """
    if kind not in ("cosine", "smooth_l1"):
        raise ValueError(f"feature_matching_loss: kind must be cosine or smooth_l1, got {kind!r}")
    if location not in ("L", "P", "L+P"):
        raise ValueError(f"feature_matching_loss: location must be L, P or L+P, got {location!r}")
    if len(warped) != len(target) or not warped:
        raise ValueError(
            f"feature_matching_loss: {len(warped)} warped vs {len(target)} target levels"
        )
    if location != "L" and (output_convs is None or len(output_convs) != len(warped)):
        raise ValueError(
            f"feature_matching_loss: location {location!r} needs one output conv per level"
        )

    def through_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        bias = conv.bias.detach() if conv.bias is not None else None
        y = F.conv2d(
            x, conv.weight.detach(), bias, conv.stride, conv.padding, conv.dilation, conv.groups
        )
        return F.relu(y)

    pairs = []
    for i, (pred, gt) in enumerate(zip(warped, target)):
        gt = gt.detach()
        if pred.shape != gt.shape:
            raise ValueError(
                f"feature_matching_loss: level {i} warped {tuple(pred.shape)} vs target "
                f"{tuple(gt.shape)}"
            )
        if location != "P":
            pairs.append((pred, gt))
        if location != "L":
            pairs.append((through_conv(pred, output_convs[i]), through_conv(gt, output_convs[i])))
    losses = []
    for pred, gt in pairs:
        if kind == "cosine":
            losses.append((1.0 - F.cosine_similarity(pred, gt, dim=1)).mean())
        else:
            n, c = pred.shape[:2]
            losses.append(F.smooth_l1_loss(pred, gt, reduction="sum") / n / c)
    return torch.stack(losses).mean() * weight
