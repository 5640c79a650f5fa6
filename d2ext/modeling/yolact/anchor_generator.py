"""YOLACT priors from D2's anchor generator.

Two differences from :class:`DefaultAnchorGenerator`, both needed to reproduce the original:

- anchor centres are ``(i + offset) * S / w`` for a feature map of width ``w`` and an S x S
  input (the original's ``(i + 0.5) / conv_w``), not ``(i + offset) * stride``: at 550 px the
  P3 map is 69 wide, so the effective stride is 550/69, not 8;
- ``square_anchors`` reproduces the original ``use_square_anchors`` quirk: every anchor takes
  the width D2 computes for its aspect ratio as both sides, i.e. sides s*{1, sqrt(1/2), sqrt(2)}
  for D2 aspect ratios (h/w) [1, 2, 0.5], which the original writes as w/h ratios [1, 1/2, 2].
"""

from typing import List, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling.anchor_generator import ANCHOR_GENERATOR_REGISTRY, DefaultAnchorGenerator
from detectron2.structures import Boxes

__all__ = ["YOLACTAnchorGenerator"]


@ANCHOR_GENERATOR_REGISTRY.register()
class YOLACTAnchorGenerator(DefaultAnchorGenerator):
    """Anchors (XYXY, absolute pixels of the S x S network input), ordered like the original's
    priors and like the head's outputs: per level, row-major cells, then the cell's anchors."""

    @configurable
    def __init__(self, *, square_anchors: bool = False, **kwargs):
        self.square_anchors = square_anchors
        super().__init__(**kwargs)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["square_anchors"] = cfg.MODEL.YOLACT.SQUARE_ANCHORS
        return ret

    def generate_cell_anchors(self, sizes=(32, 64, 128, 256, 512), aspect_ratios=(0.5, 1, 2)):
        anchors = super().generate_cell_anchors(sizes, aspect_ratios)
        if self.square_anchors:
            half_w = (anchors[:, 2] - anchors[:, 0]) / 2
            anchors = torch.stack([-half_w, -half_w, half_w, half_w], dim=1)
        return anchors

    def forward_for_image_size(
        self, features: Sequence[torch.Tensor], image_size: Tuple[int, int]
    ) -> List[Boxes]:
        """
        Args:
            features: per-level maps (N, C, h_l, w_l).
            image_size: (H, W) of the network input the maps were computed from.
        Returns:
            per level, Boxes of (h_l * w_l * A, 4) XYXY in input pixels.
        """
        H, W = image_size
        out = []
        for feat, base in zip(features, self.cell_anchors):
            h, w = feat.shape[-2:]
            dev = base.device
            xs = (torch.arange(w, dtype=torch.float32, device=dev) + self.offset) * (W / w)
            ys = (torch.arange(h, dtype=torch.float32, device=dev) + self.offset) * (H / h)
            sy, sx = torch.meshgrid(ys, xs, indexing="ij")
            sx, sy = sx.reshape(-1), sy.reshape(-1)
            shifts = torch.stack((sx, sy, sx, sy), dim=1)
            out.append(Boxes((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4)))
        return out
