"""Losses of the top-down landmark model: heatmap MSE on every stack, and the L1 of the
coordinate-regression baseline. None of them is NaN for instances without labelled points."""

from typing import Sequence

import torch

__all__ = ["HEATMAP_LOSSES", "heatmap_mse_loss", "keypoint_l1_loss"]

HEATMAP_LOSSES = ("mse_weighted", "princeton")


def heatmap_mse_loss(
    stack_heatmaps: Sequence[torch.Tensor],
    targets: torch.Tensor,
    target_weights: torch.Tensor,
    mode: str = "mse_weighted",
) -> torch.Tensor:
    """Intermediate supervision: the same targets for every stack's heatmaps.

    Args:
        stack_heatmaps: S tensors (N, K, H, W), one per stack.
        targets: (N, K, H, W) Gaussian targets (all-zero maps for unlabelled points).
        target_weights: (N, K) 0/1 weights of the codec.
        mode: ``"mse_weighted"`` - mmpose's ``KeypointMSELoss(use_target_weight=True)`` per
            stack (the mean over N*K*H*W of ``w_k (pred - target)^2``), summed over the stacks;
            ``"princeton"`` - the original's ``HeatmapLoss`` (plain mean squared error, no
            weights: unlabelled points are trained toward an empty map) per stack, averaged over
            the stacks (``torch.mean`` of its (N, S) loss in ``task/pose.py``).

    Returns:
        scalar loss; 0 (with a gradient) when every weight is 0 in ``"mse_weighted"`` mode.
    """
    if mode not in HEATMAP_LOSSES:
        raise ValueError(f"heatmap loss mode must be one of {HEATMAP_LOSSES}, got {mode!r}")
    if not stack_heatmaps or targets.numel() == 0:
        raise ValueError("heatmap_mse_loss needs at least one stack and one instance")
    losses = []
    for heatmaps in stack_heatmaps:
        if heatmaps.shape != targets.shape:
            raise ValueError(
                f"heatmaps {tuple(heatmaps.shape)} and targets {tuple(targets.shape)} differ"
            )
        squared = (heatmaps - targets) ** 2
        if mode == "mse_weighted":
            squared = squared * target_weights[:, :, None, None]
        losses.append(squared.mean())
    total = torch.stack(losses).sum()
    return total / len(losses) if mode == "princeton" else total


def keypoint_l1_loss(
    pred: torch.Tensor, target: torch.Tensor, target_weights: torch.Tensor
) -> torch.Tensor:
    """mmpose's ``L1Loss(use_target_weight=True)``: the mean over N*K*2 of ``w_k |pred -
    target|``.

    Args:
        pred, target: (N, K, 2) coordinates (here normalised to the crop, [0, 1]).
        target_weights: (N, K) 0/1 weights (labelled and inside the crop).
    """
    if pred.shape != target.shape or pred.shape[:2] != target_weights.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and target_weights "
            f"{tuple(target_weights.shape)} do not match"
        )
    return ((pred - target).abs() * target_weights[..., None]).mean()
