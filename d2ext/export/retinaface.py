"""RetinaFace's export graph: raw pixels in, the detections of ``RetinaFace.inference`` out.

One tensor program for the whole batch: normalisation, the network (``forward_raw``), the
softmax face score, the per-image candidates (score > ``score_threshold``, the best
``topk_candidates``), box and landmark decoding against the anchors, NMS with the original's
``+1`` box areas and the per-image ``max_detections_per_image`` limit. NMS runs once for all
images (torchvision's batched-NMS coordinate trick: each image's boxes shifted away from the
others'), so it is one ONNX ``NonMaxSuppression`` and the batch stays dynamic.

The anchors come from the model's own ``DefaultAnchorGenerator`` on the traced feature maps,
whose sizes (and so the anchor grids) follow the input size in the exported graph.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from detectron2.structures import Boxes, Instances
from torch import nn

from .core import ExportWrapper, as_tensor

__all__ = ["RetinaFaceExport"]


def _float32_below(threshold: float) -> float:
    """The largest float32 <= ``threshold``. torchvision's NMS compares the float32 IoU with the
    threshold as a double, ONNX ``NonMaxSuppression`` with the threshold cast to float32; both
    suppress exactly when IoU > this value, as the eager model's NMS does for ``threshold``
    (e.g. 0.4 rounds up to float32 0.4000000060: an IoU of exactly that value is suppressed by
    the eager model and would be kept by onnxruntime)."""
    t = np.float32(threshold)
    return float(np.nextafter(t, np.float32(-np.inf)) if t > threshold else t)


class RetinaFaceExport(ExportWrapper):
    """Export graph of a :class:`~d2ext.modeling.retinaface.RetinaFace`.

    Input ``images``: (N, 3, H, W) float32 pixels 0..255 in ``INPUT.FORMAT`` (the eager
    model's ``image``, as float). Outputs, flat over the batch (M detections, by image, then
    score descending; pixels of the input, XYXY, unclipped as the eager model's):

    - ``batch_index`` (M,) int64: the image of each detection;
    - ``boxes`` (M, 4), ``scores`` (M,) float32;
    - ``landmarks`` (M, K, 2) float32 x, y (only when the model has the landmark branch);
    - with ``raw_outputs``: ``raw_cls`` (N, A, 2) logits, ``raw_box`` (N, A, 4) and
      ``raw_landmark`` (N, A, 2K) deltas, the network's outputs before decoding.

    Args:
        model: a built eval-mode RetinaFace. A channels-last model (``CHANNELS_LAST``) traces
            as it is; the memory format is not part of the ONNX graph.
        fixed_shape: (H, W) of a graph without dynamic image size (batch stays dynamic).
        raw_outputs: add the ``raw_*`` outputs.
    """

    model_name = "RetinaFace"
    input_names = ("images",)

    def __init__(
        self,
        model: nn.Module,
        fixed_shape: Optional[Sequence[int]] = None,
        raw_outputs: bool = False,
        input_format: str = "BGR",
    ):
        super().__init__(model, fixed_shape)
        if input_format not in ("BGR", "RGB"):
            raise ValueError(
                f"input_format (INPUT.FORMAT) must be BGR or RGB, got {input_format!r}"
            )
        self.input_format = input_format
        if model.backbone.size_divisibility > 1:
            # the eager model pads such inputs and drops the padding's anchors; the graph
            # takes the image as it comes
            raise ValueError(
                f"RetinaFace export: MODEL.BACKBONE.NAME's backbone has size_divisibility "
                f"{model.backbone.size_divisibility}; only backbones that take any input size "
                "(RetinaFace's MobileNet and ResNet) are exportable"
            )
        self.raw_outputs = raw_outputs
        self.num_landmarks = model.num_landmarks if model.landmark_head is not None else 0
        names = ["batch_index", "boxes", "scores"]
        if self.num_landmarks:
            names.append("landmarks")
        if raw_outputs:
            names += ["raw_box", "raw_cls"] + (["raw_landmark"] if self.num_landmarks else [])
        self.output_names = tuple(sorted(names))

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """images (N, 3, H, W) float32 raw pixels -> the dict described in the class doc."""
        m = self.model
        if m.training:
            raise ValueError(
                "RetinaFace export: the model is in training mode (BatchNorm would use the "
                "batch's statistics); call .eval() on it"
            )
        if self.fixed_shape is not None:
            self.check_image_size(int(images.shape[-2]), int(images.shape[-1]), "the input")
        cls, box, lm, anchors = m.forward_raw((images - m.pixel_mean) / m.pixel_std)
        anchors = anchors.tensor

        # candidates: per image, score > threshold, best first, at most topk_candidates; the
        # nonzero of the (image, rank) mask enumerates them by image, then score descending
        scores_all = F.softmax(cls, dim=-1)[..., 1]
        sorted_scores, order = self._stable_sort_descending(scores_all)
        candidate = sorted_scores > m.score_threshold
        if m.topk_candidates > 0:
            rank = torch.arange(order.shape[1], device=order.device)
            candidate = candidate & (rank < m.topk_candidates)[None]
        image_idx, rank_idx = candidate.nonzero(as_tuple=True)
        anchor_idx = order[image_idx, rank_idx]
        scores = sorted_scores[image_idx, rank_idx]
        cand_anchors = anchors[anchor_idx]
        boxes = m.box2box_transform.apply_deltas(box[image_idx, anchor_idx], cand_anchors)

        kept = self._batched_nms(boxes, scores, image_idx, m.nms_threshold)
        if m.max_detections_per_image > 0:
            rank = self._rank_in_image(image_idx[kept], images.shape[0])
            kept = kept[rank < m.max_detections_per_image]

        outputs = {
            "batch_index": image_idx[kept],
            "boxes": boxes[kept],
            "scores": scores[kept],
        }
        if lm is not None:
            # decoded for every anchor, then picked: onnxruntime's graph optimiser turns the
            # coder's (R, 2K) -> (R, K, 2) reshape into (0, -1, 2), which fails for R = 0
            # (a batch without detections)
            points = m.landmark_coder.apply_deltas(lm, anchors[None])
            outputs["landmarks"] = points[image_idx[kept], anchor_idx[kept]]
        if self.raw_outputs:
            outputs["raw_cls"], outputs["raw_box"] = cls, box
            if lm is not None:
                outputs["raw_landmark"] = lm
        return outputs

    @staticmethod
    def _stable_sort_descending(scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, A) scores sorted descending per row, equal scores in anchor order, as
        onnxruntime's TopK orders them and torchvision's NMS breaks ties. ``sort(stable=True)``
        has no ONNX export; instead the (unstable) sort is re-sorted by the unique key
        (run of equal scores, anchor index)."""
        values, order = scores.sort(dim=1, descending=True)
        new_run = torch.cat(
            [torch.ones_like(values[:, :1], dtype=torch.bool), values[:, 1:] != values[:, :-1]],
            dim=1,
        )
        key = new_run.long().cumsum(1) * order.shape[1] + order
        position = key.sort(dim=1).indices
        return values.gather(1, position), order.gather(1, position)

    def _batched_nms(
        self, boxes: torch.Tensor, scores: torch.Tensor, image_idx: torch.Tensor, threshold: float
    ) -> torch.Tensor:
        """Indices of the NMS survivors of every image, ascending (= by image, then score
        descending, the candidates' order). Boxes of different images never overlap after
        shifting image i by i x (the boxes' whole extent + 1): torchvision's coordinate trick,
        with the extent instead of the largest coordinate since the boxes are unclipped and may
        be negative."""
        nms_boxes = boxes
        if self.model.nms_legacy_plus_one:
            # IoU with (x2 - x1 + 1)(y2 - y1 + 1) areas == plain IoU of boxes grown by 1
            nms_boxes = torch.cat([boxes[:, :2], boxes[:, 2:] + 1.0], dim=1)
        # a 0 joins the coordinates so that max / min exist without candidates
        coords = torch.cat([nms_boxes.reshape(-1), nms_boxes.new_zeros(1)])
        extent = coords.max() - coords.min() + 1.0
        shifted = nms_boxes + (image_idx.to(nms_boxes.dtype) * extent)[:, None]
        kept = torchvision.ops.nms(shifted, scores, _float32_below(threshold))
        return kept.sort().values

    @staticmethod
    def _rank_in_image(image_idx: torch.Tensor, num_images) -> torch.Tensor:
        """0-based position of each detection among those of its image (``image_idx`` sorted):
        a running count over the one-hot image ids, without a loop over images."""
        one_hot = (image_idx[:, None] == torch.arange(num_images, device=image_idx.device)).long()
        return (one_hot.cumsum(0) * one_hot).sum(1) - 1

    def sample_inputs(self, image: np.ndarray, batch_size: int = 1) -> Tuple[torch.Tensor, ...]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"RetinaFace export: sample image must be (H, W, 3) uint8, got "
                f"{image.shape} {image.dtype}"
            )
        if self.fixed_shape is not None:
            height, width = self.fixed_shape
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return (tensor.float()[None].repeat(batch_size, 1, 1, 1),)

    def dynamic_axes(self) -> Dict[str, Dict[int, str]]:
        images = {0: "batch"} if self.fixed_shape else {0: "batch", 2: "height", 3: "width"}
        axes = {"images": images}
        for name in self.output_names:
            raw = name.startswith("raw_")
            axes[name] = {0: "batch", 1: "anchors"} if raw else {0: "detections"}
        return axes

    def metadata(self) -> Dict[str, Any]:
        m = self.model
        meta = super().metadata()
        meta.update(
            input_format=self.input_format,
            num_landmarks=self.num_landmarks,
            score_threshold=float(m.score_threshold),
            topk_candidates=int(m.topk_candidates),
            nms_threshold=float(m.nms_threshold),
            max_detections_per_image=int(m.max_detections_per_image),
            nms_legacy_plus_one=bool(m.nms_legacy_plus_one),
        )
        return meta

    @staticmethod
    def outputs_to_instances(
        outputs: Dict[str, Any], image_sizes: List[Tuple[int, int]], metadata: Dict[str, Any]
    ) -> List[Instances]:
        """Per image ``Instances(pred_boxes, scores, pred_classes (0: face), pred_keypoints
        (K, 3): x, y, face score)`` as the eager model's output for an input without
        ``height`` / ``width``; no ``pred_keypoints`` for a model without landmarks."""
        batch_index = as_tensor(outputs["batch_index"]).long()
        boxes = as_tensor(outputs["boxes"]).float()
        scores = as_tensor(outputs["scores"]).float()
        landmarks = as_tensor(outputs["landmarks"]).float() if "landmarks" in outputs else None
        results = []
        for i, size in enumerate(image_sizes):
            sel = batch_index == i
            inst = Instances(tuple(size))
            inst.pred_boxes = Boxes(boxes[sel])
            inst.scores = scores[sel]
            inst.pred_classes = torch.zeros(int(sel.sum()), dtype=torch.int64)
            if landmarks is not None:
                points = landmarks[sel]
                inst.pred_keypoints = torch.cat(
                    [points, inst.scores[:, None, None].expand(-1, points.shape[1], 1)], dim=2
                )
            results.append(inst)
        return results
