"""Map official YolactEdge checkpoints (haotian-liu/yolact_edge: ``yolact_edge_*.pth``,
``yolact_edge_vid_*.pth``) onto d2ext's :class:`YolactEdge` parameter names.

The original splits YOLACT's ``fpn`` into ``fpn_phase_1`` (the lateral 1x1 convs) and
``fpn_phase_2`` (the 3x3 output convs and the P6/P7 downsample convs), the same layers under new
names (its own ``load_weights`` renames ``fpn.lat_layers`` -> ``fpn_phase_1`` and the rest of
``fpn.*`` -> ``fpn_phase_2`` to load YOLACT weights). Here they are renamed back and go through
:func:`convert_official_yolact_state_dict` with the backbone, protonet and head:

=========================================================  ==================================
``fpn_phase_1.lat_layers.{0,1,2}.*`` (C5, C4, C3)           ``backbone.fpn_lateral{5,4,3}.*``
``fpn_phase_2.pred_layers.{0,1,2}.*`` (P5, P4, P3)          ``backbone.fpn_output{5,4,3}.*``
``fpn_phase_2.downsample_layers.{0,1}.*`` (P6, P7)          ``backbone.fpn_downsample{6,7}.*``
``flow_net.*``, ``flow_net_pre_convs.*``                    ``flow_net.*`` (:class:`FlowNetMini`,
                                                            ``convert_official_flow_state_dict``)
``spa.refine_convs.{0,1}.0.{weight,bias}`` (P4, P5)         ``spa.refine.{p4,p5}.{weight,bias}``
=========================================================  ==================================

Image checkpoints (``yolact_edge_resnet50_*``, ``warp_mode 'none'``) have no flow net or SPA:
those stay as initialised (D2's checkpointer lists them as missing).
"""

import re
from typing import Dict, Sequence, Tuple

import torch

from d2ext.modeling.common import convert_official_flow_state_dict
from d2ext.modeling.yolact import convert_official_yolact_state_dict

__all__ = ["convert_official_yolact_edge_state_dict"]


def _yolact_name(key: str) -> str:
    """``fpn_phase_1/2.*`` -> the YOLACT checkpoint's ``fpn.*``; other keys unchanged."""
    m = re.fullmatch(r"fpn_phase_1\.(lat_layers\..+)", key)
    if m:
        return f"fpn.{m.group(1)}"
    m = re.fullmatch(r"fpn_phase_2\.((?:pred_layers|downsample_layers)\..+)", key)
    if m:
        return f"fpn.{m.group(1)}"
    return key


def convert_official_yolact_edge_state_dict(
    state_dict: Dict[str, torch.Tensor],
    *,
    last_input_level: int = 5,
    spa_levels: Sequence[str] = ("p4", "p5"),
) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """
    Args:
        state_dict: an official YolactEdge state dict (a ``module.`` prefix is stripped); a
            plain YOLACT one (``fpn.*``) converts as well.
        last_input_level: level of the coarsest FPN input (C5 -> 5).
        spa_levels: the levels of ``spa.refine_convs`` in order
            (``MODEL.YOLACT_EDGE.WARP_FEATURES``).
    Returns:
        (d2ext state dict in float32, {official key: d2ext key}).
    Raises:
        KeyError naming every official key with no d2ext counterpart; ValueError when a
        checkpoint holds a layer under both its YOLACT and its YolactEdge name.
    """
    sd = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    yolact_part: Dict[str, torch.Tensor] = {}
    official_of: Dict[str, str] = {}
    ours: Dict[str, torch.Tensor] = {}
    names: Dict[str, str] = {}
    unknown = []
    for key, value in sd.items():
        if key.startswith(("flow_net.", "flow_net_pre_convs.")):
            try:
                converted, _ = convert_official_flow_state_dict({key: value}, prefix="flow_net.")
            except KeyError:
                unknown.append(key)
                continue
            ((new, tensor),) = converted.items()
            ours[new], names[key] = tensor, new
            continue
        if key.startswith("spa."):
            m = re.fullmatch(r"spa\.refine_convs\.(\d+)\.0\.(weight|bias)", key)
            if m is None or int(m.group(1)) >= len(spa_levels):
                unknown.append(key)
                continue
            new = f"spa.refine.{spa_levels[int(m.group(1))]}.{m.group(2)}"
            ours[new], names[key] = value.float(), new
            continue
        renamed = _yolact_name(key)
        if renamed in official_of:
            raise ValueError(
                f"YolactEdge checkpoint holds {official_of[renamed]!r} and {key!r}: one layer "
                "under both its YOLACT and its YolactEdge name"
            )
        official_of[renamed] = key
        yolact_part[renamed] = value
    if unknown:
        raise KeyError(f"official YolactEdge keys with no d2ext counterpart: {unknown}")
    try:
        converted, yolact_names = convert_official_yolact_state_dict(
            yolact_part, last_input_level=last_input_level
        )
    except KeyError as e:
        raise KeyError(
            f"official YolactEdge keys with no d2ext counterpart (fpn_phase_1/2.* shown under "
            f"YOLACT's fpn.* names): {e.args[0]}"
        ) from None
    ours.update(converted)
    names.update({official_of[k]: v for k, v in yolact_names.items()})
    return ours, names
