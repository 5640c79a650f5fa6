"""RetinaFace (Deng et al., "RetinaFace: Single-shot Multi-level Face Localisation in the Wild",
CVPR 2020) as a D2 meta-architecture, faithful to biubug6/Pytorch_Retinaface.

backbone (D2 ResNet res3-res5 or :class:`MobileNetV1`) -> :class:`RetinaFaceFPN` -> one
:class:`SSH` per level -> per level 1x1 convs predicting, for each of the 2 anchors of a cell,
2 class logits (softmax), 4 box deltas and 10 landmark deltas.

Anchors are D2's :class:`DefaultAnchorGenerator` (``MODEL.ANCHOR_GENERATOR``: sizes
[[16, 32], [64, 128], [256, 512]], aspect ratio 1, offset 0.5), which enumerates them exactly
as the original's ``PriorBox``: row-major over each map, both sizes per cell, centres
``(j + 0.5) * stride``, maps of ``ceil(H / stride)``. Boxes are coded by D2's
:class:`Box2BoxTransform` with weights (10, 10, 5, 5) (= variances 0.1, 0.2; no clamp of the
size deltas, as the original), landmarks by :class:`Landmark2AnchorTransform`.

Inference as ``detect.py``: softmax face score > 0.02, top 5000, NMS 0.4 with the original's
``+1`` box areas (``NMS_LEGACY_PLUS_ONE``), keep 750; boxes are not clipped to the image. Images
of a batch are padded to a common size (bottom / right); a single image is exactly the
original's computation.
"""

import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import batched_nms
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage
from torch import nn

from d2ext.modeling.common import Landmark2AnchorTransform

from .loss import retinaface_losses, retinaface_targets
from .neck import SSH, RetinaFaceFPN

__all__ = ["RetinaFace"]


def _head(in_channels: int, num_anchors: int, width: int, levels: int) -> nn.ModuleList:
    return nn.ModuleList(nn.Conv2d(in_channels, num_anchors * width, 1) for _ in range(levels))


