"""UPSNet's semantic head: one FCN subnet of (deformable) 3x3 convs shared over P2-P5, every
level upsampled to the P2 grid, concatenated, and a 1x1 conv to stuff + thing classes."""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ROIAlign, ShapeSpec, get_norm
from detectron2.structures import Boxes
from torch import nn
from torchvision.ops import deform_conv2d

__all__ = [
    "DeformConvWithOffset",
    "UPSNetSemanticHead",
    "crop_and_resize_labels",
    "cross_entropy_valid_mean",
    "downsample_labels",
]


class DeformConvWithOffset(nn.Module):
    """3x3 deformable conv whose offsets come from a plain 3x3 conv on the same input.

    The offset conv starts at zero (so training starts as a plain conv, as in UPSNet); the
    deformable op is torchvision's ``deform_conv2d`` (CPU and CUDA).
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, kernel_size: int = 3, dilation: int = 1
    ):
        super().__init__()
        self.padding = dilation * (kernel_size // 2)
        self.dilation = dilation
        self.conv_offset = nn.Conv2d(
            in_channels,
            2 * kernel_size * kernel_size,
            kernel_size,
            padding=self.padding,
            dilation=dilation,
        )
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_normal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.conv_offset(x)
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            padding=(self.padding, self.padding),
            dilation=(self.dilation, self.dilation),
        )


def crop_and_resize_labels(labels: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-sample a label map inside boxes on a ``size x size`` grid of bin centres.

    Args:
        labels: (H, W) integer labels.
        boxes: (R, 4) XYXY in the pixel coordinates of ``labels`` (pixel (y, x) covers
            [x, x+1) x [y, y+1)).
    Returns:
        (R, size, size) long labels.
    """
    if boxes.numel() == 0:
        return labels.new_zeros((0, size, size), dtype=torch.long)
    h, w = labels.shape
    steps = (torch.arange(size, device=boxes.device, dtype=torch.float32) + 0.5) / size
    x0, y0, x1, y1 = boxes.float().unbind(1)
    xs = x0[:, None] + (x1 - x0)[:, None] * steps  # (R, size), absolute pixels
    ys = y0[:, None] + (y1 - y0)[:, None] * steps
    # grid_sample(align_corners=False) maps pixel centre x+0.5 to 2(x+0.5)/w - 1
    gx = (xs * 2 / w - 1)[:, None, :].expand(-1, size, -1)
    gy = (ys * 2 / h - 1)[:, :, None].expand(-1, -1, size)
    grid = torch.stack([gx, gy], dim=3)
    src = labels[None, None].float().expand(boxes.shape[0], -1, -1, -1)
    out = F.grid_sample(src, grid, mode="nearest", padding_mode="border", align_corners=False)
    return out[:, 0].round().long()


