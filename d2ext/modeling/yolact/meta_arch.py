"""YOLACT meta-architecture (Bolya et al., "YOLACT: Real-time Instance Segmentation", ICCV 2019).

Every image is stretched to S x S (the original's ``Resize``), so predictions live in
coordinates normalised to [0, 1] of the image, and are scaled to each input's requested
``height`` x ``width`` at the end, as D2 models do.
"""

import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from torch import nn

from d2ext.layers import assemble_masks
from d2ext.layers.prototype_masks import crop_masks, prototype_masks

from .fast_nms import fast_nms, standard_nms
from .heads import MaskIoUNet, ProtoNet, YOLACTHead
from .loss import YOLACTLoss

__all__ = ["YOLACT"]


@META_ARCH_REGISTRY.register()
class YOLACT(nn.Module):
    """Inputs: D2 batched dicts with ``image`` (C, H, W) uint8 in ``input_format`` (C = 3, or 1
    for grayscale), optional ``height``/``width`` (output size), and at training ``instances``
    (gt_boxes XYXY pixels of ``image``, gt_classes, gt_masks as BitMasks or PolygonMasks) and
    optionally ``crowd_boxes`` (Boxes, pixels of ``image``). Outputs at inference: per image
    ``{"instances": Instances(pred_boxes, scores, pred_classes, pred_masks (N, H, W) bool)}``."""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        proto_net: nn.Module,
        head: nn.Module,
        anchor_generator: nn.Module,
        box2box_transform: Box2BoxTransform,
        loss: YOLACTLoss,
        num_classes: int,
        input_size: int,
        head_in_features: List[str],
        proto_in_feature: str,
        pixel_mean: Tuple[float, ...],
        pixel_std: Tuple[float, ...],
        sem_seg_loss: bool = True,
        min_gt_box_size: float = 4.0,
        score_threshold: float = 0.05,
        nms_threshold: float = 0.5,
        topk_candidates: int = 200,
        max_detections_per_image: int = 100,
        nms_type: str = "fast",
        second_threshold: bool = False,
        mask_threshold: float = 0.5,
        mask_iou_net: Optional[nn.Module] = None,
    ):
        """mask_iou_net: YOLACT++'s :class:`MaskIoUNet` (trained with ``loss_mask_iou``; at test
        ``scores`` = class score x its predicted mask IoU), or None (YOLACT)."""
        super().__init__()
        if nms_type not in ("fast", "standard"):
            raise ValueError(f"YOLACT: nms_type must be 'fast' or 'standard', got {nms_type!r}")
        head_anchors = getattr(head, "num_anchors", None)
        if head_anchors is not None and set(anchor_generator.num_anchors) != {head_anchors}:
            # a mismatch would run and silently pair predictions with the wrong anchors
            raise ValueError(
                f"YOLACT: the head predicts {head_anchors} anchors per location but the anchor "
                f"generator makes {anchor_generator.num_anchors} per level "
                "(LazyConfig: set model.head.num_anchors to len(sizes) x len(aspect_ratios))"
            )
        self.backbone = backbone
        self.proto_net = proto_net
        self.head = head
        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform
        self.loss = loss
        self.num_classes = num_classes
        self.input_size = input_size
        self.head_in_features = head_in_features
        self.proto_in_feature = proto_in_feature
        # auxiliary semantic segmentation on the proto input level (train only)
        self.semantic_seg_conv = (
            nn.Conv2d(backbone.output_shape()[proto_in_feature].channels, num_classes, 1)
            if sem_seg_loss
            else None
        )
        self.min_gt_box_size = min_gt_box_size
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.topk_candidates = topk_candidates
        self.max_detections_per_image = max_detections_per_image
        self.nms_type = nms_type
        self.second_threshold = second_threshold
        self.mask_threshold = mask_threshold
        self.mask_iou_net = mask_iou_net
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.YOLACT
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        missing = [f for f in list(c.IN_FEATURES) + [c.PROTO_IN_FEATURE] if f not in shapes]
        if missing:
            raise ValueError(f"MODEL.YOLACT: backbone lacks features {missing}; has {list(shapes)}")
        feature_shapes = [shapes[f] for f in c.IN_FEATURES]
        anchor_generator = build_anchor_generator(cfg, feature_shapes)
        num_anchors = anchor_generator.num_anchors
        proto_net = ProtoNet(cfg, shapes[c.PROTO_IN_FEATURE])
        mask_iou_net = None
        if c.MASK_IOU_ON:
            mask_iou_net = MaskIoUNet(cfg)
            proto_side = proto_net.upsample_factor * math.ceil(
                c.INPUT_SIZE / shapes[c.PROTO_IN_FEATURE].stride
            )
            if proto_side < mask_iou_net.min_input_size():
                raise ValueError(
                    f"MODEL.YOLACT.MASK_IOU_ON: INPUT_SIZE {c.INPUT_SIZE} gives {proto_side}-px prototypes, "
                    f"MASK_IOU_NET_CHANNELS {list(c.MASK_IOU_NET_CHANNELS)} needs >= {mask_iou_net.min_input_size()}"
                )
        if len(set(num_anchors)) != 1:
            raise ValueError(
                f"YOLACT's shared head needs the same anchors per level, got {num_anchors}"
            )
        return {
            "backbone": backbone,
            "proto_net": proto_net,
            "head": YOLACTHead(cfg, feature_shapes, num_anchors[0]),
            "anchor_generator": anchor_generator,
            "box2box_transform": Box2BoxTransform(weights=c.BBOX_REG_WEIGHTS),
            "loss": YOLACTLoss(cfg),
            "num_classes": c.NUM_CLASSES,
            "input_size": c.INPUT_SIZE,
            "head_in_features": list(c.IN_FEATURES),
            "proto_in_feature": c.PROTO_IN_FEATURE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "sem_seg_loss": c.SEM_SEG_LOSS,
            "min_gt_box_size": c.MIN_GT_BOX_SIZE,
            "score_threshold": c.SCORE_THRESH_TEST,
            "nms_threshold": c.NMS_THRESH_TEST,
            "topk_candidates": c.TOPK_CANDIDATES_TEST,
            "max_detections_per_image": c.DETECTIONS_PER_IMAGE,
            "nms_type": c.NMS_TYPE,
            "second_threshold": c.SECOND_THRESHOLD,
            "mask_threshold": c.MASK_THRESHOLD,
            "mask_iou_net": mask_iou_net,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> torch.Tensor:
        """Stretch every image to S x S (bilinear, align_corners=False), normalise; (N, 3, S, S)."""
        out = []
        for i, x in enumerate(batched_inputs):
            img = x["image"]
            name = x.get("file_name", f"batched_inputs[{i}]")
            if img.dim() != 3 or img.shape[0] not in (1, 3):
                raise ValueError(
                    f"YOLACT: image {name} must be (3, H, W) or grayscale (1, H, W); got {tuple(img.shape)}"
                )
            img = img.to(self.device, torch.float32)
            if img.shape[0] == 1:
                img = img.expand(3, -1, -1)
            img = F.interpolate(
                img[None], (self.input_size,) * 2, mode="bilinear", align_corners=False
            )[0]
            out.append((img - self.pixel_mean) / self.pixel_std)
        return torch.stack(out)

    def forward_raw(self, images: torch.Tensor):
        """Network outputs on normalised (N, 3, S, S) images: FPN features, prototypes
        (N, k, Hp, Wp), deltas (N, R, 4), class logits (N, R, C + 1), coefficients (N, R, k),
        anchors (R, 4) XYXY pixels of the S x S input."""
        features = self.backbone(images)
        return self.forward_from_features(features, images.shape[-2:])

    def forward_from_features(self, features: Dict[str, torch.Tensor], image_size):
        protos = self.proto_net(features[self.proto_in_feature])
        level_feats = [features[f] for f in self.head_in_features]
        deltas, logits, coeffs = self.head(level_feats)
        anchors = Boxes.cat(
            self.anchor_generator.forward_for_image_size(level_feats, tuple(image_size))
        )
        return features, protos, deltas, logits, coeffs, anchors

    def forward(self, batched_inputs: List[Dict]):
        images = self.preprocess_image(batched_inputs)
        features, protos, deltas, logits, coeffs, anchors = self.forward_raw(images)
        if not self.training:
            return self.inference(batched_inputs, protos, deltas, logits, coeffs, anchors)
        return self.losses(
            self.prepare_targets(batched_inputs), features, protos, deltas, logits, coeffs, anchors
        )

    def losses(self, targets, features, protos, deltas, logits, coeffs, anchors):
        """YOLACT's training losses from :meth:`forward_raw`'s outputs (``features`` feed the
        auxiliary semantic segmentation) and :meth:`prepare_targets`'s targets."""
        sem = (
            self.semantic_seg_conv(features[self.proto_in_feature])
            if self.semantic_seg_conv is not None
            else None
        )
        return self.loss(
            anchors,
            targets,
            deltas,
            logits,
            coeffs,
            protos,
            sem,
            self.input_size,
            self.mask_iou_net,
        )

    def prepare_targets(
        self, batched_inputs: List[Dict]
    ) -> List[Dict[str, Optional[torch.Tensor]]]:
        """Per input, the ground truth in the loss's form (boxes normalised to [0, 1])."""
        return [self._prepare_target(x, i) for i, x in enumerate(batched_inputs)]

    def _prepare_target(self, x: Dict, i: int) -> Dict[str, Optional[torch.Tensor]]:
        name = x.get("file_name", f"batched_inputs[{i}]")
        if "instances" not in x:
            raise ValueError(f"YOLACT training: image {name} has no 'instances' (GT) field")
        inst = x["instances"].to(self.device)
        h, w = inst.image_size
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
        if len(inst) and not inst.has("gt_masks"):
            raise ValueError(
                f"YOLACT training: image {name} instances lack gt_masks (set MODEL.MASK_ON)"
            )
        boxes = inst.gt_boxes.tensor.float() / scale
        if len(inst):
            masks = inst.gt_masks
            if isinstance(masks, PolygonMasks):
                masks = BitMasks.from_polygon_masks(masks, h, w)
            masks = masks.tensor if isinstance(masks, BitMasks) else torch.as_tensor(masks)
        else:
            masks = torch.zeros((0, h, w), device=self.device)
        # drop boxes <= min_gt_box_size px at the network input (the original's NaN guard)
        wh = (boxes[:, 2:] - boxes[:, :2]) * self.input_size
        keep = (wh > self.min_gt_box_size).all(dim=1)
        crowd = x.get("crowd_boxes")
        crowd = (
            crowd.tensor.to(self.device).float() / scale
            if crowd is not None and len(crowd)
            else None
        )
        return {
            "boxes": boxes[keep],
            "classes": inst.gt_classes[keep],
            "masks": masks[keep].float(),
            "crowd_boxes": crowd,
        }

    def inference(
        self, batched_inputs, protos, deltas, logits, coeffs, anchors
    ) -> List[Dict[str, Instances]]:
        results = []
        probs = F.softmax(logits, dim=-1)
        for i, x in enumerate(batched_inputs):
            out_h = int(x.get("height", x["image"].shape[-2]))
            out_w = int(x.get("width", x["image"].shape[-1]))
            boxes, classes, scores, keep = self.detect(deltas[i], probs[i], anchors)
            inst = Instances((out_h, out_w))
            rel = boxes / self.input_size
            pred = Boxes(
                rel * torch.tensor([out_w, out_h, out_w, out_h], device=rel.device, dtype=rel.dtype)
            )
            pred.clip((out_h, out_w))
            inst.pred_boxes = pred
            if self.mask_iou_net is not None:
                scores = scores * self.predict_mask_iou(protos[i], coeffs[i, keep], rel, classes)
            inst.scores = scores
            inst.pred_classes = classes
            inst.pred_masks = assemble_masks(
                protos[i],
                coeffs[i, keep],
                rel,
                (out_h, out_w),
                threshold=self.mask_threshold,
                crop_padding=1,
            )
            results.append({"instances": inst})
        return results

    def predict_mask_iou(
        self, protos: torch.Tensor, coeffs: torch.Tensor, boxes: torch.Tensor, classes: torch.Tensor
    ):
        """YOLACT++ re-scoring, one image: prototypes (k, Hp, Wp), coefficients (K, k), boxes
        (K, 4) normalised XYXY, classes (K,) -> predicted mask IoU (K,) of each detection's class,
        from its cropped mask at prototype size (the same crop as the assembly)."""
        masks = crop_masks(prototype_masks(protos, coeffs), boxes)
        return self.mask_iou_net(masks[:, None]).gather(1, classes[:, None]).squeeze(1)

    def detect(self, deltas: torch.Tensor, probs: torch.Tensor, anchors: Boxes):
        """One image: decoded boxes (K, 4) XYXY pixels of the S x S input, classes (K,),
        scores (K,) and the anchor index of every detection (K,)."""
        fg = probs[:, 1:]
        cand = torch.nonzero(fg.max(dim=1).values > self.score_threshold).squeeze(1)
        boxes = self.box2box_transform.apply_deltas(deltas[cand], anchors.tensor[cand])
        nms = fast_nms if self.nms_type == "fast" else standard_nms
        kwargs = {"second_threshold": self.second_threshold} if self.nms_type == "fast" else {}
        idx, classes, scores = nms(
            boxes,
            fg[cand].t(),
            iou_threshold=self.nms_threshold,
            top_k=self.topk_candidates,
            max_detections=self.max_detections_per_image,
            score_threshold=self.score_threshold,
            **kwargs,
        )
        return boxes[idx], classes, scores, cand[idx]