@META_ARCH_REGISTRY.register()
class RetinaFace(nn.Module):
    """Inputs: D2 batched dicts with ``image`` (3, H, W) in ``input_format``, optional
    ``height``/``width`` (output size), and at training ``instances`` with gt_boxes (XYXY
    pixels of ``image``, positive size), gt_classes and gt_keypoints (K = 5 points; v = 0 marks
    a face without landmarks). Outputs at inference: per image ``{"instances":
    Instances(pred_boxes, scores, pred_classes (all 0: face), pred_keypoints (N, 5, 3): x, y and
    the face score)}``."""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        in_features: List[str],
        out_channels: int,
        anchor_generator: nn.Module,
        pixel_mean: Tuple[float, ...],
        pixel_std: Tuple[float, ...],
        norm: str = "BN",
        leaky_relu_slope: Optional[float] = None,
        landmark_on: bool = True,
        num_landmarks: int = 5,
        box2box_transform: Box2BoxTransform = None,
        landmark_coder: Landmark2AnchorTransform = None,
        iou_threshold: float = 0.35,
        forced_match_min_iou: float = 0.2,
        neg_pos_ratio: int = 7,
        loss_weights: Dict[str, float] = None,
        score_threshold: float = 0.02,
        topk_candidates: int = 5000,
        nms_threshold: float = 0.4,
        max_detections_per_image: int = 750,
        nms_legacy_plus_one: bool = True,
        channels_last: bool = False,
    ):
        """
        Args:
            leaky_relu_slope: of the FPN and SSH; None = the original's rule (0.1 if
                ``out_channels`` <= 64 else 0).
            landmark_on: build and train the landmark branch (off: boxes only, no
                ``pred_keypoints``).
            loss_weights: of ``loss_bbox``, ``loss_cls``, ``loss_landmark`` (2, 1, 1).
            channels_last: run the network in channels-last memory format (the same numbers up
                to float rounding; on CPUs oneDNN's depthwise and 1x1 convolutions are much
                faster so, and batches of images gain over one at a time; docs/benchmarks.md).
        """
        super().__init__()
        shapes = backbone.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if missing or len(in_features) != 3:
            raise ValueError(
                f"RetinaFace: MODEL.RETINAFACE.IN_FEATURES {list(in_features)} must name 3 "
                f"backbone features, fine to coarse; the backbone has {list(shapes)}"
            )
        num_anchors = set(anchor_generator.num_anchors)
        if len(num_anchors) != 1 or len(anchor_generator.num_anchors) != len(in_features):
            raise ValueError(
                "RetinaFace: MODEL.ANCHOR_GENERATOR must give the same number of anchors on each "
                f"of the {len(in_features)} levels, got {anchor_generator.num_anchors}"
            )
        self.backbone = backbone
        self.in_features = list(in_features)
        self.fpn = RetinaFaceFPN(
            [shapes[f].channels for f in in_features], out_channels,
            norm=norm, leaky_relu_slope=leaky_relu_slope,
        )  # fmt: skip
        self.ssh = nn.ModuleList(
            SSH(out_channels, out_channels, norm=norm, leaky_relu_slope=leaky_relu_slope)
            for _ in in_features
        )
        a = num_anchors.pop()
        self.class_head = _head(out_channels, a, 2, len(in_features))
        self.box_head = _head(out_channels, a, 4, len(in_features))
        self.landmark_head = (
            _head(out_channels, a, 2 * num_landmarks, len(in_features)) if landmark_on else None
        )
        self.num_landmarks = num_landmarks
        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform or Box2BoxTransform(
            weights=(10.0, 10.0, 5.0, 5.0), scale_clamp=math.inf
        )
        self.landmark_coder = landmark_coder or Landmark2AnchorTransform(10.0)
        self.iou_threshold = iou_threshold
        self.forced_match_min_iou = forced_match_min_iou
        self.neg_pos_ratio = neg_pos_ratio
        self.loss_weights = {"loss_bbox": 2.0, "loss_cls": 1.0, "loss_landmark": 1.0}
        self.loss_weights.update(loss_weights or {})
        self.score_threshold = score_threshold
        self.topk_candidates = topk_candidates
        self.nms_threshold = nms_threshold
        self.max_detections_per_image = max_detections_per_image
        self.nms_legacy_plus_one = nms_legacy_plus_one
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.RETINAFACE
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        missing = [f for f in c.IN_FEATURES if f not in shapes]
        if missing:
            raise ValueError(
                f"MODEL.RETINAFACE.IN_FEATURES: backbone lacks {missing}; has {list(shapes)}"
            )
        return {
            "backbone": backbone,
            "in_features": list(c.IN_FEATURES),
            "out_channels": c.OUT_CHANNELS,
            "anchor_generator": build_anchor_generator(cfg, [shapes[f] for f in c.IN_FEATURES]),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "norm": c.NORM,
            "leaky_relu_slope": None if c.LEAKY_RELU_SLOPE < 0 else c.LEAKY_RELU_SLOPE,
            "landmark_on": c.LANDMARK_ON,
            "box2box_transform": Box2BoxTransform(
                weights=tuple(c.BBOX_REG_WEIGHTS), scale_clamp=math.inf
            ),
            "landmark_coder": Landmark2AnchorTransform(c.LANDMARK_REG_WEIGHT),
            "iou_threshold": c.IOU_THRESHOLD,
            "forced_match_min_iou": c.FORCED_MATCH_MIN_IOU,
            "neg_pos_ratio": c.NEG_POS_RATIO,
            "loss_weights": {
                "loss_bbox": c.LOSS_WEIGHT_BBOX,
                "loss_cls": c.LOSS_WEIGHT_CLS,
                "loss_landmark": c.LOSS_WEIGHT_LANDMARK,
            },
            "score_threshold": c.SCORE_THRESH_TEST,
            "topk_candidates": c.TOPK_CANDIDATES_TEST,
            "nms_threshold": c.NMS_THRESH_TEST,
            "max_detections_per_image": c.DETECTIONS_PER_IMAGE,
            "nms_legacy_plus_one": c.NMS_LEGACY_PLUS_ONE,
            "channels_last": c.CHANNELS_LAST,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        images = []
        for i, x in enumerate(batched_inputs):
            img = x["image"]
            if img.dim() != 3 or img.shape[0] != self.pixel_mean.shape[0]:
                raise ValueError(
                    f"RetinaFace: input {i} ({x.get('file_name', 'in memory')}) has image shape "
                    f"{tuple(img.shape)}; expected ({self.pixel_mean.shape[0]}, H, W)"
                )
            images.append(img.to(self.device))
        if self.backbone.size_divisibility <= 1 and len({tuple(i.shape) for i in images}) == 1:
            # one size: normalise the whole batch in one op (no padding needed)
            batch = (torch.stack(images).float() - self.pixel_mean) / self.pixel_std
            return ImageList(batch, [tuple(img.shape[-2:]) for img in images])
        # padding is 0 after normalisation (the pixel mean), as the original's zero-padded maps
        images = [(img.float() - self.pixel_mean) / self.pixel_std for img in images]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def forward_raw(self, images: torch.Tensor):
        """The network on a normalised (B, 3, H, W) batch: class logits (B, A, 2), box deltas
        (B, A, 4), landmark deltas (B, A, 2K) or None, and the anchors (A, 4) XYXY pixels, in
        the original's order (level, row, column, anchor)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        features = self.backbone(images)
        features = self.fpn([features[f] for f in self.in_features])
        features = [ssh(f) for ssh, f in zip(self.ssh, features)]
        b = images.shape[0]

        def flat(heads, width):
            return torch.cat(
                [h(f).permute(0, 2, 3, 1).reshape(b, -1, width) for h, f in zip(heads, features)],
                dim=1,
            )

        cls = flat(self.class_head, 2)
        box = flat(self.box_head, 4)
        lm = flat(self.landmark_head, 2 * self.num_landmarks) if self.landmark_head else None
        anchors = Boxes.cat(self.anchor_generator(features))
        return cls, box, lm, anchors

    def forward(self, batched_inputs: List[Dict]):
        images = self.preprocess_image(batched_inputs)
        cls, box, lm, anchors = self.forward_raw(images.tensor)
        if self.training:
            if not all("instances" in x for x in batched_inputs):
                raise ValueError("RetinaFace: training inputs need 'instances'")
            gt = [x["instances"].to(self.device) for x in batched_inputs]
            labels, box_t, lm_t = retinaface_targets(
                anchors, gt, self.box2box_transform, self.landmark_coder,
                self.iou_threshold, self.forced_match_min_iou,
            )  # fmt: skip
            losses = retinaface_losses(
                cls, box, lm, labels, box_t, lm_t, neg_pos_ratio=self.neg_pos_ratio
            )
            try:
                storage = get_event_storage()
                storage.put_scalar(
                    "retinaface/num_pos_anchors", float((labels != 0).sum()) / len(gt)
                )
            except AssertionError:  # no EventStorage outside a trainer
                pass
            return {k: v * self.loss_weights[k] for k, v in losses.items()}
        results = self.inference(
            cls, box, lm, anchors, images.image_sizes, tuple(images.tensor.shape[-2:])
        )
        processed = []
        for r, x, size in zip(results, batched_inputs, images.image_sizes):
            processed.append({"instances": self._rescale(r, x, size)})
        return processed

    def inference(
        self,
        cls: torch.Tensor,
        box: torch.Tensor,
        lm: Optional[torch.Tensor],
        anchors: Boxes,
        image_sizes: List[Tuple[int, int]],
        padded_size: Optional[Tuple[int, int]] = None,
    ) -> List[Instances]:
        """Detections per image in the network input's pixels (``detect.py``'s post-processing).
        ``padded_size``: (H, W) of the batch when its images were padded to it; anchors of an
        image's padding (cells the original, run on that image alone, does not have) are
        dropped."""
        scores_all = F.softmax(cls, dim=-1)[..., 1]
        if padded_size is not None:
            valid = self._unpadded_anchors(padded_size, image_sizes, scores_all.shape[1])
            if valid is not None:
                scores_all = scores_all.masked_fill(~valid.to(scores_all.device), 0.0)
        results = []
        for i, size in enumerate(image_sizes):
            scores = scores_all[i]
            keep = torch.nonzero(scores > self.score_threshold).squeeze(1)
            # stable: tied scores keep the lower anchor first (as the exported graph)
            order = scores[keep].argsort(descending=True, stable=True)
            if self.topk_candidates > 0:
                order = order[: self.topk_candidates]
            keep = keep[order]
            scores = scores[keep]
            a = anchors.tensor[keep]
            boxes = self.box2box_transform.apply_deltas(box[i, keep], a)
            nms_boxes = boxes
            if self.nms_legacy_plus_one:
                # IoU with (x2 - x1 + 1)(y2 - y1 + 1) areas == plain IoU of boxes grown by 1
                nms_boxes = torch.cat([boxes[:, :2], boxes[:, 2:] + 1.0], dim=1)
            kept = batched_nms(
                nms_boxes, scores, torch.zeros_like(scores, dtype=torch.int64), self.nms_threshold
            )
            if self.max_detections_per_image > 0:
                kept = kept[: self.max_detections_per_image]
            inst = Instances(size)
            inst.pred_boxes = Boxes(boxes[kept])
            inst.scores = scores[kept]
            inst.pred_classes = torch.zeros(len(kept), dtype=torch.int64, device=scores.device)
            if lm is not None:
                points = self.landmark_coder.apply_deltas(lm[i, keep[kept]], a[kept])
                inst.pred_keypoints = torch.cat(
                    [points, inst.scores[:, None, None].expand(-1, points.shape[1], 1)], dim=2
                )
            results.append(inst)
        return results

    def _unpadded_anchors(
        self, padded_size: Tuple[int, int], image_sizes: List[Tuple[int, int]], num_anchors: int
    ) -> Optional[torch.Tensor]:
        """(B, A) bool: anchors whose cell lies in the ``ceil(h / stride) x ceil(w / stride)``
        map of the image itself; None when no image is padded (or the backbone's maps are not
        ``ceil(H / stride)``, where the cells cannot be told apart)."""
        if all(tuple(size) == tuple(padded_size) for size in image_sizes):
            return None
        gen = self.anchor_generator
        height, width = padded_size
        masks = []
        for h, w in image_sizes:
            per_level = []
            for stride, a in zip(gen.strides, gen.num_anchors):
                rows = torch.arange(math.ceil(height / stride)) < math.ceil(h / stride)
                cols = torch.arange(math.ceil(width / stride)) < math.ceil(w / stride)
                cells = rows[:, None] & cols[None, :]
                per_level.append(cells[..., None].expand(-1, -1, a).reshape(-1))
            masks.append(torch.cat(per_level))
        valid = torch.stack(masks)
        return valid if valid.shape[1] == num_anchors else None

    @staticmethod
    def _rescale(inst: Instances, inputs: Dict, size: Tuple[int, int]) -> Instances:
        """Scale to the requested ``height`` x ``width`` (D2's convention); unclipped."""
        out_h, out_w = inputs.get("height", size[0]), inputs.get("width", size[1])
        sx, sy = out_w / size[1], out_h / size[0]
        result = Instances((out_h, out_w))
        boxes = inst.pred_boxes.tensor
        if (sx, sy) != (1.0, 1.0):
            boxes = boxes * boxes.new_tensor([sx, sy, sx, sy])
        result.pred_boxes = Boxes(boxes)
        result.scores = inst.scores
        result.pred_classes = inst.pred_classes
        if inst.has("pred_keypoints"):
            kp = inst.pred_keypoints.clone()
            kp[..., 0] *= sx
            kp[..., 1] *= sy
            result.pred_keypoints = kp
        return result
