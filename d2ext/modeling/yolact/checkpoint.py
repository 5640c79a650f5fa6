"""Map official YOLACT checkpoints (dbolya/yolact: ``yolact_resnet50_*.pth``,
``yolact_base_*.pth``) onto d2ext's :class:`YOLACT` parameter names.

Backbone: the original torchvision-style ResNet (stride in the 3x3 conv, so D2's
``RESNETS.STRIDE_IN_1X1: False``) -> D2's ResNet under ``backbone.bottom_up`` (BN -> FrozenBN
buffers). FPN ``lat_layers``/``pred_layers`` are indexed coarse to fine (0 = C5), ours by level.
YOLACT++'s ``FastMaskIoUNet`` (``maskiou_net.maskiou_net.<i>``, built by the original's
``make_net``: conv, ReLU pairs, so the convs sit at even indices) -> :class:`MaskIoUNet`
(``mask_iou_net.net.<i>``, the same indices; ``MODEL.YOLACT.MASK_IOU_ON``).
"""

import re
from typing import Dict, Tuple

import torch

__all__ = ["convert_official_yolact_state_dict"]

_HEAD = {
    "upfeature.0": "upfeature",
    "bbox_layer": "bbox_pred",
    "conf_layer": "cls_logits",
    "mask_layer": "coeff_pred",
}


def _map_key(key: str, num_fpn_inputs: int, last_input_level: int) -> str:
    m = re.fullmatch(r"backbone\.conv1\.(\w+)", key)
    if m:
        return f"backbone.bottom_up.stem.conv1.{m.group(1)}"
    m = re.fullmatch(r"backbone\.bn1\.(\w+)", key)
    if m:
        return f"backbone.bottom_up.stem.conv1.norm.{m.group(1)}"
    m = re.fullmatch(r"backbone\.layers\.(\d+)\.(\d+)\.(.+)", key)
    if m:
        stage, block, rest = int(m.group(1)) + 2, m.group(2), m.group(3)
        prefix = f"backbone.bottom_up.res{stage}.{block}"
        for pat, repl in (
            (r"conv(\d)\.(\w+)", r"conv\1.\2"),
            (r"bn(\d)\.(\w+)", r"conv\1.norm.\2"),
            (r"downsample\.0\.(\w+)", r"shortcut.\1"),
            (r"downsample\.1\.(\w+)", r"shortcut.norm.\1"),
        ):
            if re.fullmatch(pat, rest):
                return f"{prefix}.{re.sub(pat, repl, rest)}"
    m = re.fullmatch(r"fpn\.(lat_layers|pred_layers|downsample_layers)\.(\d+)\.(\w+)", key)
    if m:
        kind, i, p = m.group(1), int(m.group(2)), m.group(3)
        if kind == "downsample_layers":
            return f"backbone.fpn_downsample{last_input_level + 1 + i}.{p}"
        if i >= num_fpn_inputs:
            raise KeyError(key)
        name = "fpn_lateral" if kind == "lat_layers" else "fpn_output"
        return f"backbone.{name}{last_input_level - i}.{p}"
    m = re.fullmatch(r"proto_net\.(\d+)\.(\w+)", key)
    if m:
        return f"proto_net.net.{m.group(1)}.{m.group(2)}"
    m = re.fullmatch(
        r"prediction_layers\.0\.(upfeature\.0|bbox_layer|conf_layer|mask_layer)\.(\w+)", key
    )
    if m:
        return f"head.{_HEAD[m.group(1)]}.{m.group(2)}"
    m = re.fullmatch(r"maskiou_net\.maskiou_net\.(\d+)\.(weight|bias)", key)
    if m:
        return f"mask_iou_net.net.{m.group(1)}.{m.group(2)}"
    m = re.fullmatch(r"semantic_seg_conv\.(\w+)", key)
    if m:
        return key
    raise KeyError(key)


def convert_official_yolact_state_dict(
    state_dict: Dict[str, torch.Tensor], *, last_input_level: int = 5
) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """
    Args:
        state_dict: an official YOLACT state dict (ResNet-50/101 backbone, FPN, protonet,
            shared prediction head, semantic-seg conv, YOLACT++'s mask-IoU net); a ``module.``
            prefix is stripped.
        last_input_level: level of the coarsest FPN input (C5 -> 5).
    Returns:
        (d2ext state dict in float32, {official key: d2ext key}). ``num_batches_tracked``
        buffers are dropped (D2 uses FrozenBN).
    Raises:
        KeyError naming every official key that has no d2ext counterpart (e.g. the deformable
        convs of YOLACT++'s DCN backbone), so nothing is silently lost.
    """
    sd = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    num_fpn_inputs = len({k.split(".")[2] for k in sd if k.startswith("fpn.lat_layers.")})
    out, names, unknown = {}, {}, []
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        try:
            nk = _map_key(k, num_fpn_inputs, last_input_level)
        except KeyError:
            unknown.append(k)
            continue
        out[nk] = v.float() if v.is_floating_point() else v
        names[k] = nk
    if unknown:
        raise KeyError(f"official YOLACT keys with no d2ext counterpart: {unknown}")
    return out, names
