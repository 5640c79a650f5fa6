"""``DensePoseROIHeads``: D2's ``StandardROIHeads`` (box, and mask when ``MASK_ON``) plus the
DensePose chart branch of D2 ``projects/DensePose`` (Güler et al., CVPR 2018), on the same
proposals (training) and on the final detections (inference).

Module names are the original's (``decoder``, ``densepose_head``, ``densepose_predictor``), so
its checkpoints load without renaming (see ``checkpoint.py``).
"""

from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import select_foreground_proposals
from detectron2.structures import ImageList, Instances
from detectron2.structures.boxes import matched_pairwise_iou
from torch import nn

from .decoder import DensePoseDecoder
from .head import DensePoseV1ConvXHead
from .inference import DensePoseChartPredictorOutput
from .losses import DensePoseChartLoss
from .predictor import DensePoseChartPredictor

__all__ = ["DensePoseROIHeads", "select_densepose_proposals"]


def select_densepose_proposals(
    proposals: List[Instances], num_classes: int, iou_threshold: float
) -> List[Instances]:
    """Per image, the foreground proposals whose matched GT box overlaps them with
    IoU > ``iou_threshold`` and carries DensePose data (``gt_densepose`` not None). Images
    without a ``gt_densepose`` field give no proposal. One ``Instances`` per image, in order."""
    foreground, _ = select_foreground_proposals(proposals, num_classes)
    selected = []
    for p in foreground:
        if not p.has("gt_densepose") or len(p) == 0:
            selected.append(p[:0])
            continue
        iou = matched_pairwise_iou(p.gt_boxes, p.proposal_boxes)
        keep = (iou > iou_threshold) & p.gt_densepose.has_data().to(iou.device)
        selected.append(p[keep])
    return selected


@ROI_HEADS_REGISTRY.register()
class DensePoseROIHeads(StandardROIHeads):
    """``StandardROIHeads`` + the DensePose chart branch: optional ``decoder`` (FPN levels ->
    one stride-4 map), ``densepose_pooler`` (ROIAlign, ``aligned=False`` as the original),
    ``densepose_head``, ``densepose_predictor`` and ``densepose_loss``.

    Training adds ``loss_densepose_{U,V,I,S}`` computed on :func:`select_densepose_proposals`
    (always, zero-valued on the graph when the batch has no DensePose data); inference adds
    ``pred_densepose`` (:class:`DensePoseChartPredictorOutput`, one row per detection) to each
    image's ``Instances``.
    """

    @configurable
    def __init__(
        self,
        *,
        densepose_on: bool = False,
        densepose_in_features: Optional[List[str]] = None,
        decoder: Optional[nn.Module] = None,
        densepose_pooler: Optional[ROIPooler] = None,
        densepose_head: Optional[nn.Module] = None,
        densepose_predictor: Optional[nn.Module] = None,
        densepose_loss: Optional[DensePoseChartLoss] = None,
        densepose_fg_iou_threshold: float = 0.7,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.densepose_on = densepose_on
        if not densepose_on:
            return
        self.densepose_in_features = densepose_in_features
        self.decoder = decoder
        self.densepose_pooler = densepose_pooler
        self.densepose_head = densepose_head
        self.densepose_predictor = densepose_predictor
        self.densepose_loss = densepose_loss
        self.densepose_fg_iou_threshold = densepose_fg_iou_threshold

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        ret.update(cls._init_densepose_head(cfg, input_shape))
        return ret

    @classmethod
    def _init_densepose_head(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        if not cfg.MODEL.DENSEPOSE_ON:
            return {"densepose_on": False}
        h = cfg.MODEL.ROI_DENSEPOSE_HEAD
        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        heatmap = 2 * h.POOLER_RESOLUTION * h.UP_SCALE
        if heatmap != h.HEATMAP_SIZE:
            raise ValueError(
                f"MODEL.ROI_DENSEPOSE_HEAD: HEATMAP_SIZE {h.HEATMAP_SIZE} != 2 (deconv stride) x "
                f"POOLER_RESOLUTION {h.POOLER_RESOLUTION} x UP_SCALE {h.UP_SCALE} = {heatmap}"
            )
        if h.DECODER_ON:
            decoder = DensePoseDecoder(cfg, input_shape)
            # the pooler reads only the decoder's map, at the stride of the first level
            scales = (1.0 / input_shape[in_features[0]].stride,)
            in_channels = h.DECODER_NUM_CLASSES
        else:
            decoder = None
            scales = tuple(1.0 / input_shape[f].stride for f in in_features)
            in_channels = input_shape[in_features[0]].channels
        head = DensePoseV1ConvXHead(cfg, in_channels)
        return {
            "densepose_on": True,
            "densepose_in_features": in_features,
            "decoder": decoder,
            "densepose_pooler": ROIPooler(
                output_size=h.POOLER_RESOLUTION,
                scales=scales,
                sampling_ratio=h.POOLER_SAMPLING_RATIO,
                pooler_type=h.POOLER_TYPE,
            ),
            "densepose_head": head,
            "densepose_predictor": DensePoseChartPredictor(cfg, head.n_out_channels),
            "densepose_loss": DensePoseChartLoss(cfg),
            "densepose_fg_iou_threshold": h.FG_IOU_THRESHOLD,
        }

    def densepose_outputs(
        self, features: Dict[str, torch.Tensor], boxes: List
    ) -> DensePoseChartPredictorOutput:
        """Chart outputs of the ROIs ``boxes`` (one ``Boxes`` per image, XYXY image pixels),
        rows in image order."""
        if self.decoder is not None:
            maps = [self.decoder({f: features[f] for f in self.densepose_in_features})]
        else:
            maps = [features[f] for f in self.densepose_in_features]
        pooled = self.densepose_pooler(maps, boxes)
        return self.densepose_predictor(self.densepose_head(pooled))

    def _forward_densepose(self, features: Dict[str, torch.Tensor], instances: List[Instances]):
        if not self.densepose_on:
            return {} if self.training else instances
        if self.training:
            proposals = select_densepose_proposals(
                instances, self.num_classes, self.densepose_fg_iou_threshold
            )
            # run even without selected proposals: the zero losses then stay on the graph
            outputs = self.densepose_outputs(features, [p.proposal_boxes for p in proposals])
            return self.densepose_loss(proposals, outputs)
        outputs = self.densepose_outputs(features, [x.pred_boxes for x in instances])
        start = 0
        for x in instances:
            x.pred_densepose = outputs[start : start + len(x)]
            start += len(x)
        return instances

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ):
        instances, losses = super().forward(images, features, proposals, targets)
        if self.training:
            losses.update(self._forward_densepose(features, instances))
        return instances, losses

    def forward_with_given_boxes(
        self, features: Dict[str, torch.Tensor], instances: List[Instances]
    ) -> List[Instances]:
        instances = super().forward_with_given_boxes(features, instances)
        return self._forward_densepose(features, instances)
