"""DensePose chart losses (D2 DensePose ``DensePoseChartLoss``; the config default
``...WithConfidenceLoss`` with confidences off computes the same), on the ROI outputs of
proposals matched to a GT that carries DensePose data.

Point sampling, as the original (pinned by the parity fixture):
- an annotated point ``(x, y)`` in [0, 256) of the GT box goes to image pixels
  ``x0_gt + x * w_gt / 256`` and then to the H x W output grid of its proposal as
  ``g = (x_img - x0_prop) * W / w_prop`` (no half-pixel shift); it is valid only inside the
  proposal, ``0 <= x_img - x0_prop < w_prop`` (both axes);
- bilinear sampling by hand: ``lo = floor(g)`` clamped to [0, W-1], ``hi = min(lo + 1, W-1)``,
  weight of ``hi`` = ``min(hi, g) - lo`` (a point in the last cell takes index W-1 on both
  sides with weight 0 on ``hi``).
Terms: U, V — smooth-L1 (beta 1) **summed** over valid points with part > 0, read from the
GT part's channel, x ``POINT_REGRESSION_WEIGHTS``; I — cross-entropy **mean** over all valid
points (background included) x ``PART_WEIGHTS``; S — the GT box's 256 x 256 coarse part map
resampled onto the proposal by ``grid_sample(nearest, align_corners=True)`` on the
left-aligned grid ``arange(H) / H`` (binarised when there are 2 coarse channels),
cross-entropy mean over H x W x ``INDEX_WEIGHTS``. Without any valid foreground point in the
batch every term is ``outputs.sum() * 0``: zero, but on the graph (DDP sees every parameter).
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.structures import BoxMode, Instances

from .inference import DensePoseChartPredictorOutput

__all__ = [
    "DensePoseChartLoss",
    "PackedDensePoseTargets",
    "pack_densepose_targets",
    "point_grid_indices",
    "resample_segm_to_rois",
]

# DensePose-COCO point and mask coordinates are relative to the GT box, on a 256 grid.
ANNOTATION_GRID = 256.0


@dataclass
class PackedDensePoseTargets:
    """Targets of the K points (all (K,)) of all ROIs with points, over all images.

    ``rows`` (K,): the ROI (predictor output row) of each point;
    ``gt_xywh``, ``roi_xywh`` (K, 4): the point's GT box and ROI box in image pixels (XYWH);
    ``segm`` (B, 256, 256) float and ``segm_rows`` (B,): coarse part maps of the ROIs whose
    annotation has one, with their GT and ROI boxes ``segm_gt_xywh``, ``segm_roi_xywh``.
    """

    x: torch.Tensor
    y: torch.Tensor
    i: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    rows: torch.Tensor
    gt_xywh: torch.Tensor
    roi_xywh: torch.Tensor
    segm: Optional[torch.Tensor]
    segm_rows: torch.Tensor
    segm_gt_xywh: torch.Tensor
    segm_roi_xywh: torch.Tensor


def pack_densepose_targets(
    proposals_with_gt: List[Instances], num_patches: int
) -> Optional[PackedDensePoseTargets]:
    """Concatenate the points of every ROI (``proposal_boxes``, ``gt_boxes``,
    ``gt_densepose`` per image, ROIs in predictor-row order). ROIs without data or without
    points are skipped (their row still counts). None when there is no point at all.

    Raises ValueError naming the image, ROI and GT box of a part index outside 0..num_patches.
    """
    pts, boxes, segms = [], [], []
    row = 0
    for image_index, p in enumerate(proposals_with_gt):
        if len(p) == 0:
            continue
        roi = BoxMode.convert(p.proposal_boxes.tensor, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
        gt = BoxMode.convert(p.gt_boxes.tensor, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
        dps = p.gt_densepose if p.has("gt_densepose") else [None] * len(p)
        for k, dp in enumerate(dps):
            if dp is not None and len(dp.x) > 0:
                i = dp.i.long()
                bad = (i < 0) | (i > num_patches)
                if bad.any():
                    raise ValueError(
                        f"DensePose annotation of image {image_index} in the batch, ROI {k} "
                        f"(GT box XYXY {[round(c, 1) for c in p.gt_boxes.tensor[k].tolist()]}): "
                        f"part index {int(i[bad][0])} outside 0..{num_patches} (dp_I)"
                    )
                n = len(i)
                pts.append((dp.x, dp.y, i, dp.u, dp.v, torch.full_like(i, row)))
                boxes.append((gt[k].expand(n, 4), roi[k].expand(n, 4)))
                if dp.segm is not None:
                    segms.append((dp.segm, gt[k], roi[k], row))
            row += 1
    if not pts:
        return None
    x, y, i, u, v, rows = (torch.cat(t) for t in zip(*pts))
    device = x.device
    if segms:
        segm = torch.stack([s[0].float() for s in segms])
        segm_gt, segm_roi = torch.stack([s[1] for s in segms]), torch.stack([s[2] for s in segms])
    else:
        segm, segm_gt, segm_roi = None, x.new_zeros(0, 4), x.new_zeros(0, 4)
    return PackedDensePoseTargets(
        x=x.float(),
        y=y.float(),
        i=i,
        u=u.float(),
        v=v.float(),
        rows=rows,
        gt_xywh=torch.cat([b[0] for b in boxes]),
        roi_xywh=torch.cat([b[1] for b in boxes]),
        segm=segm,
        segm_rows=torch.tensor([s[3] for s in segms], dtype=torch.long, device=device),
        segm_gt_xywh=segm_gt,
        segm_roi_xywh=segm_roi,
    )


def point_grid_indices(
    t: torch.Tensor, t0_gt: torch.Tensor, size_gt: torch.Tensor, t0_roi: torch.Tensor,
    size_roi: torch.Tensor, size_out: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """One axis of the point sampling (module docstring): ``(lo, hi, w_hi, valid)``."""
    offset = t0_gt + t * size_gt / ANNOTATION_GRID - t0_roi
    valid = (offset >= 0) & (offset < size_roi)
    g = offset * size_out / size_roi
    lo = g.floor().long().clamp(0, size_out - 1)
    hi = (lo + 1).clamp(max=size_out - 1)
    w_hi = torch.min(hi.float(), g) - lo.float()
    return lo, hi, w_hi, valid


def resample_segm_to_rois(
    segm: torch.Tensor, gt_xywh: torch.Tensor, roi_xywh: torch.Tensor, size: int
) -> torch.Tensor:
    """(B, 256, 256) maps over GT boxes -> (B, size, size) over the ROIs: nearest
    ``grid_sample`` (``align_corners=True``, zero padding) on the left-aligned grid
    ``arange(size) / size`` spanning each ROI in the GT box's normalised coordinates."""
    lo = 2 * (roi_xywh[:, :2] - gt_xywh[:, :2]) / gt_xywh[:, 2:] - 1  # (B, 2) x, y
    hi = 2 * (roi_xywh[:, :2] + roi_xywh[:, 2:] - gt_xywh[:, :2]) / gt_xywh[:, 2:] - 1
    steps = torch.arange(size, device=segm.device, dtype=torch.float32) / size
    gx = lo[:, None, None, 0] + steps[None, None, :] * (hi - lo)[:, None, None, 0]
    gy = lo[:, None, None, 1] + steps[None, :, None] * (hi - lo)[:, None, None, 1]
    grid = torch.stack([gx.expand(-1, size, size), gy.expand(-1, size, size)], dim=3)
    out = F.grid_sample(
        segm[:, None], grid, mode="nearest", padding_mode="zeros", align_corners=True
    )
    return out[:, 0]


