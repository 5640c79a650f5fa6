"""Stacked Hourglass network (Newell et al., ECCV 2016) as a D2 backbone.

Architecture and numerics follow princeton-vl/pytorch_stacked_hourglass (``models/posenet.py``,
``models/layers.py``), so its checkpoints load through
:func:`d2ext.modeling.hourglass.convert_official_hourglass_state_dict`:

* every block is a pre-activation bottleneck (BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1,
  all convs with bias, middle width ``out // 2``) plus a 1x1 ``shortcut`` conv that is only used
  when the channel count changes. The original builds that conv in *every* block; it is kept
  here too (frozen when unused, so DDP sees no parameter without a gradient) because official
  checkpoints carry its weights.
* an hourglass level runs its input through a residual at full resolution (the skip branch) and
  through max-pool 2x2 -> residual -> inner level -> residual -> nearest x2 upsampling, and
  ADDS the two (not concatenates, the difference to U-Net). The innermost level's "inner
  level" is one more residual.
* stem: conv7x7/2 (+BN+ReLU) -> residual 64->128 -> max-pool 2x2 -> residual -> residual to
  ``width``, i.e. stride 4 (256x256 input -> 64x64 maps).
* stack ``i``: hourglass -> residual -> 1x1 conv+BN+ReLU (features) -> 1x1 conv to K heatmaps;
  the next stack's input is ``x + merge_preds(heatmaps) + merge_features(features)``.

Input: (N, C, H, W) float. The official weights were trained on RGB in [0, 1] (``img / 255``,
no mean subtraction; the original permutes an NHWC batch itself), so a model loading them sets
``INPUT.FORMAT: RGB``, ``MODEL.PIXEL_MEAN: [0, 0, 0]``, ``MODEL.PIXEL_STD: [255, 255, 255]``.
"""

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

__all__ = ["PreActBottleneck", "Hourglass", "HourglassStem", "HourglassStack", "StackedHourglass"]


class PreActBottleneck(nn.Module):
    """The original's ``Residual``: ``conv3(relu(bn3(conv2(relu(bn2(conv1(relu(bn1(x)))))))))``
    plus ``x`` (same channels) or ``shortcut(x)`` (a 1x1 conv with bias; channels change)."""

    def __init__(self, in_channels: int, out_channels: int, *, norm: str = "BN"):
        super().__init__()
        mid = out_channels // 2
        self.bn1 = get_norm(norm, in_channels)
        self.conv1 = Conv2d(in_channels, mid, 1)
        self.bn2 = get_norm(norm, mid)
        self.conv2 = Conv2d(mid, mid, 3, padding=1)
        self.bn3 = get_norm(norm, mid)
        self.conv3 = Conv2d(mid, out_channels, 1)
        # built even when unused: official checkpoints hold it (their ``skip_layer``)
        self.shortcut = Conv2d(in_channels, out_channels, 1)
        self.use_shortcut = in_channels != out_channels
        if not self.use_shortcut:
            self.shortcut.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.shortcut(x) if self.use_shortcut else x
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + identity


