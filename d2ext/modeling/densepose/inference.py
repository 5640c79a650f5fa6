"""DensePose chart outputs per detection (:class:`DensePoseChartPredictorOutput`, the
``pred_densepose`` field of the model's ``Instances``) and their conversion to per-box
part labels and UV maps (:func:`densepose_chart_results`), as D2 DensePose's
``ToChartResultConverter`` does it — the function the evaluator and visualiser use.

Conversion of one detection (the original's quirks kept):
- the XYXY box is turned into XYWH in float and each of x, y, w, h is then truncated on its
  own (``.long()``), so [10.7, 20.3, 110.2, 180.9] gives w = int(99.5) = 99, h = 160 (not
  ``round(x1) - round(x0)``); w, h are at least 1;
- coarse and fine segmentation are resized to (h, w) (bilinear, ``align_corners=False``);
  labels = argmax(fine) where argmax(coarse) > 0, else 0;
- U, V are resized the same way and read from each pixel's label channel (0 where label 0).
"""

from dataclasses import dataclass, fields
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, BoxMode

__all__ = ["DensePoseChartPredictorOutput", "box_xyxy_to_int_xywh", "densepose_chart_results"]


@dataclass
class DensePoseChartPredictorOutput:
    """Raw chart outputs of R ROIs: ``coarse_segm`` (R, K, H, W) logits (K = 2 fg/bg, or 15
    coarse parts in the legacy configs), ``fine_segm`` (R, C, H, W) logits (C = 24 parts +
    background), ``u``, ``v`` (R, C, H, W) per-part coordinates. Indexable and
    concatenable like any ``Instances`` field."""

    coarse_segm: torch.Tensor
    fine_segm: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor

    def __len__(self) -> int:
        return self.coarse_segm.size(0)

    def __getitem__(self, item: Union[int, slice, torch.Tensor]) -> "DensePoseChartPredictorOutput":
        if isinstance(item, int):
            item = slice(item, item + 1)  # keep the ROI dimension
        return DensePoseChartPredictorOutput(
            **{f.name: getattr(self, f.name)[item] for f in fields(self)}
        )

    def to(self, device) -> "DensePoseChartPredictorOutput":
        return DensePoseChartPredictorOutput(
            **{f.name: getattr(self, f.name).to(device) for f in fields(self)}
        )

    @staticmethod
    def cat(outputs: Sequence["DensePoseChartPredictorOutput"]) -> "DensePoseChartPredictorOutput":
        return DensePoseChartPredictorOutput(
            **{
                f.name: torch.cat([getattr(o, f.name) for o in outputs], dim=0)
                for f in fields(DensePoseChartPredictorOutput)
            }
        )


def box_xyxy_to_int_xywh(box_xyxy: torch.Tensor) -> Tuple[int, int, int, int]:
    """(4,) XYXY float -> (x, y, w, h) ints: XYWH in float, then each value truncated."""
    xywh = BoxMode.convert(box_xyxy.reshape(1, 4).clone(), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    x, y, w, h = xywh[0].long().tolist()
    return x, y, w, h


def densepose_chart_results(
    pred_densepose: DensePoseChartPredictorOutput, boxes_xyxy: Union[torch.Tensor, Boxes]
) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Per detection ``(labels, uv)``: ``labels`` (h, w) int64 part ids 0..C-1 (0 =
    background) and ``uv`` (2, h, w) float32, over the box truncated to ints as the module
    docstring says (h, w >= 1; the box's top-left corner is ``box_xyxy_to_int_xywh(box)[:2]``).

    Args:
        pred_densepose: outputs of the N detections.
        boxes_xyxy: (N, 4) XYXY boxes in image pixels (``Instances.pred_boxes``).
    """
    boxes = boxes_xyxy.tensor if isinstance(boxes_xyxy, Boxes) else boxes_xyxy
    if boxes.dim() != 2 or boxes.size(1) != 4:
        raise ValueError(f"densepose_chart_results: boxes must be (N, 4), got {tuple(boxes.shape)}")
    if len(boxes) != len(pred_densepose):
        raise ValueError(
            f"densepose_chart_results: {len(boxes)} boxes for {len(pred_densepose)} outputs"
        )
    results = []
    for k in range(len(boxes)):
        _, _, w, h = box_xyxy_to_int_xywh(boxes[k])
        size = (max(h, 1), max(w, 1))
        out = pred_densepose[k]

        def resize(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, size, mode="bilinear", align_corners=False)[0]

        foreground = resize(out.coarse_segm).argmax(dim=0) > 0
        labels = resize(out.fine_segm).argmax(dim=0) * foreground.long()
        index = labels[None]
        uv = torch.cat(
            [resize(out.u).gather(0, index), resize(out.v).gather(0, index)], dim=0
        ).float()
        uv = torch.where(labels[None] > 0, uv, torch.zeros_like(uv))
        results.append((labels, uv))
    return results
