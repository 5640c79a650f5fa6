"""YOLACT's protonet and its prediction head shared over the FPN levels."""

from typing import List, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from torch import nn

from .weight_init import yolact_xavier_fill

__all__ = ["ProtoNet", "YOLACTHead", "MaskIoUNet"]


class ProtoNet(nn.Module):
    """FCN on P3 producing k prototypes: [3x3 conv + ReLU] x n_before, x2 bilinear upsample +
    ReLU, [3x3 conv + ReLU] x n_after, 1x1 conv to k, ReLU. A 550 input (P3 69x69) gives
    138x138 prototypes. ``net`` mirrors the original ``proto_net`` indices (0, 2, 4, 8, 10 are
    the convs by default) so official weights load by index.

    ``extra_upsample_dims`` (d2ext's option, empty in the original configs): for each entry one
    more x2 bilinear upsample + ReLU and a 3x3 conv with that many channels + ReLU, before the
    1x1 conv; ``[64]`` gives stride-2 prototypes. (The original's ``mask_proto_net`` list can
    spell the same net: ``(None, -2, {}), (64, 3, {'padding': 1})``.)"""

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        conv_dim: int,
        num_prototypes: int,
        num_convs_before_upsample: int = 3,
        num_convs_after_upsample: int = 1,
        extra_upsample_dims: List[int] = (),
    ):
        super().__init__()
        layers: List[nn.Module] = []
        c = in_channels
        for _ in range(num_convs_before_upsample):
            layers += [nn.Conv2d(c, conv_dim, 3, padding=1), nn.ReLU(inplace=True)]
            c = conv_dim
        layers += [
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.ReLU(inplace=True),
        ]
        for _ in range(num_convs_after_upsample):
            layers += [nn.Conv2d(c, conv_dim, 3, padding=1), nn.ReLU(inplace=True)]
            c = conv_dim
        for dim in extra_upsample_dims:
            layers += [
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.ReLU(inplace=True),
            ]
            layers += [nn.Conv2d(c, dim, 3, padding=1), nn.ReLU(inplace=True)]
            c = dim
        layers += [nn.Conv2d(c, num_prototypes, 1), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)
        self.num_prototypes = num_prototypes
        # prototype side / input feature side
        self.upsample_factor = 2 ** (1 + len(extra_upsample_dims))
        yolact_xavier_fill(self)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        c = cfg.MODEL.YOLACT
        return {
            "in_channels": input_shape.channels,
            "conv_dim": c.PROTO_CONV_DIM,
            "num_prototypes": c.NUM_PROTOTYPES,
            "num_convs_before_upsample": c.PROTO_NUM_CONVS_BEFORE_UPSAMPLE,
            "num_convs_after_upsample": c.PROTO_NUM_CONVS_AFTER_UPSAMPLE,
            "extra_upsample_dims": list(c.PROTO_EXTRA_UPSAMPLE_DIMS),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, h, w) P3 -> prototypes (N, k, f * h, f * w), non-negative, f =
        ``upsample_factor`` (2 in the original)."""
        return self.net(x)


class YOLACTHead(nn.Module):
    """One 3x3 conv + ReLU ("upfeature"), then parallel 3x3 convs for box deltas (A*4), class
    logits (A*(C+1), background is class 0) and mask coefficients (A*k, tanh). The same weights
    run on every level; outputs are flattened like the original: level, row-major cell, anchor."""

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        conv_dim: int,
        num_anchors: int,
        num_classes: int,
        num_prototypes: int,
    ):
        """num_classes: foreground classes C (the classifier predicts C + 1)."""
        super().__init__()
        self.num_classes = num_classes
        self.num_prototypes = num_prototypes
        self.upfeature = nn.Conv2d(in_channels, conv_dim, 3, padding=1)
        self.num_anchors = num_anchors
        self.bbox_pred = nn.Conv2d(conv_dim, num_anchors * 4, 3, padding=1)
        self.cls_logits = nn.Conv2d(conv_dim, num_anchors * (num_classes + 1), 3, padding=1)
        self.coeff_pred = nn.Conv2d(conv_dim, num_anchors * num_prototypes, 3, padding=1)
        yolact_xavier_fill(self)

    @classmethod
    def from_config(cls, cfg, input_shapes: List[ShapeSpec], num_anchors: int):
        channels = {s.channels for s in input_shapes}
        if len(channels) != 1:
            raise ValueError(f"YOLACTHead is shared over levels; got input channels {channels}")
        c = cfg.MODEL.YOLACT
        return {
            "in_channels": channels.pop(),
            "conv_dim": c.HEAD_CONV_DIM,
            "num_anchors": num_anchors,
            "num_classes": c.NUM_CLASSES,
            "num_prototypes": c.NUM_PROTOTYPES,
        }

    def forward(
        self, features: List[torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            features: per-level maps (N, C_in, h_l, w_l).
        Returns:
            deltas (N, R, 4) in Box2BoxTransform's (dx, dy, dw, dh) order, class logits
            (N, R, C + 1), coefficients (N, R, k) after tanh; R = sum_l h_l * w_l * A.
        """
        deltas, logits, coeffs = [], [], []
        for x in features:
            x = torch.relu(self.upfeature(x))
            n = x.shape[0]
            deltas.append(self.bbox_pred(x).permute(0, 2, 3, 1).reshape(n, -1, 4))
            logits.append(
                self.cls_logits(x).permute(0, 2, 3, 1).reshape(n, -1, self.num_classes + 1)
            )
            coeffs.append(
                self.coeff_pred(x).permute(0, 2, 3, 1).reshape(n, -1, self.num_prototypes)
            )
        return torch.cat(deltas, 1), torch.cat(logits, 1), torch.tanh(torch.cat(coeffs, 1))


class MaskIoUNet(nn.Module):
    """YOLACT++'s fast mask re-scoring network (Bolya et al., TPAMI 2020): a small FCN on one
    predicted mask at prototype size (cropped sigmoid probabilities) that regresses, per class,
    the IoU of that mask with its ground truth. Convs are 3x3, stride 2, no padding, each with
    a ReLU; a 1x1 conv to C classes (with ReLU, as the original) and a global max pool follow.
    At test, class scores are multiplied by the predicted IoU of the detection's class."""

    @configurable
    def __init__(self, *, num_classes: int, channels: List[int] = (8, 16, 32, 64, 128)):
        super().__init__()
        layers: List[nn.Module] = []
        c = 1
        for out in channels:
            layers += [nn.Conv2d(c, out, 3, stride=2), nn.ReLU(inplace=True)]
            c = out
        layers += [nn.Conv2d(c, num_classes, 1), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)
        self.num_strided_convs = len(channels)
        yolact_xavier_fill(self)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.YOLACT
        return {"num_classes": c.NUM_CLASSES, "channels": list(c.MASK_IOU_NET_CHANNELS)}

    def min_input_size(self) -> int:
        """Smallest prototype side the unpadded stride-2 convs accept (3 for one conv, then 2s+1)."""
        s = 1
        for _ in range(self.num_strided_convs):
            s = 2 * s + 1
        return s

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        """masks: (N, 1, Hp, Wp) probabilities -> predicted mask IoU per class (N, C), >= 0."""
        if masks.shape[-1] < self.min_input_size() or masks.shape[-2] < self.min_input_size():
            raise ValueError(
                f"MaskIoUNet: prototypes of {tuple(masks.shape[-2:])} are smaller than the "
                f"{self.min_input_size()} px its {self.num_strided_convs} stride-2 convs need"
            )
        return torch.amax(self.net(masks), dim=(2, 3))
