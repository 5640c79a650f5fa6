"""Map biubug6/Pytorch_Retinaface checkpoints (``mobilenet0.25_Final.pth``,
``Resnet50_Final.pth``; keys possibly prefixed ``module.`` by DataParallel) onto
:class:`RetinaFace` parameter names. Official -> d2ext:

==========================================  ===============================================
``body.stage{s}.0.{0,1}`` (mnet stem)         ``backbone.stage{s}.0`` / ``.norm``
``body.stage{s}.{i}.{0,1,3,4}`` (mnet dw)     ``backbone.stage{s}.{i}.depthwise`` / ``.norm``,
                                            ``.pointwise`` / ``.norm``
``body.conv1`` / ``body.bn1`` (R-50)          ``backbone.stem.conv1`` / ``.norm``
``body.layer{n}.{i}.conv{k}`` / ``bn{k}``     ``backbone.res{n+1}.{i}.conv{k}`` / ``.norm``
``body.layer{n}.{i}.downsample.{0,1}``        ``backbone.res{n+1}.{i}.shortcut`` / ``.norm``
``fpn.output{k}.{0,1}``                       ``fpn.lateral.{k-1}`` / ``.norm``
``fpn.merge{k}.{0,1}``                        ``fpn.merge.{k-1}`` / ``.norm``
``ssh{k}.conv3X3`` ... ``ssh{k}.conv7x7_3``   ``ssh.{k-1}.conv3x3`` ... ``.conv7x7_3``
``ClassHead`` / ``BboxHead`` / ``LandmarkHead.{i}.conv1x1``  ``class_head`` / ``box_head`` /
                                            ``landmark_head.{i}``
==========================================  ===============================================

The R-50 body is torchvision's ResNet-50 (stride in the 3x3 conv: ``MODEL.RESNETS.STRIDE_IN_1X1
False``). BatchNorm buffers, ``num_batches_tracked`` included, are kept; D2's ``FrozenBN`` loads
them too.
"""

import re
from typing import Dict, Tuple

import torch

__all__ = ["convert_official_retinaface_state_dict", "infer_official_retinaface_backbone"]

_PARAM = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_HEADS = {"ClassHead": "class_head", "BboxHead": "box_head", "LandmarkHead": "landmark_head"}


def _mnet(m) -> str:
    stage, block, layer, param = m.groups()
    if stage == "1" and block == "0":  # stem conv-BN-LeakyReLU
        name = {"0": "", "1": ".norm"}.get(layer)
    else:
        name = {
            "0": ".depthwise",
            "1": ".depthwise.norm",
            "3": ".pointwise",
            "4": ".pointwise.norm",
        }.get(layer)
    if name is None:
        raise KeyError(m.group(0))
    return f"backbone.stage{stage}.{block}{name}.{param}"


def _resnet(m) -> str:
    layer, block, rest, param = m.groups()
    sub = re.fullmatch(r"conv(\d)|bn(\d)|downsample\.(0|1)", rest)
    if sub is None:
        raise KeyError(m.group(0))
    conv, bn, down = sub.groups()
    name = (
        f"conv{conv}"
        if conv
        else f"conv{bn}.norm"
        if bn
        else ("shortcut" if down == "0" else "shortcut.norm")
    )
    return f"backbone.res{int(layer) + 1}.{block}.{name}.{param}"


def _conv_or_norm(prefix: str, index: str, param: str, key: str) -> str:
    if index not in ("0", "1"):
        raise KeyError(key)
    return f"{prefix}.{param}" if index == "0" else f"{prefix}.norm.{param}"


_RULES = (
    (rf"body\.stage(\d)\.(\d+)\.(\d)\.{_PARAM}", _mnet),
    # the ImageNet MobileNet-0.25 the original trains from (mobilenetV1X0.25_pretrain.tar)
    (rf"stage(\d)\.(\d+)\.(\d)\.{_PARAM}", _mnet),
    (rf"body\.conv1\.{_PARAM}", lambda m: f"backbone.stem.conv1.{m.group(1)}"),
    (rf"body\.bn1\.{_PARAM}", lambda m: f"backbone.stem.conv1.norm.{m.group(1)}"),
    (rf"body\.layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.\d)\.{_PARAM}", _resnet),
    (
        rf"fpn\.(output|merge)(\d)\.(\d)\.{_PARAM}",
        lambda m: _conv_or_norm(
            f"fpn.{'lateral' if m.group(1) == 'output' else 'merge'}.{int(m.group(2)) - 1}",
            m.group(3),
            m.group(4),
            m.group(0),
        ),
    ),  # fmt: skip
    (
        rf"ssh(\d)\.conv(\d)[xX](\d)(_\d)?\.(\d)\.{_PARAM}",
        lambda m: _conv_or_norm(
            f"ssh.{int(m.group(1)) - 1}.conv{m.group(2)}x{m.group(3)}{m.group(4) or ''}",
            m.group(5),
            m.group(6),
            m.group(0),
        ),
    ),  # fmt: skip
    (
        r"(ClassHead|BboxHead|LandmarkHead)\.(\d+)\.conv1x1\.(weight|bias)",
        lambda m: f"{_HEADS[m.group(1)]}.{m.group(2)}.{m.group(3)}",
    ),
)


def _map_key(key: str) -> str:
    for pattern, name in _RULES:
        m = re.fullmatch(pattern, key)
        if m:
            return name(m)
    raise KeyError(key)


def infer_official_retinaface_backbone(state_dict: Dict[str, torch.Tensor]) -> str:
    """``"mobilenet0.25"`` or ``"resnet50"`` from the keys of an official checkpoint;
    ``"mobilenet0.25-imagenet"`` for the ImageNet backbone the original trains from."""
    keys = [k[len("module.") :] if k.startswith("module.") else k for k in state_dict]
    if any(k.startswith("stage") for k in keys) and not any(k.startswith("fpn.") for k in keys):
        return "mobilenet0.25-imagenet"
    if any(k.startswith("body.stage") for k in keys):
        return "mobilenet0.25"
    if any(k.startswith("body.layer") for k in keys):
        return "resnet50"
    raise ValueError("not a biubug6 RetinaFace checkpoint: no body.stage* or body.layer* keys")


def convert_official_retinaface_state_dict(
    state_dict: Dict[str, torch.Tensor],
) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Returns (d2ext state dict, {official key: d2ext key}). An unknown key is a ``KeyError``
    naming it. The ImageNet backbone's classifier (``fc.*``) is dropped."""
    out, names = {}, {}
    for key, value in state_dict.items():
        k = key[len("module.") :] if key.startswith("module.") else key
        if k.startswith("fc."):
            continue
        try:
            new = _map_key(k)
        except KeyError:
            raise KeyError(f"official RetinaFace key {key!r} has no d2ext counterpart") from None
        out[new] = value
        names[key] = new
    return out, names
