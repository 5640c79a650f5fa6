"""Chart predictor (D2 DensePose ``DensePoseChartPredictor``; the config default
``...WithConfidencePredictor`` with confidences off computes the same): per ROI, coarse
segmentation, fine segmentation (parts + background) and U, V per part, as raw logits / raw
coordinates (no sigmoid)."""

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ConvTranspose2d
from torch import nn

from .inference import DensePoseChartPredictorOutput

__all__ = ["DensePoseChartPredictor"]


class DensePoseChartPredictor(nn.Module):
    """Four ``ConvTranspose2d(k=deconv_kernel, stride 2, pad k/2 - 1)`` (S -> 2S), then
    bilinear upsampling by ``up_scale`` (``align_corners=False``): (R, C_in, S, S) ->
    coarse_segm (R, num_coarse_segm_channels, H, H), fine_segm / u / v (R, num_patches + 1,
    H, H) with H = 2 * S * up_scale (112 for the s1x 28 x 28 pooler)."""

    @configurable
    def __init__(
        self,
        in_channels: int,
        *,
        num_coarse_segm_channels: int,
        num_patches: int,
        deconv_kernel: int,
        up_scale: int,
    ):
        super().__init__()
        pad = int(deconv_kernel / 2 - 1)
        n_parts = num_patches + 1

        def deconv(n_out: int) -> nn.Module:
            layer = ConvTranspose2d(in_channels, n_out, deconv_kernel, stride=2, padding=pad)
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
            return layer

        self.ann_index_lowres = deconv(num_coarse_segm_channels)  # coarse segmentation
        self.index_uv_lowres = deconv(n_parts)  # fine segmentation
        self.u_lowres = deconv(n_parts)
        self.v_lowres = deconv(n_parts)
        self.up_scale = up_scale

    @classmethod
    def from_config(cls, cfg, in_channels: int):
        h = cfg.MODEL.ROI_DENSEPOSE_HEAD
        return {
            "in_channels": in_channels,
            "num_coarse_segm_channels": h.NUM_COARSE_SEGM_CHANNELS,
            "num_patches": h.NUM_PATCHES,
            "deconv_kernel": h.DECONV_KERNEL,
            "up_scale": h.UP_SCALE,
        }

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.up_scale, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> DensePoseChartPredictorOutput:
        return DensePoseChartPredictorOutput(
            coarse_segm=self._up(self.ann_index_lowres(x)),
            fine_segm=self._up(self.index_uv_lowres(x)),
            u=self._up(self.u_lowres(x)),
            v=self._up(self.v_lowres(x)),
        )
