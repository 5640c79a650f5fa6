"""RetinaFace's neck (biubug6/Pytorch_Retinaface ``models/net.py``): its own FPN and the SSH
context module (Najibi et al., ICCV 2017) applied to every level.

* :class:`RetinaFaceFPN`: 1x1 conv-BN-LeakyReLU laterals on the three inputs; top-down, each
  coarser level is nearest-upsampled to the finer one's size and ADDED, then a 3x3
  conv-BN-LeakyReLU merges it (the coarsest level has no merge conv); no extra P6 level. This
  differs from D2's FPN (no norm / activation there, a 3x3 output conv on every level).
* :class:`SSH`: a 3x3 branch with C/2 channels, a "5x5" branch (two 3x3, C/4) and a "7x7"
  branch (three 3x3, C/4, its first conv shared with the 5x5 branch); each branch ends without
  activation, the concatenation goes through a ReLU.

The LeakyReLU slope is the original's rule: 0.1 when the output width is <= 64, else 0 (a plain
ReLU); ``leaky_relu_slope`` overrides it.
"""

from typing import List, Sequence

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, get_norm
from torch import nn

__all__ = ["RetinaFaceFPN", "SSH", "default_leaky_relu_slope"]


def default_leaky_relu_slope(out_channels: int) -> float:
    """The original's ``leaky = 0.1 if out_channel <= 64 else 0``."""
    return 0.1 if out_channels <= 64 else 0.0


def _conv_bn(cin: int, cout: int, k: int, norm: str, slope=None) -> Conv2d:
    """k x k conv (no bias), norm, then LeakyReLU(slope) unless ``slope`` is None."""
    act = None if slope is None else nn.LeakyReLU(slope, inplace=True)
    return Conv2d(cin, cout, k, 1, k // 2, bias=False, norm=get_norm(norm, cout), activation=act)


class RetinaFaceFPN(nn.Module):
    """Inputs: a list of 3 maps, fine to coarse; outputs a list of 3 maps with ``out_channels``
    channels at the inputs' resolutions."""

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        *,
        norm: str = "BN",
        leaky_relu_slope: float = None,
    ):
        super().__init__()
        if leaky_relu_slope is None:
            leaky_relu_slope = default_leaky_relu_slope(out_channels)
        self.lateral = nn.ModuleList(
            _conv_bn(c, out_channels, 1, norm, leaky_relu_slope) for c in in_channels
        )
        self.merge = nn.ModuleList(
            _conv_bn(out_channels, out_channels, 3, norm, leaky_relu_slope)
            for _ in range(len(in_channels) - 1)
        )

    def forward(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        if len(features) != len(self.lateral):
            raise ValueError(
                f"RetinaFaceFPN: expected {len(self.lateral)} maps, got {len(features)}"
            )
        outs = [lateral(f) for lateral, f in zip(self.lateral, features)]
        for i in range(len(outs) - 2, -1, -1):
            up = F.interpolate(outs[i + 1], size=outs[i].shape[-2:], mode="nearest")
            outs[i] = self.merge[i](outs[i] + up)
        return outs


class SSH(nn.Module):
    """SSH context module; ``out_channels`` must be divisible by 4."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        norm: str = "BN",
        leaky_relu_slope: float = None,
    ):
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"SSH: out_channels must be divisible by 4, got {out_channels}")
        if leaky_relu_slope is None:
            leaky_relu_slope = default_leaky_relu_slope(out_channels)
        q = out_channels // 4
        self.conv3x3 = _conv_bn(in_channels, out_channels // 2, 3, norm)
        self.conv5x5_1 = _conv_bn(in_channels, q, 3, norm, leaky_relu_slope)
        self.conv5x5_2 = _conv_bn(q, q, 3, norm)
        self.conv7x7_2 = _conv_bn(q, q, 3, norm, leaky_relu_slope)
        self.conv7x7_3 = _conv_bn(q, q, 3, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5_1 = self.conv5x5_1(x)
        out = torch.cat(
            [self.conv3x3(x), self.conv5x5_2(branch5_1), self.conv7x7_3(self.conv7x7_2(branch5_1))],
            dim=1,
        )
        return F.relu(out)
