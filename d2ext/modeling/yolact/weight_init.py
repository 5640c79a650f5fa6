"""YOLACT's weight init for everything outside the ImageNet backbone."""

from torch import nn

__all__ = ["yolact_xavier_fill"]


def yolact_xavier_fill(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every ``nn.Conv2d`` in ``module`` (itself
    included), in ``module.modules()`` order: the original's ``Yolact.init_weights`` for the FPN,
    protonet and heads. (D2's ``c2_xavier_fill`` is Caffe2's fan-in-only XavierFill, a different
    bound.)"""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
