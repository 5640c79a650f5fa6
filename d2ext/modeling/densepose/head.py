"""DensePose head of the s1x configs (``DensePoseV1ConvXHead``): stacked convs + ReLU on the
pooled ROI features. Parameter names ``body_conv_fcn{1..n}`` are D2 DensePose's."""

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d
from torch import nn

__all__ = ["DensePoseV1ConvXHead"]


class DensePoseV1ConvXHead(nn.Module):
    """``num_stacked_convs`` convs of ``conv_dim`` channels and ``kernel_size`` ("same"
    padding), each + ReLU: (R, in_channels, S, S) -> (R, conv_dim, S, S)."""

    @configurable
    def __init__(
        self, in_channels: int, *, num_stacked_convs: int, conv_dim: int, kernel_size: int
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(
                f"CONV_HEAD_KERNEL must be odd to keep the ROI size, got {kernel_size}"
            )
        self.num_stacked_convs = num_stacked_convs
        n_in = in_channels
        for k in range(1, num_stacked_convs + 1):
            conv = Conv2d(n_in, conv_dim, kernel_size, padding=kernel_size // 2)
            # the original's initialisation: He (fan_out) weights, zero biases
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            self.add_module(f"body_conv_fcn{k}", conv)
            n_in = conv_dim
        self.n_out_channels = n_in

    @classmethod
    def from_config(cls, cfg, in_channels: int):
        h = cfg.MODEL.ROI_DENSEPOSE_HEAD
        return {
            "in_channels": in_channels,
            "num_stacked_convs": h.NUM_STACKED_CONVS,
            "conv_dim": h.CONV_HEAD_DIM,
            "kernel_size": h.CONV_HEAD_KERNEL,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k in range(1, self.num_stacked_convs + 1):
            x = F.relu(getattr(self, f"body_conv_fcn{k}")(x))
        return x