class DensePoseChartLoss:
    """``loss_densepose_U``, ``_V``, ``_I``, ``_S`` (module docstring) of predictor outputs
    whose rows are the proposals of ``proposals_with_gt`` in order."""

    @configurable
    def __init__(
        self,
        *,
        num_patches: int,
        num_coarse_segm_channels: int,
        point_regression_weight: float,
        part_weight: float,
        index_weight: float,
    ):
        self.num_patches = num_patches
        self.num_coarse_segm_channels = num_coarse_segm_channels
        self.w_points = point_regression_weight
        self.w_part = part_weight
        self.w_segm = index_weight

    @classmethod
    def from_config(cls, cfg):
        h = cfg.MODEL.ROI_DENSEPOSE_HEAD
        return {
            "num_patches": h.NUM_PATCHES,
            "num_coarse_segm_channels": h.NUM_COARSE_SEGM_CHANNELS,
            "point_regression_weight": h.POINT_REGRESSION_WEIGHTS,
            "part_weight": h.PART_WEIGHTS,
            "index_weight": h.INDEX_WEIGHTS,
        }

    @staticmethod
    def zero_losses(out: DensePoseChartPredictorOutput) -> Dict[str, torch.Tensor]:
        """Zero-valued losses on the graph of every output (DDP-safe)."""
        return {
            "loss_densepose_U": out.u.sum() * 0,
            "loss_densepose_V": out.v.sum() * 0,
            "loss_densepose_I": out.fine_segm.sum() * 0,
            "loss_densepose_S": out.coarse_segm.sum() * 0,
        }

    def __call__(
        self, proposals_with_gt: List[Instances], out: DensePoseChartPredictorOutput
    ) -> Dict[str, torch.Tensor]:
        packed = pack_densepose_targets(proposals_with_gt, self.num_patches)
        if packed is None:
            return self.zero_losses(out)
        h, w = out.u.shape[2:]
        gx, gy, gw, gh = packed.gt_xywh.unbind(1)
        rx, ry, rw, rh = packed.roi_xywh.unbind(1)
        x_lo, x_hi, wx, vx = point_grid_indices(packed.x, gx, gw, rx, rw, w)
        y_lo, y_hi, wy, vy = point_grid_indices(packed.y, gy, gh, ry, rh, h)
        valid = vx & vy
        valid_fg = valid & (packed.i > 0)
        if not valid_fg.any():
            return self.zero_losses(out)
        corners = (
            (y_lo, x_lo, (1 - wx) * (1 - wy)),
            (y_lo, x_hi, wx * (1 - wy)),
            (y_hi, x_lo, (1 - wx) * wy),
            (y_hi, x_hi, wx * wy),
        )

        def at_points(z: torch.Tensor) -> torch.Tensor:
            """(R, C, H, W) -> (K, C) bilinear samples at the K points of their ROIs."""
            z = z.permute(0, 2, 3, 1)
            return sum(z[packed.rows, yy, xx] * ww[:, None] for yy, xx, ww in corners)

        fg = valid_fg
        part = packed.i[fg, None]
        u_est = at_points(out.u)[fg].gather(1, part)[:, 0]
        v_est = at_points(out.v)[fg].gather(1, part)[:, 0]
        fine_est = at_points(out.fine_segm)[valid]
        losses = {
            "loss_densepose_U": F.smooth_l1_loss(u_est, packed.u[fg], reduction="sum")
            * self.w_points,
            "loss_densepose_V": F.smooth_l1_loss(v_est, packed.v[fg], reduction="sum")
            * self.w_points,
            "loss_densepose_I": F.cross_entropy(fine_est, packed.i[valid]) * self.w_part,
        }
        if packed.segm is None:
            losses["loss_densepose_S"] = out.coarse_segm.sum() * 0
        else:
            with torch.no_grad():
                segm_gt = resample_segm_to_rois(
                    packed.segm, packed.segm_gt_xywh, packed.segm_roi_xywh, h
                )
                if self.num_coarse_segm_channels == 2:
                    segm_gt = segm_gt > 0
            coarse_est = out.coarse_segm[packed.segm_rows]
            losses["loss_densepose_S"] = F.cross_entropy(coarse_est, segm_gt.long()) * self.w_segm
        return losses