class Hourglass(nn.Module):
    """One hourglass of ``depth`` levels on (N, channels, h, w), h and w divisible by 2^depth;
    the output has the input's shape.

    Level names (official in brackets): ``skip`` (``up1``), ``down`` (``low1``), ``inner``
    (``low2``: the next level, or a residual at the innermost), ``up`` (``low3``).
    """

    def __init__(self, depth: int, channels: int, *, increase: int = 0, norm: str = "BN"):
        """
        Args:
            depth: number of 2x poolings (4 in the paper).
            channels: input/output channels.
            increase: extra channels of this level's lower branch. As in the original it is not
                passed to the inner levels: they run at ``channels + increase`` throughout.
        """
        super().__init__()
        inner_channels = channels + increase
        self.depth = depth
        self.skip = PreActBottleneck(channels, channels, norm=norm)
        self.down = PreActBottleneck(channels, inner_channels, norm=norm)
        if depth > 1:
            self.inner = Hourglass(depth - 1, inner_channels, norm=norm)
        else:
            self.inner = PreActBottleneck(inner_channels, inner_channels, norm=norm)
        self.up = PreActBottleneck(inner_channels, channels, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(x)
        low = self.up(self.inner(self.down(F.max_pool2d(x, 2, 2))))
        return skip + F.interpolate(low, scale_factor=2.0, mode="nearest")


class HourglassStem(nn.Module):
    """The original's ``pre``: conv7x7/2 (+BN+ReLU) to 64 -> ``res1`` 64->128 -> max-pool
    2x2 -> ``res2`` 128->128 -> ``res3`` 128->width. (N, C, H, W) -> (N, width, H/4, W/4)."""

    def __init__(self, in_channels: int, width: int, *, norm: str = "BN"):
        super().__init__()
        self.conv1 = Conv2d(
            in_channels, 64, 7, stride=2, padding=3, norm=get_norm(norm, 64), activation=F.relu
        )
        self.res1 = PreActBottleneck(64, 128, norm=norm)
        self.res2 = PreActBottleneck(128, 128, norm=norm)
        self.res3 = PreActBottleneck(128, width, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.res1(self.conv1(x)), 2, 2)
        return self.res3(self.res2(x))


class HourglassStack(nn.Module):
    """One stack: hourglass -> residual -> ``feature`` (1x1 conv+BN+ReLU) -> ``predictor``
    (1x1 conv to K heatmaps). Unless it is the last stack it also holds the two 1x1 convs that
    map its features and heatmaps back into the next stack's input."""

    def __init__(
        self,
        width: int,
        num_keypoints: int,
        *,
        depth: int,
        increase: int = 0,
        last: bool = False,
        norm: str = "BN",
    ):
        super().__init__()
        self.hourglass = Hourglass(depth, width, increase=increase, norm=norm)
        self.residual = PreActBottleneck(width, width, norm=norm)
        self.feature = Conv2d(width, width, 1, norm=get_norm(norm, width), activation=F.relu)
        self.predictor = Conv2d(width, num_keypoints, 1)
        self.merge_features = None if last else Conv2d(width, width, 1)
        self.merge_preds = None if last else Conv2d(num_keypoints, width, 1)

    def forward(self, x: torch.Tensor):
        """Returns (heatmaps (N, K, h, w), the next stack's input (N, width, h, w) or None)."""
        heatmaps, _, next_input = self.forward_features(x)
        return heatmaps, next_input

    def forward_features(self, x: torch.Tensor):
        """:meth:`forward` plus the features its predictor reads: (heatmaps (N, K, h, w),
        features (N, width, h, w), the next stack's input or None)."""
        feature = self.feature(self.residual(self.hourglass(x)))
        heatmaps = self.predictor(feature)
        if self.merge_features is None:
            return heatmaps, feature, None
        return heatmaps, feature, x + self.merge_preds(heatmaps) + self.merge_features(feature)


@BACKBONE_REGISTRY.register()
class StackedHourglass(Backbone):
    """Stacked Hourglass returning every stack's heatmaps, for intermediate supervision.

    ``forward(x)`` with x (N, C, H, W), H and W divisible by ``size_divisibility``
    (4 * 2^depth) -> ``{"stack0": (N, K, H/4, W/4), ..., "stack{S-1}": ...}`` (raw heatmaps,
    no activation; the last stack is the prediction). :meth:`stack_heatmaps` turns that dict
    into the original's (N, S, K, H/4, W/4) tensor.
    """

    @configurable
    def __init__(
        self,
        *,
        num_stacks: int,
        width: int,
        num_keypoints: int,
        depth: int = 4,
        increase: int = 0,
        in_channels: int = 3,
        norm: str = "BN",
    ):
        """
        Args:
            num_stacks: S, the number of hourglasses (the original's ``nstack``; 8 in the paper).
            width: channels of every hourglass (``inp_dim``; 256 in the paper).
            num_keypoints: K, heatmaps per stack (``oup_dim``; 16 MPII joints).
            depth: 2x poolings per hourglass (4 in the original, fixed there).
            increase: extra channels of each hourglass's outer lower branch (``increase``, 0).
            in_channels: image channels (3).
            norm: D2 norm name for every BN (``"BN"`` as the original; e.g. ``"SyncBN"``).
        """
        super().__init__()
        for name, value, low in (
            ("num_stacks", num_stacks, 1),
            ("width", width, 2),
            ("num_keypoints", num_keypoints, 1),
            ("depth", depth, 1),
            ("increase", increase, 0),
            ("in_channels", in_channels, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"StackedHourglass: {name} must be an int >= {low}, got {value!r}")
        self.num_stacks = num_stacks
        self.num_keypoints = num_keypoints
        self.depth = depth
        self.stem = HourglassStem(in_channels, width, norm=norm)
        self.stacks = nn.ModuleList(
            HourglassStack(
                width,
                num_keypoints,
                depth=depth,
                increase=increase,
                last=i == num_stacks - 1,
                norm=norm,
            )
            for i in range(num_stacks)
        )
        self._out_features = [f"stack{i}" for i in range(num_stacks)]
        self._out_feature_channels = {f: num_keypoints for f in self._out_features}
        self._out_feature_strides = {f: 4 for f in self._out_features}

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        hg = cfg.MODEL.HOURGLASS
        return {
            "num_stacks": hg.NUM_STACKS,
            "width": hg.WIDTH,
            "num_keypoints": hg.NUM_KEYPOINTS,
            "depth": hg.DEPTH,
            "increase": hg.INCREASE,
            "in_channels": input_shape.channels,
            "norm": hg.NORM,
        }

    @property
    def size_divisibility(self) -> int:
        # stride 4 of the stem, then `depth` 2x poolings whose upsampled maps must match
        return 4 * 2**self.depth

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x: (N, C, H, W) normalised images (see the module docstring for the official
                weights' normalisation), H and W divisible by ``size_divisibility``.
        Returns:
            ``{"stack{i}": (N, K, H/4, W/4)}`` raw heatmaps of every stack, in stack order.
        """
        return self.forward_with_features(x)[0]

    def forward_with_features(
        self, x: torch.Tensor
    ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """:meth:`forward`'s dict and the last stack's features (N, width, H/4, W/4), the
        1x1 conv-BN-ReLU output its heatmap predictor reads (a coordinate-regression head's
        input)."""
        if x.dim() != 4:
            raise ValueError(f"StackedHourglass: expected (N, C, H, W) input, got {tuple(x.shape)}")
        d = self.size_divisibility
        if x.shape[-2] % d or x.shape[-1] % d:
            raise ValueError(
                f"StackedHourglass: input size {tuple(x.shape[-2:])} must be divisible by {d} "
                f"(stride 4 times 2^depth, depth={self.depth}); pad it (ImageList.from_tensors "
                f"with size_divisibility={d})"
            )
        x = self.stem(x)
        outputs = {}
        for name, stack in zip(self._out_features, self.stacks):
            outputs[name], feature, x = stack.forward_features(x)
        return outputs, feature

    def stack_heatmaps(self, outputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """``forward``'s dict -> (N, S, K, h, w), stacks in order (the original's output)."""
        return torch.stack([outputs[f] for f in self._out_features], dim=1)

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {f: ShapeSpec(channels=self.num_keypoints, stride=4) for f in self._out_features}
