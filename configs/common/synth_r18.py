"""LazyConfig helper shared by the *_R_18_*synth.py configs (the LazyConfig form of the R-18 keys
in configs/Base/Base-synth-R18.yaml)."""


def resnet18_from_scratch(bottom_up) -> None:
    """Turn a model-zoo ``L(ResNet)`` (R-50 defaults) into ResNet-18 with trainable BatchNorm and
    no frozen stage: no pretrained weights can be loaded, and FrozenBN from scratch would freeze
    identity statistics."""
    bottom_up.stem.norm = "BN"
    bottom_up.stages.depth = 18
    bottom_up.stages.norm = "BN"
    del bottom_up.stages.stride_in_1x1  # BasicBlock has no 1x1 conv
    bottom_up.freeze_at = 0
