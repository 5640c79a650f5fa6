"""YolactEdge's ``SPA`` module (the original's name, ``flow.use_spa``): refines the warped
keyframe features of a non-keyframe with the current frame's own C3 lateral."""

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d
from torch import nn

__all__ = ["SPA"]


class SPA(nn.Module):
    """``x + LeakyReLU_0.1(conv3x3(cat(x, c3)))`` per warped level, fine to coarse, where ``c3``
    is the current C3 lateral resized (``interpolation_mode``, ``align_corners=False``) to that
    level.

    Parity quirk of the original (``yolact_edge/yolact.py`` ``SPA.forward``): the resized map
    replaces ``c3`` as it goes, so P5's ``c3`` is the P4-sized map resized again to P5, not the
    lateral resized once.

    Init as the original: kaiming-normal (a=0.1, fan_in) weights, zero biases.
    """

    def __init__(
        self, *, channels: int, levels: Sequence[str], interpolation_mode: str = "bilinear"
    ):
        """
        Args:
            channels: FPN width (``MODEL.YOLACT.FPN_OUT_CHANNELS``).
            levels: the refined levels, fine to coarse (``MODEL.YOLACT_EDGE.WARP_FEATURES``).
            interpolation_mode: ``F.interpolate`` mode of the resizes (the original's
                ``fpn.interpolation_mode``).
        """
        super().__init__()
        self.levels = list(levels)
        self.interpolation_mode = interpolation_mode
        self.refine = nn.ModuleDict(
            {
                level: Conv2d(2 * channels, channels, 3, padding=1, activation=nn.LeakyReLU(0.1))
                for level in self.levels
            }
        )
        for conv in self.refine.values():
            nn.init.kaiming_normal_(conv.weight, a=0.1, mode="fan_in")
            nn.init.zeros_(conv.bias)

    def forward(
        self, lateral: torch.Tensor, features: Dict[str, torch.Tensor]
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            lateral: (N, C, H3, W3) the current frame's C3 lateral.
            features: ``{level: (N, C, h, w)}`` warped features of every level in ``levels``.
        Returns:
            ``{level: refined (N, C, h, w)}``.
        """
        out = {}
        c3 = lateral
        for level in self.levels:
            x = features[level]
            c3 = F.interpolate(
                c3, size=x.shape[-2:], mode=self.interpolation_mode, align_corners=False
            )
            out[level] = x + self.refine[level](torch.cat((x, c3), dim=1))
        return out
