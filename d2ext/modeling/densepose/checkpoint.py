"""Load D2 ``projects/DensePose`` chart checkpoints (``densepose_rcnn_R_50_FPN_s1x`` and
kin: ``{"model": {name: ndarray | Tensor}, ...}`` pickles) into d2ext.

Our module names are the original's, so the mapping is the identity:

=============================================  ==========================================
``backbone.*``, ``proposal_generator.*``         stock D2 (ResNet-FPN, RPN)
``roi_heads.box_head.*`` / ``box_predictor.*``   stock D2 ``StandardROIHeads``
``roi_heads.mask_head.*``                        stock D2 (when the checkpoint has one)
``roi_heads.decoder.p{2..5}.{0,2,4}``            :class:`DensePoseDecoder` (s1x, not legacy)
``roi_heads.decoder.predictor``                  its 1x1 conv
``roi_heads.densepose_head.body_conv_fcn{k}``    :class:`DensePoseV1ConvXHead`
``roi_heads.densepose_predictor.{ann_index,      :class:`DensePoseChartPredictor`
index_uv,u,v}_lowres``                           (ConvTranspose2d weights (in, out, k, k))
=============================================  ==========================================

The conversion strips DataParallel's ``module.`` prefix, turns arrays into tensors, drops the
confidence layers of ``...WithConfidencePredictor`` checkpoints trained with confidences on
(``sigma_*``, ``kappa_*``, ``*_confidence_lowres``: they never change the chart outputs) and
rejects any other key, naming it.
"""

import re
from typing import Dict, List, Mapping, Tuple

import numpy as np
import torch

__all__ = ["convert_official_densepose_state_dict"]

_KNOWN = re.compile(
    r"(backbone|proposal_generator)\..+"
    r"|roi_heads\.(box_head|box_predictor|mask_head|keypoint_head)\..+"
    r"|roi_heads\.decoder\.(p\d+\.\d+|predictor)\.(weight|bias|norm\..+)"
    r"|roi_heads\.densepose_head\.body_conv_fcn\d+\.(weight|bias)"
    r"|roi_heads\.densepose_predictor\.(ann_index|index_uv|u|v)_lowres\.(weight|bias)"
)
_CONFIDENCE = re.compile(
    r"roi_heads\.densepose_predictor\."
    r"(sigma_1|sigma_2|kappa_u|kappa_v|fine_segm_confidence|coarse_segm_confidence)_lowres\..+"
)


def convert_official_densepose_state_dict(
    state_dict: Mapping[str, object],
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """``(state_dict, dropped_keys)``: tensors under d2ext names (= the original's) and the
    confidence-layer keys left out. Raises KeyError naming the first unknown key."""
    out: Dict[str, torch.Tensor] = {}
    dropped: List[str] = []
    for key, value in state_dict.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        if _CONFIDENCE.fullmatch(name):
            dropped.append(key)
            continue
        if not _KNOWN.fullmatch(name):
            raise KeyError(
                f"unknown key {key!r} in the DensePose checkpoint (not a D2 DensePose chart "
                "model: expected backbone.*, proposal_generator.*, roi_heads.box_*, "
                "roi_heads.decoder.*, roi_heads.densepose_head.*, roi_heads.densepose_predictor.*)"
            )
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        elif not torch.is_tensor(value):
            raise TypeError(f"{key!r}: expected an array or tensor, got {type(value).__name__}")
        out[name] = value
    return out, dropped
