"""Coordinate-regression head (DeepPose-style) on the Stacked Hourglass features: the baseline
the heatmap formulation is measured against, on the same backbone, data and budget."""

import torch
from detectron2.config import configurable
from torch import nn

__all__ = ["CoordinateRegressionHead"]


class CoordinateRegressionHead(nn.Module):
    """Global average pool of (N, C, h, w) features -> FC -> (N, K, 2) xy normalised to the crop
    (0 = the crop's left/top edge, 1 = its right/bottom edge, D2 continuous coordinates divided
    by the crop size)."""

    @configurable
    def __init__(self, *, in_channels: int, num_keypoints: int):
        """
        Args:
            in_channels: C, channels of the features (the hourglass width).
            num_keypoints: K.
        """
        super().__init__()
        self.num_keypoints = num_keypoints
        self.fc = nn.Linear(in_channels, 2 * num_keypoints)
        # start from the crop centre with small weights: the first L1 gradients are then those
        # of a mean-shape fit instead of random offsets of several crop sizes
        nn.init.normal_(self.fc.weight, std=0.001)
        nn.init.constant_(self.fc.bias, 0.5)

    @classmethod
    def from_config(cls, cfg):
        return {
            "in_channels": cfg.MODEL.HOURGLASS.WIDTH,
            "num_keypoints": cfg.MODEL.HOURGLASS.NUM_KEYPOINTS,
        }

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, K, 2) crop-normalised xy."""
        pooled = features.mean(dim=(2, 3))
        return self.fc(pooled).view(-1, self.num_keypoints, 2)
