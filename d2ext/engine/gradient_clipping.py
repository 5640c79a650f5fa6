"""Whole-model gradient-norm clipping (``SOLVER.CLIP_GRADIENTS.CLIP_TYPE: "full_model"``).

D2 clips each parameter's gradient on its own (``"value"``, ``"norm"``); mmdetection-based
originals (VPSNet: ``optimizer_config = dict(grad_clip=dict(max_norm=35, norm_type=2))``) clip
the norm of all gradients together, which keeps the direction of the whole update. The optimizer
class is extended as D2 extends it for its own clipping (a subclass whose ``step`` clips first).
"""

from typing import Type

import torch

__all__ = ["full_model_gradient_clipping"]


def full_model_gradient_clipping(
    optimizer_class: Type[torch.optim.Optimizer], max_norm: float, norm_type: float = 2.0
) -> Type[torch.optim.Optimizer]:
    """``optimizer_class`` whose ``step`` first scales all gradients of its parameter groups so
    that their joint ``norm_type``-norm is at most ``max_norm`` (``clip_grad_norm_``)."""
    if max_norm <= 0:
        raise ValueError(f"full-model gradient clipping needs max_norm > 0, got {max_norm}")

    class FullModelGradientClipping(optimizer_class):
        def step(self, closure=None):
            params = [p for group in self.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
            return super().step(closure)

    FullModelGradientClipping.__name__ = f"{optimizer_class.__name__}WithFullModelGradientClip"
    FullModelGradientClipping.__qualname__ = FullModelGradientClipping.__name__
    return FullModelGradientClipping