class UPSNetSemanticHead(nn.Module):
    """Semantic head of UPSNet (Sec. 3.2 of the paper).

    ``forward(features)`` returns ``(logits, feats)``: logits (N, S+T, H/4, W/4) on the grid of
    the first input feature (P2), in UPSNet's label space (stuff 0..S-1, then things), and the
    concatenated (N, L*conv_dim, H/4, W/4) features that the RoI-level loss pools from.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        conv_dim: int = 128,
        num_convs: int = 3,
        deformable: bool = True,
        norm: str = "",
        ignore_value: int = 255,
        loss_weight: float = 0.2,
        roi_loss_weight: float = 0.0,
        roi_resolution: int = 28,
    ):
        """
        Args:
            input_shape: FPN levels the subnet is shared over, finest first (p2..p5); they must
                have equal channels.
            num_classes: S + T semantic classes.
            conv_dim: output channels of the subnet per level.
            num_convs: 3x3 convs in the subnet (>= 2); the second to last reduces to conv_dim.
            deformable: deformable (paper) or plain 3x3 convs.
            norm: normalization after each conv ("" for none).
            ignore_value: ignored label in the targets.
            loss_weight: weight of the per-pixel cross entropy.
            roi_loss_weight: weight of the RoI-level cross entropy on GT boxes (0 disables).
            roi_resolution: side of the RoI crops of that loss.
        """
        super().__init__()
        if num_convs < 2:
            raise ValueError(f"UPSNet semantic head needs NUM_CONVS >= 2, got {num_convs}")
        self.in_features = list(input_shape.keys())
        channels = {s.channels for s in input_shape.values()}
        if len(channels) != 1:
            raise ValueError(
                f"semantic head inputs {self.in_features} differ in channels: {channels}"
            )
        self.strides = [input_shape[f].stride for f in self.in_features]
        in_ch = channels.pop()
        layers = []
        for i in range(num_convs):
            out_ch = conv_dim if i >= num_convs - 2 else in_ch
            conv = (
                DeformConvWithOffset(in_ch, out_ch)
                if deformable
                else nn.Conv2d(in_ch, out_ch, 3, padding=1)
            )
            if isinstance(conv, nn.Conv2d):
                nn.init.kaiming_normal_(conv.weight)
                nn.init.zeros_(conv.bias)
            layers.append(conv)
            n = get_norm(norm, out_ch)
            if n is not None:
                layers.append(n)
            layers.append(nn.ReLU(inplace=True))
            in_ch = out_ch
        self.subnet = nn.Sequential(*layers)
        self.score = nn.Conv2d(conv_dim * len(self.in_features), num_classes, 1)
        nn.init.normal_(self.score.weight, std=0.01)
        nn.init.zeros_(self.score.bias)
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.roi_loss_weight = roi_loss_weight
        self.roi_resolution = roi_resolution
        self.roi_align = ROIAlign(
            (roi_resolution, roi_resolution), 1.0 / self.strides[0], sampling_ratio=0, aligned=True
        )

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.UPSNET.SEM_SEG_HEAD
        return {
            "input_shape": {f: input_shape[f] for f in head.IN_FEATURES},
            "num_classes": cfg.MODEL.UPSNET.NUM_STUFF_CLASSES + cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "conv_dim": head.CONV_DIM,
            "num_convs": head.NUM_CONVS,
            "deformable": head.DEFORMABLE,
            "norm": head.NORM,
            "ignore_value": cfg.MODEL.UPSNET.IGNORE_VALUE,
            "loss_weight": cfg.MODEL.UPSNET.SEM_SEG_LOSS_WEIGHT,
            "roi_loss_weight": cfg.MODEL.UPSNET.ROI_SEM_SEG_LOSS_WEIGHT,
            "roi_resolution": cfg.MODEL.UPSNET.ROI_SEM_SEG_RESOLUTION,
        }

    def forward(self, features: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        base = features[self.in_features[0]]
        outs = []
        for f in self.in_features:
            x = self.subnet(features[f])
            if x.shape[-2:] != base.shape[-2:]:
                x = F.interpolate(x, size=base.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(x)
        feats = torch.cat(outs, dim=1)
        return self.score(feats), feats

    def losses(
        self,
        logits: torch.Tensor,
        feats: torch.Tensor,
        gt_sem_seg: torch.Tensor,
        gt_boxes: Optional[List[Boxes]] = None,
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            logits, feats: outputs of :meth:`forward`.
            gt_sem_seg: (N, H, W) long labels of the padded input images (ignore = ignore_value).
            gt_boxes: per image (R_i,) GT boxes, XYXY in input pixels, for the RoI-level loss.
        """
        target = downsample_labels(gt_sem_seg, logits.shape[-2:])
        losses = {
            "loss_sem_seg": self.loss_weight
            * cross_entropy_valid_mean(logits, target, self.ignore_value)
        }
        if self.roi_loss_weight > 0 and gt_boxes is not None:
            boxes = [b.tensor for b in gt_boxes]
            rois = torch.cat(
                [torch.cat([b.new_full((len(b), 1), i), b], 1) for i, b in enumerate(boxes)]
            )
            roi_logits = self.score(self.roi_align(feats, rois))
            roi_target = torch.cat(
                [
                    crop_and_resize_labels(lab, b, self.roi_resolution)
                    for lab, b in zip(gt_sem_seg, boxes)
                ]
            )
            losses["loss_sem_seg_roi"] = self.roi_loss_weight * cross_entropy_valid_mean(
                roi_logits, roi_target, self.ignore_value
            )
        return losses


def downsample_labels(labels: torch.Tensor, size) -> torch.Tensor:
    """Nearest-neighbour resize of (N, H, W) integer labels to ``size`` (h, w)."""
    out = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")
    return out[:, 0].long()


def cross_entropy_valid_mean(
    logits: torch.Tensor, target: torch.Tensor, ignore_value: int
) -> torch.Tensor:
    """Cross entropy averaged over non-ignored pixels; 0 (still in the graph) when none."""
    loss = F.cross_entropy(logits, target, ignore_index=ignore_value, reduction="sum")
    valid = (target != ignore_value).sum().clamp(min=1)
    return loss / valid
