"""UPSNet (Xiong et al., "UPSNet: A Unified Panoptic Segmentation Network", CVPR 2019) on stock
D2 Mask R-CNN: ResNet-FPN backbone, RPN and ``StandardROIHeads`` with the stock mask head, plus
UPSNet's semantic head and parameter-free panoptic head."""

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
from detectron2.structures import BitMasks, Boxes, ImageList, Instances, PolygonMasks

from d2ext.data.panoptic_label_space import PanopticLabelSpace

from .panoptic_head import UPSNetPanopticHead, select_panoptic_detections
from .semantic_head import UPSNetSemanticHead, downsample_labels

__all__ = ["UPSNet"]


@META_ARCH_REGISTRY.register()
class UPSNet(GeneralizedRCNN):
    """
    Training inputs (e.g. from :class:`UPSNetPanopticMapper`): "image", "instances" (gt_boxes,
    gt_classes in [0, T), gt_masks; crowd excluded) and "sem_seg" (H, W) long labels in UPSNet's
    space: stuff s in [0, S), thing t as S + t, 255 ignored.

    Inference outputs per image: "panoptic_seg" (D2 format: (H, W) int32 ids, 0 = void, and
    segments_info with metadata contiguous category ids), "instances" (stock Mask R-CNN
    detections) and "sem_seg" (S+T, H, W) logits, channel c = contiguous id c when the metadata
    has one id space over things + stuff, else UPSNet's order (stuff, then things).
    """

    @configurable
    def __init__(
        self,
        *,
        sem_seg_head: UPSNetSemanticHead,
        panoptic_head: UPSNetPanopticHead,
        **kwargs,
    ):
        """
        Args:
            sem_seg_head: UPSNet's semantic head over the backbone's FPN features.
            panoptic_head: UPSNet's panoptic head (owns the label space and thresholds).
            kwargs: arguments of :class:`GeneralizedRCNN`; ``roi_heads`` must be a
                ``StandardROIHeads`` with a pooled mask head (MODEL.MASK_ON).
        """
        super().__init__(**kwargs)
        rh = self.roi_heads
        if not getattr(rh, "mask_on", False) or getattr(rh, "mask_pooler", None) is None:
            raise ValueError("UPSNet needs StandardROIHeads with a pooled mask head (MASK_ON=True)")
        if rh.num_classes != panoptic_head.label_space.num_things:
            raise ValueError(
                f"ROI heads have {rh.num_classes} classes but the label space has "
                f"{panoptic_head.label_space.num_things} things"
            )
        self.sem_seg_head = sem_seg_head
        self.panoptic_head = panoptic_head
        self.sem_seg_order = panoptic_head.label_space.joint_order()

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["sem_seg_head"] = UPSNetSemanticHead(cfg, ret["backbone"].output_shape())
        ret["panoptic_head"] = UPSNetPanopticHead(cfg, PanopticLabelSpace.from_config(cfg))
        return ret

    def _mask_logits(
        self, features: Dict[str, torch.Tensor], boxes: List[Boxes], classes: List[torch.Tensor]
    ) -> List[torch.Tensor]:
        """Per image (K_i, M, M) mask-head logits of ``boxes`` (input pixels) for ``classes``."""
        rh = self.roi_heads
        x = rh.mask_pooler([features[f] for f in rh.mask_in_features], boxes)
        logits = rh.mask_head.layers(x)  # (sum K_i, T or 1, M, M), before the sigmoid
        cls = (
            torch.cat(classes)
            if logits.shape[1] > 1
            else logits.new_zeros(len(x), dtype=torch.long)
        )
        logits = logits[torch.arange(len(x), device=logits.device), cls]
        return list(logits.split([len(b) for b in boxes]))

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference(batched_inputs)
        for x in batched_inputs:
            for key in ("instances", "sem_seg"):
                if key not in x:
                    raise KeyError(
                        f"UPSNet training input {x.get('file_name', '')!r} has no {key!r}; use "
                        "INPUT.DATASET_MAPPER_NAME 'UPSNetPanopticMapper'"
                    )
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        losses, _ = self.losses_from_features(batched_inputs, images, features)
        return losses

    def losses_from_features(self, batched_inputs: List[Dict], images: ImageList, features):
        """UPSNet's training losses on given FPN ``features`` of ``images`` (the backbone's, or
        VPSNet's fused ones), and the ROI heads' sampled proposals (with their GT fields)."""
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        gt_sem = ImageList.from_tensors(
            [x["sem_seg"].to(self.device) for x in batched_inputs],
            self.backbone.size_divisibility,
            self.sem_seg_head.ignore_value,
            self.backbone.padding_constraints,
        ).tensor

        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        sampled, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        sem_logits, sem_feats = self.sem_seg_head(features)
        losses = self.sem_seg_head.losses(
            sem_logits, sem_feats, gt_sem, [x.gt_boxes for x in gt_instances]
        )
        losses.update(self._panoptic_losses(features, images, sem_logits, gt_sem, gt_instances))
        losses.update(proposal_losses)
        losses.update(detector_losses)
        return losses, sampled

    def _panoptic_losses(self, features, images: ImageList, sem_logits, gt_sem, gt_instances):
        """GT boxes (a random subset) -> mask-head logits -> panoptic logits on the P2 grid."""
        h, w = sem_logits.shape[-2:]
        pad_h, pad_w = images.tensor.shape[-2:]
        kept = [x[self.panoptic_head.sample_instances(len(x), self.device)] for x in gt_instances]
        mask_logits = self._mask_logits(
            features, [x.gt_boxes for x in kept], [x.gt_classes for x in kept]
        )
        boxes, masks = [], []
        for x in kept:
            b = x.gt_boxes.tensor.clone()
            b[:, 0::2] *= w / pad_w
            b[:, 1::2] *= h / pad_h
            boxes.append(b)
            m = _masks_tensor(x).to(self.device)
            if len(m) == 0:
                masks.append(m.new_zeros((0, h, w)))
                continue
            m = F.pad(m.float(), (0, pad_w - m.shape[-1], 0, pad_h - m.shape[-2]))
            masks.append(F.interpolate(m[None], size=(h, w), mode="nearest")[0] > 0.5)
        return self.panoptic_head.losses(
            sem_logits,
            downsample_labels(gt_sem, (h, w)),
            boxes,
            [x.gt_classes for x in kept],
            mask_logits,
            masks,
        )

    def inference(
        self,
        batched_inputs: List[Dict],
        detected_instances: Optional[List[Instances]] = None,
        do_postprocess: bool = True,
    ):
        """See the class docstring for the outputs. With ``do_postprocess=False`` returns
        (stock detections, panoptic-head detections with "pred_mask_logits", semantic logits on
        the P2 grid), all in input-image pixels."""
        if detected_instances is not None:
            raise NotImplementedError("UPSNet inference with given detections")
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        detections, panoptic_dets, sem_logits = self.detect_from_features(images, features)
        if not do_postprocess:
            return detections, panoptic_dets, sem_logits

        stride = images.tensor.shape[-1] // sem_logits.shape[-1]
        sem_logits = F.interpolate(
            sem_logits, scale_factor=stride, mode="bilinear", align_corners=False
        )
        results = []
        pan = self.panoptic_head
        for sem, det, pan_det, inp, size in zip(
            sem_logits, detections, panoptic_dets, batched_inputs, images.image_sizes
        ):
            height, width = inp.get("height", size[0]), inp.get("width", size[1])
            sem_r = sem_seg_postprocess(sem, size, height, width)
            pan_r = detector_postprocess(pan_det, height, width)
            panoptic = pan.inference(
                sem_r,
                pan_r.pred_boxes.tensor,
                pan_r.scores,
                pan_r.pred_classes,
                pan_r.pred_mask_logits,
            )
            if self.sem_seg_order is not None:
                sem_r = sem_r[self.sem_seg_order.to(sem_r.device)]
            results.append(
                {
                    "sem_seg": sem_r,
                    "instances": detector_postprocess(det, height, width),
                    "panoptic_seg": panoptic,
                }
            )
        return results

    def detect_from_features(self, images: ImageList, features, with_stock: bool = True):
        """Inference up to post-processing on given FPN ``features`` of ``images``: (stock
        Mask R-CNN detections, or None without ``with_stock``; panoptic-head detections with
        "pred_mask_logits"; semantic logits on the P2 grid), in padded-input pixels."""
        proposals, _ = self.proposal_generator(images, features, None)
        sem_logits, _ = self.sem_seg_head(features)

        rh = self.roi_heads
        box_features = rh.box_pooler(
            [features[f] for f in rh.box_in_features], [p.proposal_boxes for p in proposals]
        )
        predictions = rh.box_predictor(rh.box_head(box_features))
        detections = None
        if with_stock:
            detections, _ = rh.box_predictor.inference(predictions, proposals)
            detections = rh.forward_with_given_boxes(features, detections)

        panoptic_dets = []
        pan = self.panoptic_head
        for boxes, scores, p in zip(
            rh.box_predictor.predict_boxes(predictions, proposals),
            rh.box_predictor.predict_probs(predictions, proposals),
            proposals,
        ):
            b, s, c = select_panoptic_detections(
                boxes,
                scores,
                p.image_size,
                pan.score_thresh,
                pan.nms_thresh,
                pan.detections_per_image,
            )
            panoptic_dets.append(Instances(p.image_size, pred_boxes=b, scores=s, pred_classes=c))
        mask_logits = self._mask_logits(
            features, [x.pred_boxes for x in panoptic_dets], [x.pred_classes for x in panoptic_dets]
        )
        for x, m in zip(panoptic_dets, mask_logits):
            x.pred_mask_logits = m
        return detections, panoptic_dets, sem_logits


def _masks_tensor(instances: Instances) -> torch.Tensor:
    """(K, H, W) bool tensor of the BitMasks / PolygonMasks ``gt_masks`` of GT instances."""
    if not instances.has("gt_masks"):
        if len(instances) == 0:  # D2's DatasetMapper adds no gt_masks to empty images
            return torch.zeros((0, *instances.image_size), dtype=torch.bool)
        raise KeyError("UPSNet training instances need gt_masks")
    gt_masks = instances.gt_masks
    if isinstance(gt_masks, PolygonMasks):
        gt_masks = BitMasks.from_polygon_masks(gt_masks, *instances.image_size)
    if isinstance(gt_masks, BitMasks):
        return gt_masks.tensor.bool()
    raise TypeError(f"UPSNet needs gt_masks as BitMasks or PolygonMasks, got {type(gt_masks)}")
