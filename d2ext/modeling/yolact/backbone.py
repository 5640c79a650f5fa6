"""YOLACT's FPN on a D2 ResNet.

It differs from D2's :class:`detectron2.modeling.FPN`: the top-down path upsamples with bilinear
interpolation (``align_corners=False``) to the lateral's exact size, the 3x3 output convs are
followed by ReLU, and P6/P7 come from stride-2 3x3 convs on the *output* P5 (then P6) with no
ReLU, instead of D2's LastLevelMaxPool / LastLevelP6P7 on C5.
"""

from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from .weight_init import yolact_xavier_fill

__all__ = ["YOLACTFPN", "build_yolact_resnet_fpn_backbone"]


class YOLACTFPN(Backbone):
    """Outputs ``p{s}`` (N, out_channels, H/2^s, W/2^s) for the input stages of ``in_features``
    and ``num_downsample`` extra levels; e.g. res3-res5 -> p3..p7."""

    @configurable
    def __init__(
        self,
        *,
        bottom_up: Backbone,
        in_features: List[str],
        out_channels: int,
        num_downsample: int = 2,
        relu_outputs: bool = True,
    ):
        """
        Args:
            bottom_up: a D2 backbone (e.g. ResNet) producing ``in_features``.
            in_features: bottom-up feature names, fine to coarse (e.g. res3, res4, res5).
            out_channels: channels of every output level.
            num_downsample: extra levels appended by stride-2 3x3 convs on the last output.
            relu_outputs: ReLU after each 3x3 output conv (the original's relu_pred_layers).
        """
        super().__init__()
        shapes = bottom_up.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ValueError(
                f"YOLACTFPN: bottom-up backbone lacks features {missing}; has {list(shapes)}"
            )
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        self.relu_outputs = relu_outputs
        strides = [shapes[f].stride for f in in_features]
        self._levels = [int(round(torch.log2(torch.tensor(float(s))).item())) for s in strides]
        for lvl, f in zip(self._levels, in_features):
            self.add_module(f"fpn_lateral{lvl}", Conv2d(shapes[f].channels, out_channels, 1))
            self.add_module(f"fpn_output{lvl}", Conv2d(out_channels, out_channels, 3, padding=1))
        last = self._levels[-1]
        self._extra_levels = list(range(last + 1, last + 1 + num_downsample))
        for lvl in self._extra_levels:
            self.add_module(
                f"fpn_downsample{lvl}", Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
            )
        all_levels = self._levels + self._extra_levels
        self._out_features = [f"p{lvl}" for lvl in all_levels]
        self._out_feature_strides = {f"p{lvl}": 2**lvl for lvl in all_levels}
        self._out_feature_channels = {f"p{lvl}": out_channels for lvl in all_levels}
        self._size_divisibility = 2 ** all_levels[-1]
        for name, m in self.named_children():
            if name.startswith("fpn_"):  # not the (pretrained) bottom-up network
                yolact_xavier_fill(m)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec = None):
        if input_shape is None:
            input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
        c = cfg.MODEL.YOLACT
        return {
            "bottom_up": build_resnet_backbone(cfg, input_shape),
            "in_features": c.FPN_IN_FEATURES,
            "out_channels": c.FPN_OUT_CHANNELS,
            "num_downsample": c.FPN_NUM_DOWNSAMPLE,
            "relu_outputs": c.FPN_RELU_OUTPUTS,
        }

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x: (N, 3, H, W) normalised images -> dict of ``p{s}`` feature maps."""
        return self.forward_features(self.bottom_up(x))

    def forward_features(
        self, bottom_up_features: Dict[str, torch.Tensor]
    ) -> Dict[str, torch.Tensor]:
        """The FPN alone, on given bottom-up features (used by the parity test)."""
        feats = [bottom_up_features[f] for f in self.in_features]
        outs = [None] * len(feats)
        top = None
        for i in range(len(feats) - 1, -1, -1):
            lat = getattr(self, f"fpn_lateral{self._levels[i]}")(feats[i])
            if top is not None:
                lat = lat + F.interpolate(
                    top, size=lat.shape[-2:], mode="bilinear", align_corners=False
                )
            outs[i] = top = lat
        for i, lvl in enumerate(self._levels):
            outs[i] = getattr(self, f"fpn_output{lvl}")(outs[i])
            if self.relu_outputs:
                outs[i] = F.relu(outs[i])
        for lvl in self._extra_levels:
            outs.append(getattr(self, f"fpn_downsample{lvl}")(outs[-1]))
        return dict(zip(self._out_features, outs))

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            f: ShapeSpec(
                channels=self._out_feature_channels[f], stride=self._out_feature_strides[f]
            )
            for f in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_yolact_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """``MODEL.BACKBONE.NAME: build_yolact_resnet_fpn_backbone``: D2's ResNet + YOLACT-FPN."""
    return YOLACTFPN(cfg, input_shape)
