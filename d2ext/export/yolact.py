"""YOLACT's export graph: raw pixels in, flat detections with full-image masks out.

The graph replays :class:`~d2ext.modeling.yolact.YOLACT` inference for a whole batch as one
tensor program: the S x S stretch and normalisation of ``preprocess_image``, the network
(``forward_raw``), the softmax, box decoding, Fast NMS (or greedy NMS) and the mask
assembly of ``inference`` at the input image size.

Batched Fast NMS. The eager ``detect`` + ``fast_nms`` run per image on the candidates (anchors
whose best foreground score is above the score threshold). Here every anchor stays in the
tensors and non-candidates get the score -1: the per-class descending sort puts them after all
candidates (softmax scores are >= 0), so the first ``top_k`` columns hold the eager candidates
in the eager order, followed by non-candidates that only sit in later rows of the upper-triangle
IoU matrix (they suppress nobody) and are masked out of the kept set. The kept (class, rank)
pairs are then ranked per image by score over all classes, as the eager second sort, and the
first ``max_detections`` survive. Sizes (anchors R, classes C, ``top_k``) are fixed by
``INPUT_SIZE``; only the batch, the image size and the detection count M are dynamic.
``NMS_TYPE: standard`` keeps the same candidates and ranking with torchvision's greedy ``nms``
on all (image, class) groups at once (:meth:`YOLACTExport._standard_nms`).

Ties. Both sorts are stable (ties keep the lower anchor / class-major index first): ONNX
``TopK`` breaks ties so, and a stable ``torch.sort`` does the same in eager and TorchScript.
The eager ``fast_nms`` calls ``sort`` without ``stable=True``, which on CPU does not promise an
order among equal scores; with distinct scores (any image without flat regions) the two agree
exactly.

Masks. ``sigmoid(P @ c)`` for each image's (padded) detections at prototype size, YOLACT's
crop (:mod:`d2ext.layers.prototype_masks`), then the bilinear resize of the kept detections to
the input H x W and the threshold: :func:`~d2ext.layers.assemble_masks_reference`'s chain.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.layers.wrappers import shapes_to_tensor
from detectron2.structures import Boxes, Instances
from torchvision.ops import nms

from d2ext.layers.prototype_masks import box_crop_region
from d2ext.modeling.yolact.fast_nms import batched_box_iou

from .core import ExportWrapper, as_tensor

__all__ = ["YOLACTExport"]

_DETECTION_OUTPUTS = ("batch_index", "boxes", "classes", "masks", "scores")
_RAW_OUTPUTS = ("raw_coeffs", "raw_deltas", "raw_logits", "raw_protos")


def _top_descending(x: torch.Tensor, dim: int, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first ``k`` of a stable descending sort along ``dim`` (equal values keep their index
    order). A stable ``torch.sort`` has no ONNX symbolic; ONNX ``TopK`` breaks ties by the lower
    index by definition, and with ``k`` below the axis length it selects rather than sorts."""
    k = min(int(k), x.shape[dim])
    if torch.onnx.is_in_onnx_export():
        return x.topk(k, dim=dim)
    values, indices = x.sort(dim=dim, descending=True, stable=True)
    return values.narrow(dim, 0, k), indices.narrow(dim, 0, k)


