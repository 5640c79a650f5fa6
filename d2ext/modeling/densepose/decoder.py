"""The s1x configs' decoder (``DECODER_ON``): a Panoptic-FPN-style semantic head that merges
the FPN levels into one map of ``DECODER_COMMON_STRIDE``, the only map the DensePose pooler
reads. Module names (``p2`` ... ``p5`` Sequentials, ``predictor``) are D2 DensePose's, so its
checkpoints load as they are."""

from typing import Dict, List

import fvcore.nn.weight_init as weight_init
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import nn

__all__ = ["DensePoseDecoder"]


class DensePoseDecoder(nn.Module):
    """Per level ``f`` of stride ``s``: ``max(1, log2(s / common_stride))`` blocks of
    3x3 conv (+ norm) + ReLU, each followed by x2 bilinear upsampling (``align_corners=False``)
    while the level is coarser than ``common_stride``; the levels are summed and a 1x1
    ``predictor`` (no activation) gives ``num_classes`` channels.

    Input: dict ``{f: (N, C_f, H_f, W_f)}``; output: (N, num_classes, H_0, W_0) at the stride
    of the first of ``in_features`` (= ``common_stride``).
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        in_features: List[str],
        conv_dims: int,
        num_classes: int,
        common_stride: int,
        norm: str = "",
    ):
        super().__init__()
        self.in_features = list(in_features)
        for f in self.in_features:
            stride = input_shape[f].stride
            num_blocks = max(1, int(np.log2(stride) - np.log2(common_stride)))
            ops: List[nn.Module] = []
            for k in range(num_blocks):
                conv = Conv2d(
                    input_shape[f].channels if k == 0 else conv_dims,
                    conv_dims,
                    kernel_size=3,
                    padding=1,
                    bias=not norm,
                    norm=get_norm(norm, conv_dims),
                    activation=F.relu,
                )
                weight_init.c2_msra_fill(conv)
                ops.append(conv)
                if stride != common_stride:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            # registered under the feature name: ``decoder.p4.2`` is p4's second conv
            self.add_module(f, nn.Sequential(*ops))
        self.predictor = Conv2d(conv_dims, num_classes, kernel_size=1)
        weight_init.c2_msra_fill(self.predictor)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        h = cfg.MODEL.ROI_DENSEPOSE_HEAD
        return {
            "input_shape": input_shape,
            "in_features": cfg.MODEL.ROI_HEADS.IN_FEATURES,
            "conv_dims": h.DECODER_CONV_DIMS,
            "num_classes": h.DECODER_NUM_CLASSES,
            "common_stride": h.DECODER_COMMON_STRIDE,
            "norm": h.DECODER_NORM,
        }

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        x = None
        for f in self.in_features:
            y = getattr(self, f)(features[f])
            x = y if x is None else x + y
        return self.predictor(x)
