"""A small stacked hourglass as the keypoint head of a stock D2 Keypoint R-CNN.

``MODEL.ROI_KEYPOINT_HEAD.NAME: HourglassKeypointHead`` swaps it in for D2's
``KRCNNConvDeconvUpsampleHead``; D2's ``StandardROIHeads``, keypoint pooler, ``COCOEvaluator``
(keypoint OKS AP) and ``Visualizer`` work unchanged on its outputs.

Network, for RoI features (R, C, P, P) (P = ``POOLER_RESOLUTION``, 14 in D2):
conv3x3 + norm + ReLU to ``width`` -> 4x4 transposed conv, stride 2 (as D2's head) to 2P ->
``num_stacks`` :class:`HourglassStack` (the backbone's stacks: hourglass of ``depth`` levels,
residual, 1x1 features, 1x1 to K heatmaps, merge convs between stacks) -> each stack's K maps
bilinearly upsampled 2x to S = 4P (56 in D2, its keypoint heatmap size).

Loss (per stack, averaged over the stacks: intermediate supervision at the stock head's total
weight): Gaussian targets from the shared :class:`HeatmapCodec`; per keypoint the squared error
SUMMED over the S x S pixels (a mean would be ~1e-3: the sum is ~pi sigma^2 = 12.6 at init for
sigma 2, the order of D2's cross-entropy ln(S^2) = 8.0), times the keypoint's weight, summed and
divided like D2's ``keypoint_rcnn_loss``: by the number of valid keypoints in the batch
(``NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS``) or by ``#images * K * BATCH_SIZE_PER_IMAGE *
POSITIVE_FRACTION``; times ``LOSS_WEIGHT``. A keypoint is valid exactly where D2's
``Keypoints.to_heatmap`` says so (visible and inside the proposal box) and the codec gives it a
target (finite coordinates). No valid keypoint (or no RoI): a zero loss with a gradient path
(D2's ``pred.sum() * 0``).

Optimisation. Summed over pixels, the loss is stiff along the directions that raise a whole map
at once (e.g. the predictor's bias: curvature 2 S^2 per map), which D2's softmax cross-entropy
does not see; plain SGD at D2's learning rates diverges on it. The synthetic configs clip
gradients (``SOLVER.CLIP_GRADIENTS``, per-parameter norm 10): measured on one batch of 8 RoIs,
the head's loss then falls from 12.6 to 1.7 in 150 steps of SGD lr 0.01 with D2's warmup
(to 4.2 with ``LOSS_WEIGHT`` 0.1; 0.05 is stable without clipping, and slower still).

Coordinates. Keypoints and boxes are D2 continuous image coordinates (pixel j covers [j, j+1)).
For a box x0..x1 (width w) the heatmap covers it with S pixels of w / S image pixels; heatmap
pixel j's centre is image x0 + (j + 0.5) * w / S (D2's ``heatmaps_to_keypoints``). In the
codec's mmpose/dark convention (pixel j's centre at x_hm = j) a point maps to
x_hm = (x - x0) * S / w - 0.5 and back by x = x0 + (x_hm + 0.5) * w / S; with ``decode:
princeton`` (centre at j + 0.5) both shift by the codec's ``pixel_offset``.
"""

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ConvTranspose2d, ShapeSpec, cat, get_norm
from detectron2.modeling.roi_heads import ROI_KEYPOINT_HEAD_REGISTRY, BaseKeypointRCNNHead
from detectron2.structures import Instances
from torch import nn

from ..common import HeatmapCodec
from .backbone import HourglassStack

__all__ = ["HourglassKeypointHead"]

_KEY = "MODEL.ROI_KEYPOINT_HEAD.HOURGLASS"


