"""MobileNet-0.25 backbone of RetinaFace (biubug6/Pytorch_Retinaface ``models/net.py``
``MobileNetV1``): MobileNet v1 (Howard et al., 2017) at width multiplier 0.25, LeakyReLU 0.1 after
every conv, cut into the three stages whose outputs feed RetinaFace's FPN.

=========  =====================================================  ======  ========
stage      layers (3x3 conv, then depthwise-separable blocks)      stride  channels
=========  =====================================================  ======  ========
stage1     conv 3->8 /2, dw 8->16, dw 16->32 /2, dw 32->32,         8       64
           dw 32->64 /2, dw 64->64
stage2     dw 64->128 /2, 5 x dw 128->128                           16      128
stage3     dw 128->256 /2, dw 256->256                              32      256
=========  =====================================================  ======  ========

Every conv has padding 1 (3x3) or 0 (1x1), so a stride-2 stage maps a side ``s`` to
``ceil(s / 2)``: the feature maps are ``ceil(H / stride)`` as the original's ``PriorBox`` assumes.
The classifier of ``MobileNetV1`` (avg pool + fc) is not part of the detector and is not built.
"""

from typing import Dict, List, Sequence

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from torch import nn

__all__ = [
    "MobileNetV1",
    "DepthwiseSeparable",
    "build_retinaface_mobilenet_backbone",
    "build_mobilenet_fpn_backbone",
]

# (input channels, output channels, stride) of the depthwise-separable blocks per stage; the
# first block of stage1 is a plain 3x3 conv 3 -> 8 with stride 2
_STAGES = {
    "stage1": [(8, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1)],
    "stage2": [(64, 128, 2)] + [(128, 128, 1)] * 5,
    "stage3": [(128, 256, 2), (256, 256, 1)],
}
_STRIDES = {"stage1": 8, "stage2": 16, "stage3": 32}


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv-norm-LeakyReLU then 1x1 pointwise conv-norm-LeakyReLU (``conv_dw``)."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, *, norm: str, slope: float
    ):
        super().__init__()
        self.depthwise = Conv2d(
            in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False,
            norm=get_norm(norm, in_channels), activation=nn.LeakyReLU(slope, inplace=True),
        )  # fmt: skip
        self.pointwise = Conv2d(
            in_channels, out_channels, 1, 1, 0, bias=False,
            norm=get_norm(norm, out_channels), activation=nn.LeakyReLU(slope, inplace=True),
        )  # fmt: skip

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class MobileNetV1(Backbone):
    """MobileNet-0.25 as a D2 backbone: outputs ``{"stage1", "stage2", "stage3"}`` (the chosen
    ``out_features``) at strides 8 / 16 / 32 with 64 / 128 / 256 channels."""

    @configurable
    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_features: Sequence[str] = ("stage1", "stage2", "stage3"),
        norm: str = "BN",
        leaky_relu_slope: float = 0.1,
    ):
        super().__init__()
        unknown = [f for f in out_features if f not in _STAGES]
        if unknown or not out_features:
            raise ValueError(
                f"MobileNetV1: out_features {list(out_features)} must be among {list(_STAGES)}"
            )
        self._out_features = list(out_features)
        last = max(list(_STAGES).index(f) for f in out_features)
        self.stage_names: List[str] = list(_STAGES)[: last + 1]
        for name in self.stage_names:
            blocks = [
                DepthwiseSeparable(i, o, s, norm=norm, slope=leaky_relu_slope)
                for i, o, s in _STAGES[name]
            ]
            if name == "stage1":
                stem = Conv2d(
                    in_channels, 8, 3, 2, 1, bias=False,
                    norm=get_norm(norm, 8), activation=nn.LeakyReLU(leaky_relu_slope, inplace=True),
                )  # fmt: skip
                blocks = [stem] + blocks
            self.add_module(name, nn.Sequential(*blocks))
        self._out_feature_strides = {f: _STRIDES[f] for f in self._out_features}
        self._out_feature_channels = {f: _STAGES[f][-1][1] for f in self._out_features}

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        c = cfg.MODEL.MOBILENET
        return {
            "in_channels": input_shape.channels,
            "out_features": list(c.OUT_FEATURES),
            "norm": c.NORM,
            "leaky_relu_slope": c.LEAKY_RELU_SLOPE,
        }

    def forward(self, x) -> Dict[str, "torch.Tensor"]:  # noqa: F821
        if x.dim() != 4:
            raise ValueError(f"MobileNetV1 takes (N, C, H, W) inputs, got shape {tuple(x.shape)}")
        outputs = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs


@BACKBONE_REGISTRY.register()
def build_retinaface_mobilenet_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """``MODEL.BACKBONE.NAME: build_retinaface_mobilenet_backbone`` (keys ``MODEL.MOBILENET``)."""
    return MobileNetV1(cfg, input_shape)


@BACKBONE_REGISTRY.register()
def build_mobilenet_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """MobileNet-0.25 under D2's own FPN (``MODEL.FPN.*``, no extra P6/P7 level): the backbone
    that puts stock D2 models (e.g. ``RetinaNet`` on p3-p5) on the same features budget as
    RetinaFace's mobilenet setting."""
    return FPN(
        bottom_up=MobileNetV1(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=None,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
