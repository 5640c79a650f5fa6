"""Whole-model gradient-norm clipping (``SOLVER.CLIP_GRADIENTS.CLIP_TYPE: "full_model"``).

D2 clips each parameter's gradient on its own (``"value"``, ``"norm"``); mmdetection-based
originals (VPSNet: ``optimizer_config = dict(grad_clip=dict(max_norm=35, norm_type=2))``) clip
the norm of all gradients together, which keeps the direction of the whole update. D2's own
optimizer wrapper has the hook for it (``global_clipper``); this fills it with
``clip_grad_norm_``.
"""

import functools
from typing import Type

import torch
from detectron2.solver.build import _generate_optimizer_class_with_gradient_clipping

__all__ = ["full_model_gradient_clipping"]


def full_model_gradient_clipping(
    optimizer_class: Type[torch.optim.Optimizer], max_norm: float, norm_type: float = 2.0
) -> Type[torch.optim.Optimizer]:
    """``optimizer_class`` whose ``step`` first scales all gradients of its parameter groups so
    that their joint ``norm_type``-norm is at most ``max_norm`` (``clip_grad_norm_``)."""
    if max_norm <= 0:
        raise ValueError(f"full-model gradient clipping needs max_norm > 0, got {max_norm}")
    clipper = functools.partial(
        torch.nn.utils.clip_grad_norm_, max_norm=max_norm, norm_type=norm_type
    )
    cls = _generate_optimizer_class_with_gradient_clipping(optimizer_class, global_clipper=clipper)
    # named apart from D2's per-parameter "...WithGradientClip"
    cls.__name__ = cls.__qualname__ = f"{optimizer_class.__name__}WithFullModelGradientClip"
    return cls