@ROI_KEYPOINT_HEAD_REGISTRY.register()
class HourglassKeypointHead(BaseKeypointRCNNHead):
    """Stacked-hourglass keypoint head with Gaussian-MSE heatmap targets and sub-pixel decoding
    (see the module docstring for the network, loss and coordinates).

    ``forward(x, instances)`` with x (R, C, P, P) pooled RoI features, R = the total number of
    boxes in ``instances`` (per-image order). Training: ``instances`` carry ``proposal_boxes``
    and ``gt_keypoints``; returns ``{"loss_keypoint": scalar}``. Inference: ``instances`` carry
    ``pred_boxes``; each gets ``pred_keypoints`` (Ri, K, 3) float (x, y in D2 image
    coordinates, score = the last stack's heatmap value at the peak) and
    ``pred_keypoint_heatmaps`` (Ri, K, S, S) (the last stack's maps), as D2's
    ``keypoint_rcnn_inference``.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_keypoints: int,
        num_stacks: int = 2,
        width: int = 128,
        depth: int = 2,
        norm: str = "BN",
        sigma: float = 2.0,
        unbiased_encoding: bool = True,
        decode: str = "dark",
        blur_kernel: int = 11,
        loss_weight: float = 1.0,
        loss_normalizer: Union[float, str] = "visible",
    ):
        """
        Args:
            input_shape: channels C and side P of the pooled RoI features (square).
            num_keypoints: K heatmaps per stack.
            num_stacks: hourglass stacks, each supervised; the last one is decoded.
            width: channels of the input conv, the transposed conv and the hourglasses.
            depth: 2x poolings per hourglass; 2P must be divisible by 2^depth.
            norm: D2 norm of the input conv and every residual ("BN", "GN", "SyncBN", ...).
            sigma: target Gaussian sigma in heatmap (S x S) pixels.
            unbiased_encoding: sub-pixel Gaussian centres (DARK) instead of integer ones.
            decode: ``HeatmapCodec`` decode mode ("dark", "mmpose", "princeton").
            blur_kernel: DARK's blur size.
            loss_weight, loss_normalizer: as D2's ``BaseKeypointRCNNHead``.
        """
        super().__init__(
            num_keypoints=num_keypoints, loss_weight=loss_weight, loss_normalizer=loss_normalizer
        )
        for name, value, low in (
            ("NUM_STACKS", num_stacks, 1),
            ("WIDTH", width, 2),
            ("DEPTH", depth, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{_KEY}.{name} must be an int >= {low}, got {value!r}")
        side = input_shape.height
        if side is None or side != input_shape.width:
            raise ValueError(
                "HourglassKeypointHead needs square pooled features of known size "
                f"(MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION), got input_shape {input_shape}"
            )
        if (2 * side) % 2**depth:
            raise ValueError(
                f"{_KEY}.DEPTH={depth}: the hourglasses run at 2 * POOLER_RESOLUTION = "
                f"{2 * side}, which must be divisible by 2^DEPTH = {2**depth}"
            )
        self.heatmap_size = 4 * side
        try:
            self.codec = HeatmapCodec(
                (self.heatmap_size, self.heatmap_size),
                sigma,
                unbiased_encoding=unbiased_encoding,
                decode=decode,
                blur_kernel=blur_kernel,
            )
        except ValueError as e:
            raise ValueError(f"{_KEY} (SIGMA / DECODE / BLUR_KERNEL): {e}") from e

        self.input_conv = Conv2d(
            input_shape.channels,
            width,
            3,
            padding=1,
            norm=get_norm(norm, width),
            activation=F.relu,
        )
        self.upsample = ConvTranspose2d(width, width, 4, stride=2, padding=1)
        self.stacks = nn.ModuleList(
            HourglassStack(width, num_keypoints, depth=depth, last=i == num_stacks - 1, norm=norm)
            for i in range(num_stacks)
        )
        for layer in (self.input_conv, self.upsample):
            # D2's keypoint head init (Caffe2's MSRAFill)
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(layer.bias, 0)
        for stack in self.stacks:
            # near-zero initial heatmaps (mmpose's final-layer init): the loss starts at the
            # targets' energy, not at a random map's
            nn.init.normal_(stack.predictor.weight, std=0.001)
            nn.init.constant_(stack.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        hg = cfg.MODEL.ROI_KEYPOINT_HEAD.HOURGLASS
        ret.update(
            input_shape=input_shape,
            num_stacks=hg.NUM_STACKS,
            width=hg.WIDTH,
            depth=hg.DEPTH,
            norm=hg.NORM,
            sigma=hg.SIGMA,
            unbiased_encoding=hg.UNBIASED_ENCODING,
            decode=hg.DECODE,
            blur_kernel=hg.BLUR_KERNEL,
        )
        return ret

    def layers(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(R, C, P, P) RoI features -> every stack's heatmaps, each (R, K, S, S), S = 4P."""
        x = self.upsample(self.input_conv(x))
        heatmaps = []
        for stack in self.stacks:
            maps, x = stack(x)
            heatmaps.append(
                F.interpolate(maps, scale_factor=2.0, mode="bilinear", align_corners=False)
            )
        return heatmaps

    def forward(self, x: torch.Tensor, instances: List[Instances]):
        heatmaps = self.layers(x)
        if self.training:
            num_images = len(instances)
            normalizer = (
                None if self.loss_normalizer == "visible" else num_images * self.loss_normalizer
            )
            loss = self.loss(heatmaps, instances, normalizer=normalizer)
            return {"loss_keypoint": loss * self.loss_weight}
        self.inference(heatmaps[-1], instances)
        return instances

    # ------------------------------------------------------------------ training
    def to_heatmap_coords(self, points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(R, K, 2) xy in D2 image coordinates, (R, 4) XYXY boxes -> (R, K, 2) xy in the
        codec's heatmap convention (see the module docstring)."""
        size = self.heatmap_size
        origin, extent = boxes[:, None, :2], (boxes[:, None, 2:] - boxes[:, None, :2])
        return (points - origin) * size / extent - 0.5 + self.codec.pixel_offset

    def from_heatmap_coords(self, coords: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_heatmap_coords`: codec xy (R, K, 2) -> D2 image xy."""
        size = self.heatmap_size
        origin, extent = boxes[:, None, :2], (boxes[:, None, 2:] - boxes[:, None, :2])
        return origin + (coords - self.codec.pixel_offset + 0.5) * extent / size

    def targets(self, instances: Sequence[Instances]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Targets of the RoIs of ``instances`` (``proposal_boxes``, ``gt_keypoints``), images
        without RoIs skipped.

        Returns:
            heatmaps (R, K, S, S) float32 Gaussian targets; weights (R, K) float32, 1 for a
            valid keypoint (D2's ``to_heatmap`` valid: labelled v > 0 and inside the box; the
            codec: finite), else 0 (and an all-zero map).
        """
        points, valid, boxes = [], [], []
        for inst in instances:
            if len(inst) == 0:
                continue
            box = inst.proposal_boxes.tensor
            keypoints = inst.gt_keypoints
            points.append(keypoints.tensor[..., :2])
            valid.append(keypoints.to_heatmap(box, self.heatmap_size)[1])
            boxes.append(box)
        if not boxes:
            k, s = self.num_keypoints, self.heatmap_size
            return torch.zeros(0, k, s, s), torch.zeros(0, k)
        boxes = cat(boxes, dim=0)
        coords = self.to_heatmap_coords(cat(points, dim=0), boxes)
        return self.codec.encode(coords, cat(valid, dim=0))

    def loss(
        self,
        heatmaps: Sequence[torch.Tensor],
        instances: Sequence[Instances],
        normalizer: Optional[float] = None,
    ) -> torch.Tensor:
        """Gaussian-MSE of every stack's (R, K, S, S) ``heatmaps`` (module docstring).
        ``normalizer`` None: divide by the number of valid keypoints, as D2."""
        target, weight = self.targets(instances)
        num_valid = int((weight > 0).sum())
        if num_valid == 0:
            return sum(h.sum() for h in heatmaps) * 0.0
        target, weight = target.to(heatmaps[-1]), weight.to(heatmaps[-1])
        losses = [(((h - target) ** 2).sum(dim=(2, 3)) * weight).sum() for h in heatmaps]
        return sum(losses) / len(losses) / (num_valid if normalizer is None else normalizer)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def inference(self, heatmaps: torch.Tensor, instances: List[Instances]) -> None:
        """Decode (R, K, S, S) ``heatmaps`` of the ``pred_boxes`` of ``instances`` into their
        ``pred_keypoints`` (Ri, K, 3) (x, y, score) and ``pred_keypoint_heatmaps``."""
        boxes = cat([inst.pred_boxes.tensor for inst in instances], dim=0)
        heatmaps = heatmaps.detach()
        coords, scores = self.codec.decode(heatmaps)
        xy = self.from_heatmap_coords(coords, boxes.to(coords))
        keypoints = torch.cat([xy, scores[..., None]], dim=-1)
        counts = [len(inst) for inst in instances]
        for inst, kpts, maps in zip(
            instances, keypoints.split(counts, dim=0), heatmaps.split(counts, dim=0)
        ):
            inst.pred_keypoints = kpts
            inst.pred_keypoint_heatmaps = maps
