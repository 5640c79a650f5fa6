"""Top-down landmark localisation on crops (faces, body poses): a Stacked Hourglass with either
per-keypoint heatmaps (the paper) or a coordinate-regression head (the baseline).

Inputs come from :class:`d2ext.data.mappers.TopDownLandmarkMapper` (one crop per instance box).
Coordinates: D2 continuous coordinates in the crop and in the image. Heatmap pixel j covers crop
pixels [s j, s (j + 1)) with s = crop size / heatmap size (the backbone's stride 4), so a crop
point x is ``x / s`` in the princeton codec convention (pixel j spans [j, j + 1)) and
``x / s - 0.5`` in the mmpose/DARK one (pixel j centred at j): both are
``x / s - 0.5 + codec.pixel_offset``. Decoded points go back the same way, then through the
input's ``crop_to_image`` affine.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.data.detection_utils import create_keypoint_hflip_indices
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import Boxes, Instances
from torch import nn

from ..common import HeatmapCodec, flip_test_average
from .losses import HEATMAP_LOSSES, heatmap_mse_loss, keypoint_l1_loss
from .regression_head import CoordinateRegressionHead

__all__ = ["TopDownLandmarkDetector"]

HEADS = ("heatmap", "regression")


@META_ARCH_REGISTRY.register()
class TopDownLandmarkDetector(nn.Module):
    """Stacked Hourglass on instance crops -> K landmarks per instance.

    ``forward(batched_inputs)``: a list of the mapper's dicts, each with ``"crops"`` (R, C, h, w)
    in ``INPUT.FORMAT``, ``"crop_to_image"`` (R, 2, 3), ``"boxes"`` (R, 4) XYXY image pixels,
    ``"height"``, ``"width"`` and, at training, ``"gt_keypoints"`` (R, K, 3) (x, y, v) in crop
    coordinates (v > 0: labelled).

    Training returns ``{"loss_heatmap"}`` (heatmap head: MSE on every stack) or
    ``{"loss_keypoint_l1"}`` (regression head). Inference returns, per image,
    ``{"instances": Instances((height, width))}`` with one instance per input box, in order:
    ``pred_boxes`` (the input boxes), ``pred_classes`` (0), ``pred_keypoints`` (R, K, 3) = x, y in
    D2 image coordinates and a per-keypoint score (heatmap: the decoded peak value; regression:
    1, it has no confidence), ``scores`` (R,) the mean keypoint score.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        crop_size: Tuple[int, int],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        head: str = "heatmap",
        codec: Optional[HeatmapCodec] = None,
        heatmap_loss: str = "mse_weighted",
        heatmap_loss_weight: float = 1.0,
        regression_head: Optional[nn.Module] = None,
        regression_loss_weight: float = 1.0,
        flip_test_indices: Optional[Sequence[int]] = None,
        flip_shift: bool = False,
    ):
        """
        Args:
            backbone: a :class:`StackedHourglass` (or any backbone with its outputs: stride-4
                heatmaps per stack, ``forward_with_features`` and ``size_divisibility``).
            crop_size: (h, w) of the input crops, divisible by ``backbone.size_divisibility``.
            pixel_mean, pixel_std: per-channel normalisation, in the crops' channel order.
            head: ``"heatmap"`` or ``"regression"``.
            codec: heatmap head: encodes the targets and decodes the last stack's maps; its
                ``heatmap_size`` must be the crop size over the backbone stride.
            heatmap_loss: ``"mse_weighted"`` or ``"princeton"`` (see :func:`heatmap_mse_loss`).
            heatmap_loss_weight, regression_loss_weight: loss multipliers.
            regression_head: regression head: (N, C, h, w) last-stack features -> (N, K, 2)
                crop-normalised xy (:class:`CoordinateRegressionHead`).
            flip_test_indices: D2's ``create_keypoint_hflip_indices`` of the data; given, the
                test averages each crop with its flipped mirror (heatmaps or coordinates).
            flip_shift: mmpose's one-pixel shift of the flipped-back heatmaps.
        """
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"MODEL.LANDMARK.HEAD must be one of {HEADS}, got {head!r}")
        if heatmap_loss not in HEATMAP_LOSSES:
            raise ValueError(
                f"MODEL.LANDMARK.LOSS must be one of {HEATMAP_LOSSES}, got {heatmap_loss!r}"
            )
        self.backbone = backbone
        self.crop_size = tuple(int(s) for s in crop_size)
        d = backbone.size_divisibility
        if len(self.crop_size) != 2 or any(s <= 0 or s % d for s in self.crop_size):
            raise ValueError(
                f"INPUT.LANDMARK.CROP_SIZE {tuple(crop_size)} must be (h, w) divisible by the "
                f"backbone's size_divisibility {d} (4 * 2^MODEL.HOURGLASS.DEPTH)"
            )
        self._last = list(backbone.output_shape())[-1]
        stride = backbone.output_shape()[self._last].stride
        self.heatmap_size = (self.crop_size[0] // stride, self.crop_size[1] // stride)
        self.num_keypoints = backbone.output_shape()[self._last].channels
        self.head = head
        self.codec = codec
        self.heatmap_loss = heatmap_loss
        self.heatmap_loss_weight = heatmap_loss_weight
        self.regression_head = regression_head
        self.regression_loss_weight = regression_loss_weight
        if head == "heatmap":
            if codec is None or tuple(codec.heatmap_size) != self.heatmap_size:
                raise ValueError(
                    f"the heatmap head needs a HeatmapCodec of heatmap_size {self.heatmap_size} "
                    f"(crop {self.crop_size} / stride {stride}), got {codec!r}"
                )
            if regression_head is not None:  # its parameters would never get a gradient
                raise ValueError("head 'heatmap' takes no regression_head")
        else:
            if regression_head is None:
                raise ValueError("MODEL.LANDMARK.HEAD 'regression' needs a regression_head")
            # the last stack's heatmaps feed nothing in this mode: frozen, so every trainable
            # parameter gets a gradient (DDP) and the optimizer skips it
            if hasattr(backbone, "stacks"):
                backbone.stacks[-1].predictor.requires_grad_(False)
        self.flip_test_indices = None
        if flip_test_indices is not None:
            self.flip_test_indices = [int(i) for i in flip_test_indices]
            if sorted(self.flip_test_indices) != list(range(self.num_keypoints)):
                raise ValueError(
                    f"flip_test_indices must permute the {self.num_keypoints} keypoints, got "
                    f"{self.flip_test_indices}"
                )
        self.flip_shift = flip_shift
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        lm = cfg.MODEL.LANDMARK
        crop_size = tuple(cfg.INPUT.LANDMARK.CROP_SIZE)
        ret = {
            "backbone": backbone,
            "crop_size": crop_size,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "head": lm.HEAD,
            "heatmap_loss": lm.LOSS,
            "heatmap_loss_weight": lm.HEATMAP_LOSS_WEIGHT,
            "regression_loss_weight": lm.REGRESSION_LOSS_WEIGHT,
            "flip_shift": lm.FLIP_SHIFT,
        }
        if lm.HEAD == "heatmap":
            stride = backbone.output_shape()[list(backbone.output_shape())[-1]].stride
            ret["codec"] = HeatmapCodec(
                (crop_size[0] // stride, crop_size[1] // stride),
                lm.SIGMA,
                unbiased_encoding=lm.UNBIASED_ENCODING,
                decode=lm.DECODE,
                blur_kernel=lm.BLUR_KERNEL,
            )
        elif lm.HEAD == "regression":
            ret["regression_head"] = CoordinateRegressionHead(cfg)
        if lm.FLIP_TEST:
            names = tuple(cfg.DATASETS.TEST) or tuple(cfg.DATASETS.TRAIN)
            try:
                ret["flip_test_indices"] = create_keypoint_hflip_indices(names)
            except (AttributeError, KeyError, IndexError) as e:
                raise ValueError(
                    f"MODEL.LANDMARK.FLIP_TEST needs the keypoint_names and keypoint_flip_map "
                    f"metadata of {names}: {e}"
                ) from e
        return ret

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, batched_inputs: List[Dict]) -> torch.Tensor:
        """Every input's crops, normalised and concatenated: (sum R, C, h, w) float."""
        crops = []
        for i, x in enumerate(batched_inputs):
            if "crops" not in x:
                raise ValueError(
                    f"input {i} ({x.get('file_name', 'no file_name')}) has no 'crops': "
                    f"TopDownLandmarkDetector takes INPUT.DATASET_MAPPER_NAME: "
                    f"TopDownLandmarkMapper inputs"
                )
            if x["crops"].dim() != 4 or tuple(x["crops"].shape[-2:]) != self.crop_size:
                raise ValueError(
                    f"input {i} ({x.get('file_name', 'no file_name')}): crops must be "
                    f"(R, C, {self.crop_size[0]}, {self.crop_size[1]}) (INPUT.LANDMARK.CROP_SIZE), "
                    f"got {tuple(x['crops'].shape)}"
                )
            crops.append(x["crops"].to(self.device))
        crops = torch.cat(crops).float()
        return (crops - self.pixel_mean) / self.pixel_std

    def forward(self, batched_inputs: List[Dict]):
        crops = self.preprocess(batched_inputs)
        if self.training:
            return self.losses(crops, batched_inputs)
        return self.postprocess(batched_inputs, *self.predict(crops))

    def _stride(self) -> torch.Tensor:
        """(s_x, s_y) crop pixels per heatmap pixel."""
        (h, w), (hh, hw) = self.crop_size, self.heatmap_size
        return torch.tensor([w / hw, h / hh], device=self.device)

    def encode_targets(self, gt_keypoints: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(R, K, 3) crop (x, y, v) -> the codec's (R, K, h, w) Gaussian targets and (R, K)
        weights (0 for v = 0 and points off the map)."""
        points = gt_keypoints[..., :2] / self._stride() - 0.5 + self.codec.pixel_offset
        return self.codec.encode(points, gt_keypoints[..., 2] > 0)

    def losses(self, crops: torch.Tensor, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        name = "loss_heatmap" if self.head == "heatmap" else "loss_keypoint_l1"
        if len(crops) == 0:  # no instance in the batch: a zero loss that still reaches the graph
            zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            return {name: zero}
        gt = torch.cat(
            [x["gt_keypoints"].to(self.device) for x in batched_inputs if len(x["crops"])]
        )
        if gt.shape != (len(crops), self.num_keypoints, 3):
            raise ValueError(
                f"gt_keypoints must be (R, K, 3) = ({len(crops)}, {self.num_keypoints}, 3) "
                f"(K = MODEL.HOURGLASS.NUM_KEYPOINTS), got {tuple(gt.shape)}"
            )
        labelled = gt[..., 2] > 0
        if self.head == "heatmap":
            outputs = self.backbone(crops)
            targets, weights = self.encode_targets(gt)
            loss = heatmap_mse_loss(list(outputs.values()), targets, weights, self.heatmap_loss)
            return {name: self.heatmap_loss_weight * loss}
        _, features = self.backbone.forward_with_features(crops)
        pred = self.regression_head(features)
        size = torch.tensor(self.crop_size[::-1], device=self.device, dtype=pred.dtype)
        loss = keypoint_l1_loss(pred, gt[..., :2] / size, labelled.to(pred.dtype))
        return {name: self.regression_loss_weight * loss}

    @torch.no_grad()
    def predict(self, crops: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(R, C, h, w) normalised crops -> (R, K, 2) xy in crop coordinates, (R, K) scores."""
        r, k = len(crops), self.num_keypoints
        if r == 0:
            return crops.new_zeros((0, k, 2)), crops.new_zeros((0, k))
        flip = self.flip_test_indices
        if self.head == "heatmap":
            heatmaps = self.backbone(crops)[self._last]
            if flip is not None:
                mirrored = self.backbone(crops.flip(-1))[self._last]
                pairs = [(i, j) for i, j in enumerate(flip) if i < j]
                heatmaps = flip_test_average(heatmaps, mirrored, pairs, shift=self.flip_shift)
            points, scores = self.codec.decode(heatmaps)
            return (points + 0.5 - self.codec.pixel_offset) * self._stride(), scores
        pred = self.regression_head(self.backbone.forward_with_features(crops)[1])
        if flip is not None:
            mirrored = self.regression_head(self.backbone.forward_with_features(crops.flip(-1))[1])
            mirrored = mirrored[:, flip]
            mirrored[..., 0] = 1.0 - mirrored[..., 0]
            pred = 0.5 * (pred + mirrored)
        size = torch.tensor(self.crop_size[::-1], device=self.device, dtype=pred.dtype)
        return pred * size, torch.ones((r, k), device=self.device, dtype=pred.dtype)

    def postprocess(
        self, batched_inputs: List[Dict], points: torch.Tensor, scores: torch.Tensor
    ) -> List[Dict[str, Instances]]:
        """Crop points -> image points per input, as the class docstring's ``Instances``."""
        results, start = [], 0
        for x in batched_inputs:
            r = len(x["crops"])
            affine = x["crop_to_image"].to(self.device, points.dtype)
            xy = points[start : start + r]
            xy = torch.einsum("rij,rkj->rki", affine[:, :, :2], xy) + affine[:, None, :, 2]
            score = scores[start : start + r]
            start += r
            instances = Instances((x["height"], x["width"]))
            instances.pred_boxes = Boxes(x["boxes"].to(self.device, torch.float32).reshape(-1, 4))
            instances.scores = score.mean(dim=1)
            instances.pred_classes = torch.zeros(r, dtype=torch.int64, device=self.device)
            instances.pred_keypoints = torch.cat([xy, score[..., None]], dim=-1)
            results.append({"instances": instances})
        return results