class YOLACTExport(ExportWrapper):
    """Export graph of a :class:`~d2ext.modeling.yolact.YOLACT` model.

    Input ``images``: (N, 3, H, W) float32 raw pixels 0..255 in the model's input format
    (``cfg.INPUT.FORMAT``), i.e. the eager ``image`` field as float.

    Outputs (sorted names), M = all images' detections, each image's by decreasing score:
    ``batch_index`` (M,) int64, ``boxes`` (M, 4) XYXY pixels of the H x W input (clipped),
    ``classes`` (M,) int64 (0-based foreground), ``masks`` (M, H, W) bool, ``scores`` (M,); with
    ``raw_outputs`` also the network's ``raw_coeffs`` (N, R, k), ``raw_deltas`` (N, R, 4),
    ``raw_logits`` (N, R, C + 1) and ``raw_protos`` (N, k, Hp, Wp).

    Args:
        model: a YOLACT in eval mode.
        fixed_shape: (H, W) of a fixed-size graph, or None (dynamic batch and image size).
        raw_outputs: add the raw network tensors.
        input_format: ``cfg.INPUT.FORMAT`` of the inputs, stored in :meth:`metadata`.
    """

    model_name = "YOLACT"
    input_names = ("images",)
    output_names = _DETECTION_OUTPUTS

    def __init__(
        self,
        model: torch.nn.Module,
        fixed_shape: Optional[Sequence[int]] = None,
        *,
        raw_outputs: bool = False,
        input_format: str = "BGR",
    ):
        super().__init__(model, fixed_shape)
        for attr in ("forward_raw", "box2box_transform", "input_size", "nms_type"):
            if not hasattr(model, attr):
                raise ValueError(
                    f"YOLACTExport wraps a YOLACT model (MODEL.META_ARCHITECTURE 'YOLACT'), "
                    f"got {type(model).__name__}"
                )
        if hasattr(model, "forward_video"):
            # YolactEdge: its non-keyframes read the previous keyframe's features (flow net,
            # warp, SPA), a state carried between calls that one traced graph cannot hold
            raise ValueError(
                f"{type(model).__name__} (MODEL.YOLACT_EDGE: keyframe state, flow net, "
                "USE_SPA) has no export: its non-keyframe path reads the previous keyframe's "
                "features. Export the same weights under MODEL.META_ARCHITECTURE 'YOLACT' for "
                "its per-image (every frame a keyframe) graph"
            )
        if model.nms_type not in ("fast", "standard"):
            raise ValueError(
                f"MODEL.YOLACT.NMS_TYPE {model.nms_type!r} cannot be exported ('fast' or 'standard')"
            )
        if model.topk_candidates < 1:
            raise ValueError(
                "MODEL.YOLACT.TOPK_CANDIDATES_TEST must be >= 1 to export, got "
                f"{model.topk_candidates}"
            )
        if model.max_detections_per_image < 1:
            raise ValueError(
                "MODEL.YOLACT.DETECTIONS_PER_IMAGE must be >= 1 to export, got "
                f"{model.max_detections_per_image}"
            )
        if input_format not in ("BGR", "RGB", "L"):
            raise ValueError(
                f"input_format (INPUT.FORMAT) must be BGR, RGB or L, got {input_format!r}"
            )
        self.raw_outputs = bool(raw_outputs)
        self.input_format = input_format
        names = _DETECTION_OUTPUTS + (_RAW_OUTPUTS if raw_outputs else ())
        self.output_names = tuple(sorted(names))

    # ------------------------------------------------------------------ graph
    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        m = self.model
        if not torch.jit.is_tracing():
            if m.training:
                raise ValueError("YOLACTExport: the model is in training mode; call model.eval()")
            if images.dim() != 4 or images.shape[1] not in (1, 3):
                raise ValueError(
                    f"YOLACTExport: images must be (N, 3, H, W) (or grayscale (N, 1, H, W)), got "
                    f"{tuple(images.shape)}"
                )
            self.check_image_size(int(images.shape[2]), int(images.shape[3]), "images")
        height, width = images.shape[-2:]
        x = images.to(device=m.device, dtype=torch.float32)
        if x.shape[1] == 1:  # grayscale, as preprocess_image
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, (m.input_size,) * 2, mode="bilinear", align_corners=False)
        x = (x - m.pixel_mean) / m.pixel_std
        _, protos, deltas, logits, coeffs, anchors = m.forward_raw(x)

        det = self._detect(deltas, F.softmax(logits, dim=-1), anchors.tensor)
        kept, classes, scores, det_boxes, anchor_idx = det
        n, num_det = kept.shape
        rel = det_boxes / m.input_size  # (N, K', 4) normalised, unclipped: the mask crop's boxes

        # every padded detection's mask at prototype size, cropped (the eager chain per image)
        num_protos, hp, wp = (int(s) for s in protos.shape[1:])  # fixed by INPUT_SIZE
        det_coeffs = coeffs.gather(1, anchor_idx[:, :, None].expand(-1, -1, num_protos))
        flat_protos = protos.permute(0, 2, 3, 1).reshape(n, hp * wp, num_protos)
        masks = torch.sigmoid(flat_protos @ det_coeffs.transpose(1, 2))  # (N, Hp*Wp, K')
        masks = masks.permute(0, 2, 1).reshape(-1, hp, wp)
        masks = masks * box_crop_region(rel.reshape(-1, 4), hp, wp, 1).to(masks.dtype)
        if m.mask_iou_net is not None:  # YOLACT++ re-scoring (predict_mask_iou) in batch
            iou = m.mask_iou_net(masks[:, None]).gather(1, classes.reshape(-1, 1))
            scores = scores * iou.reshape(n, num_det)

        sel = kept.reshape(-1).nonzero()[:, 0]  # image-major, then decreasing score
        size_xyxy = shapes_to_tensor([width, height, width, height], rel.device).to(rel.dtype)
        boxes = rel.reshape(-1, 4).index_select(0, sel) * size_xyxy
        boxes = torch.minimum(boxes.clamp(min=0), size_xyxy)  # Boxes.clip
        # one zero map more: the resize refuses an empty (M = 0) input, which the graph must run on
        masks = torch.cat([masks.index_select(0, sel), masks.new_zeros((1, hp, wp))])
        masks = F.interpolate(masks[None], (height, width), mode="bilinear", align_corners=False)
        masks = masks[0, :-1]
        out = {
            "batch_index": torch.div(sel, num_det, rounding_mode="floor"),
            "boxes": boxes,
            "classes": classes.reshape(-1).index_select(0, sel),
            "masks": masks > m.mask_threshold,
            "scores": scores.reshape(-1).index_select(0, sel),
        }
        if self.raw_outputs:
            out.update(raw_coeffs=coeffs, raw_deltas=deltas, raw_logits=logits, raw_protos=protos)
        return out

    def _detect(self, deltas: torch.Tensor, probs: torch.Tensor, anchors: torch.Tensor):
        """Batched ``YOLACT.detect``: deltas (N, R, 4), probs (N, R, C + 1), anchors (R, 4) ->
        per image K' = min(max_detections, C * top_k) slots by decreasing score: kept (N, K')
        bool (a real detection), classes (N, K') int64, scores (N, K'), boxes (N, K', 4) XYXY
        pixels of the S x S input, anchor indices (N, K')."""
        m = self.model
        n = probs.shape[0]
        fg = probs[:, :, 1:]
        cand = fg.amax(dim=2) > m.score_threshold  # (N, R)
        boxes = m.box2box_transform.apply_deltas(
            deltas.reshape(-1, 4), anchors[None].expand(n, -1, -1).reshape(-1, 4)
        ).reshape(n, -1, 4)

        # per class, candidates by decreasing score, then non-candidates (-1); the first top_k
        scores = torch.where(cand[:, :, None], fg, torch.full_like(fg, -1.0)).transpose(1, 2)
        scores, idx = _top_descending(scores, 2, m.topk_candidates)
        top_k = idx.shape[2]
        flat_idx = idx.reshape(n, -1)  # (N, C * top_k), class-major like the eager [keep]
        valid = cand.gather(1, flat_idx).reshape(idx.shape)
        cand_boxes = boxes.gather(1, flat_idx[:, :, None].expand(-1, -1, 4))  # (N, C*top_k, 4)
        if m.nms_type == "fast":
            iou = batched_box_iou(cand_boxes.reshape(-1, top_k, 4)).triu_(diagonal=1)
            keep = (iou.amax(dim=1) <= m.nms_threshold).reshape(idx.shape) & valid
            if m.second_threshold:
                keep = keep & (scores > m.score_threshold)
        else:
            keep = self._standard_nms(cand_boxes, scores, valid & (scores > m.score_threshold))

        # per image, the kept (class, rank) pairs by decreasing score over all classes
        ranked = torch.where(keep, scores, torch.full_like(scores, -1.0)).reshape(n, -1)
        order = _top_descending(ranked, 1, m.max_detections_per_image)[1]
        kept = keep.reshape(n, -1).gather(1, order)
        classes = torch.div(order, top_k, rounding_mode="floor")
        det_boxes = cand_boxes.gather(1, order[:, :, None].expand(-1, -1, 4))
        return (
            kept,
            classes,
            scores.reshape(n, -1).gather(1, order),
            det_boxes,
            flat_idx.gather(1, order),
        )

    def _standard_nms(
        self, cand_boxes: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """``standard_nms`` of every image at once; (N, C, top_k) bool of the kept.

        torchvision's ``nms`` (ONNX ``NonMaxSuppression``) on one set in which every (image,
        class) group is moved apart, as ``batched_nms``'s coordinate trick (what D2's
        ``batched_nms`` traces to) does with one offset per group: here the class shifts x and
        the image shifts y, so the offsets grow with max(C, N) rather than C * N (float32
        rounds the shifted coordinates), and the stride is the boxes' full span (decoded boxes
        can start below 0, where an offset of max + 1 would let groups overlap)."""
        num_classes, top_k = scores.shape[1:]
        sel = valid.reshape(-1).nonzero()[:, 0]
        boxes = cand_boxes.reshape(-1, 4).index_select(0, sel)
        group = torch.div(sel, top_k, rounding_mode="floor")  # image * C + class
        image = torch.div(group, num_classes, rounding_mode="floor")
        cls = group - image * num_classes
        coords = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)])  # min/max of an empty set
        span = coords.max() - coords.min() + 1
        shift_x, shift_y = cls.to(boxes.dtype) * span, image.to(boxes.dtype) * span
        shifted = boxes + torch.stack([shift_x, shift_y, shift_x, shift_y], dim=1)
        kept = nms(shifted, scores.reshape(-1).index_select(0, sel), self.model.nms_threshold)
        hits = sel.index_select(0, kept)
        flat = torch.zeros_like(valid.reshape(-1))
        flat = flat.scatter(0, hits, torch.ones_like(hits, dtype=torch.bool))
        return flat.reshape(valid.shape)

    # ------------------------------------------------------------------ around the graph
    def sample_inputs(self, image: np.ndarray, batch_size: int = 1) -> Tuple[torch.Tensor, ...]:
        """(batch_size, C, H, W) float32 from an (H, W, C) uint8 image in ``input_format``
        (C = 3, or 1 for "L"), resized (cv2, bilinear) to ``fixed_shape`` when it is set."""
        channels = 1 if self.input_format == "L" else 3
        if isinstance(image, np.ndarray) and image.ndim == 2 and channels == 1:
            image = image[:, :, None]
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != channels:
            raise ValueError(
                f"YOLACTExport.sample_inputs: image must be an (H, W, {channels}) array for "
                f"input_format {self.input_format}, got {getattr(image, 'shape', type(image))}"
            )
        if image.dtype != np.uint8:
            raise ValueError(f"YOLACTExport.sample_inputs: image must be uint8, got {image.dtype}")
        if self.fixed_shape is not None and image.shape[:2] != self.fixed_shape:
            image = cv2.resize(image, self.fixed_shape[::-1], interpolation=cv2.INTER_LINEAR)
            image = image.reshape(*self.fixed_shape, channels)  # cv2 drops a single channel
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
        return (x[None].repeat(int(batch_size), 1, 1, 1).to(self.model.device),)

    def dynamic_axes(self) -> Dict[str, Dict[int, str]]:
        image = {0: "batch"} if self.fixed_shape else {0: "batch", 2: "height", 3: "width"}
        axes = {"images": image}
        for name in ("batch_index", "boxes", "classes", "scores"):
            axes[name] = {0: "detections"}
        axes["masks"] = {0: "detections"}
        if not self.fixed_shape:
            axes["masks"].update({1: "height", 2: "width"})
        if self.raw_outputs:
            for name in _RAW_OUTPUTS:
                axes[name] = {0: "batch"}
        return axes

    def metadata(self) -> Dict[str, Any]:
        m = self.model
        meta = super().metadata()
        meta.update(
            input_format=self.input_format,
            num_classes=int(m.num_classes),
            input_size=int(m.input_size),
            score_threshold=float(m.score_threshold),
            nms_type=m.nms_type,
            nms_threshold=float(m.nms_threshold),
            max_detections_per_image=int(m.max_detections_per_image),
            mask_threshold=float(m.mask_threshold),
            mask_iou_on=m.mask_iou_net is not None,
            raw_outputs=self.raw_outputs,
        )
        return meta

    @staticmethod
    def outputs_to_instances(
        outputs: Dict[str, Any], image_sizes: List[Tuple[int, int]], metadata: Dict[str, Any]
    ) -> List[Instances]:
        """Per input image, ``Instances`` of its size with ``pred_boxes``, ``scores``,
        ``pred_classes`` and ``pred_masks`` (bool), as ``YOLACT.inference`` gives for an input
        without ``height``/``width`` (the graph's masks are at the input size)."""
        batch_index = as_tensor(outputs["batch_index"]).long()
        boxes = as_tensor(outputs["boxes"]).float()
        scores = as_tensor(outputs["scores"]).float()
        classes = as_tensor(outputs["classes"]).long()
        masks = as_tensor(outputs["masks"]).bool()
        if len(batch_index) and int(batch_index.max()) >= len(image_sizes):
            raise ValueError(
                f"YOLACT outputs hold detections of image {int(batch_index.max())}, but "
                f"image_sizes has {len(image_sizes)} images"
            )
        results = []
        for i, (h, w) in enumerate(image_sizes):
            if tuple(masks.shape[1:]) != (int(h), int(w)):
                raise ValueError(
                    f"YOLACT masks are {tuple(masks.shape[1:])} (the graph's input size); "
                    f"image_sizes[{i}] is {(h, w)}"
                )
            sel = (batch_index == i).nonzero()[:, 0]
            inst = Instances((int(h), int(w)))
            inst.pred_boxes = Boxes(boxes[sel])
            inst.scores = scores[sel]
            inst.pred_classes = classes[sel]
            inst.pred_masks = masks[sel]
            results.append(inst)
        return results
