"""Export graph of the top-down landmark model (:class:`TopDownLandmarkDetector`, Stacked
Hourglass with the heatmap or the coordinate-regression head).

The graph runs on crops, as the model does: the mapper's (or any) affine crops of the instance
boxes go in with their crop -> image affines, image keypoints come out. Inside: normalisation,
the backbone, the flip test when the model has one, the codec's decode (argmax + quarter-pixel
step in the princeton or mmpose convention, or DARK) or the regression head, and the crop ->
image affine, each with the same tensor operations as the eager model's ``predict`` and
``postprocess``. Crops have the model's fixed ``INPUT.LANDMARK.CROP_SIZE``; the number of crops R
is dynamic.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from detectron2.structures import Boxes, Instances

from ..modeling.common import flip_test_average
from ..modeling.hourglass import TopDownLandmarkDetector
from .core import ExportWrapper, as_tensor

__all__ = ["LandmarkExport"]

BoxesArg = Union[torch.Tensor, np.ndarray, Sequence[Any]]


class LandmarkExport(ExportWrapper):
    """``forward(crops, crop_to_image)`` -> ``{"keypoints"}`` (+ the raw network outputs).

    Inputs:
        crops: (R, C, h, w) float32 raw pixels 0..255 in ``INPUT.FORMAT`` channel order, (h, w)
            the model's ``INPUT.LANDMARK.CROP_SIZE`` (R dynamic).
        crop_to_image: (R, 2, 3) float32 affines mapping D2 continuous crop coordinates to image
            coordinates (the mapper's ``"crop_to_image"``).

    Outputs (sorted names):
        keypoints: (R, K, 3) x, y in image pixels (D2 continuous coordinates) and the per-keypoint
            score (heatmap head: the decoded peak value; regression head: 1).
        raw_heatmaps (heatmap head, ``raw_outputs``): (R, K, h/4, w/4) the maps the codec
            decodes: the last stack's, averaged with the flipped-back maps of the mirrored crops
            when the model flip-tests.
        raw_coords (regression head, ``raw_outputs``): (R, K, 2) the head's crop-normalised xy
            (0..1 across the crop), flip-averaged likewise.

    Args:
        model: a built eval-mode :class:`TopDownLandmarkDetector`.
        fixed_shape: None or the model's crop size: the crops' size is always fixed.
        raw_outputs: add the raw outputs above.
        input_format: ``INPUT.FORMAT`` of the crops, stored in the metadata for a runtime (the
            model does not hold it); None: the model's ``input_format`` attribute if it has one,
            else D2's default ``"BGR"``.
    """

    model_name = "TopDownLandmarkDetector"
    input_names = ("crops", "crop_to_image")

    def __init__(
        self,
        model: TopDownLandmarkDetector,
        fixed_shape: Optional[Sequence[int]] = None,
        *,
        raw_outputs: bool = False,
        input_format: Optional[str] = None,
    ):
        if not isinstance(model, TopDownLandmarkDetector):
            raise ValueError(
                f"LandmarkExport exports a TopDownLandmarkDetector (MODEL.META_ARCHITECTURE), "
                f"got {type(model).__name__}"
            )
        crop_size = tuple(model.crop_size)
        if fixed_shape is not None and tuple(int(s) for s in fixed_shape) != crop_size:
            raise ValueError(
                f"TopDownLandmarkDetector crops are always INPUT.LANDMARK.CROP_SIZE {crop_size}; "
                f"fixed_shape {tuple(fixed_shape)} differs (set the crop size in the config)"
            )
        super().__init__(model, fixed_shape=crop_size)
        self.raw_outputs = bool(raw_outputs)
        self.input_format = input_format or getattr(model, "input_format", None) or "BGR"
        self.head = model.head
        raw = "raw_heatmaps" if self.head == "heatmap" else "raw_coords"
        self.output_names = ("keypoints", raw) if self.raw_outputs else ("keypoints",)
        shapes = model.backbone.output_shape()
        self._last = list(shapes)[-1]
        self.num_keypoints = shapes[self._last].channels
        (h, w), (hh, hw) = crop_size, model.heatmap_size
        # crop pixels per heatmap pixel (s_x, s_y) and the crop size (w, h), as the model's
        self.register_buffer("stride", torch.tensor([w / hw, h / hh]), persistent=False)
        self.register_buffer("crop_wh", torch.tensor([float(w), float(h)]), persistent=False)
        self.eval()

    # ------------------------------------------------------------------ graph
    def forward(self, crops: torch.Tensor, crop_to_image: torch.Tensor) -> Dict[str, torch.Tensor]:
        self._check_inputs(crops, crop_to_image)
        model = self.model
        x = (crops.float() - model.pixel_mean) / model.pixel_std
        raw = self._heatmaps(x) if self.head == "heatmap" else self._coords(x)
        outputs = {"keypoints": self.decode(raw, crop_to_image)}
        if self.raw_outputs:
            outputs[self.output_names[1]] = raw
        return outputs

    def decode(self, raw: torch.Tensor, crop_to_image: torch.Tensor) -> torch.Tensor:
        """The graph's raw output (``raw_heatmaps`` / ``raw_coords``) and the crops' affines ->
        ``keypoints`` (R, K, 3): the codec's decode or the regression scale, then crop -> image
        as the model's ``predict`` and ``postprocess``."""
        if self.head == "heatmap":
            codec = self.model.codec
            points, scores = codec.decode(raw)
            points = (points + 0.5 - codec.pixel_offset) * self.stride
        else:
            points = raw * self.crop_wh
            scores = torch.ones_like(raw[..., 0])  # no confidence: 1, as the eager model
        affine = crop_to_image.to(points.dtype)
        xy = torch.einsum("rij,rkj->rki", affine[:, :, :2], points) + affine[:, None, :, 2]
        return torch.cat([xy, scores[..., None]], dim=-1)

    def _heatmaps(self, x: torch.Tensor) -> torch.Tensor:
        backbone, flip = self.model.backbone, self.model.flip_test_indices
        heatmaps = backbone(x)[self._last]
        if flip is not None:
            mirrored = backbone(x.flip(-1))[self._last]
            pairs = [(i, j) for i, j in enumerate(flip) if i < j]
            heatmaps = flip_test_average(heatmaps, mirrored, pairs, shift=self.model.flip_shift)
        return heatmaps

    def _coords(self, x: torch.Tensor) -> torch.Tensor:
        backbone, head = self.model.backbone, self.model.regression_head
        flip = self.model.flip_test_indices
        pred = head(backbone.forward_with_features(x)[1])
        if flip is not None:
            mirrored = head(backbone.forward_with_features(x.flip(-1))[1])[:, flip]
            # x -> 1 - x out of place (the eager model writes it in place)
            mirrored = torch.stack([1.0 - mirrored[..., 0], mirrored[..., 1]], dim=-1)
            pred = 0.5 * (pred + mirrored)
        return pred

    def _check_inputs(self, crops: torch.Tensor, crop_to_image: torch.Tensor) -> None:
        channels = len(self.model.pixel_mean)
        if crops.dim() != 4 or crops.shape[1] != channels:
            raise ValueError(
                f"crops must be (R, {channels}, h, w) raw pixels in {self.input_format}, got "
                f"{tuple(crops.shape)}"
            )
        self.check_image_size(crops.shape[2], crops.shape[3], "crops")
        if tuple(crop_to_image.shape) != (crops.shape[0], 2, 3):
            raise ValueError(
                f"crop_to_image must be (R, 2, 3) = ({crops.shape[0]}, 2, 3) (one affine per "
                f"crop), got {tuple(crop_to_image.shape)}"
            )

    def check_image_size(self, height: int, width: int, what: str = "crops") -> None:
        """A clear error for crops that are not the model's crop size."""
        if (height, width) != self.fixed_shape:
            h, w = self.fixed_shape
            raise ValueError(
                f"{what} are {height}x{width}; this TopDownLandmarkDetector takes {h}x{w} crops "
                f"(INPUT.LANDMARK.CROP_SIZE it was built and exported for)"
            )

    # ------------------------------------------------------------------ around the graph
    def sample_inputs(self, image: np.ndarray, batch_size: int = 1) -> Tuple[torch.Tensor, ...]:
        """The whole (H, W, 3) uint8 image (in the model's input format) resized to the crop
        size (``cv2.resize``, bilinear), ``batch_size`` times, with the affine mapping the crop
        back onto the image (a pure scale in D2 continuous coordinates)."""
        image = np.asarray(image)
        channels = len(self.model.pixel_mean)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != channels:
            raise ValueError(
                f"sample_inputs takes an (H, W, {channels}) uint8 image in {self.input_format}, "
                f"got {image.dtype} {image.shape}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        (height, width), (h, w) = image.shape[:2], self.fixed_shape
        crop = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, channels)
        crops = torch.from_numpy(crop.transpose(2, 0, 1).astype(np.float32))
        affine = torch.tensor([[width / w, 0.0, 0.0], [0.0, height / h, 0.0]])
        return crops.repeat(batch_size, 1, 1, 1), affine.repeat(batch_size, 1, 1)

    def dynamic_axes(self) -> Dict[str, Dict[int, str]]:
        """The number of crops R (all inputs and outputs); the crop size is fixed."""
        return {name: {0: "num_crops"} for name in self.input_names + self.output_names}

    def metadata(self) -> Dict[str, Any]:
        meta = super().metadata()
        meta.update(
            crop_size=list(self.fixed_shape),
            num_keypoints=self.num_keypoints,
            head=self.head,
            input_format=self.input_format,
            decode=self.model.codec.decode_mode if self.head == "heatmap" else None,
            flip_test=self.model.flip_test_indices is not None,
        )
        return meta

    @staticmethod
    def outputs_to_instances(
        outputs: Dict[str, Any],
        image_sizes: List[Tuple[int, int]],
        metadata: Dict[str, Any],
        boxes: Optional[BoxesArg] = None,
    ) -> List[Instances]:
        """The eager model's ``Instances`` (``pred_boxes``, ``scores`` = mean keypoint score,
        ``pred_classes`` = 0, ``pred_keypoints``) from the graph's outputs.

        The graph's R crops belong to the images of ``image_sizes`` in order, as the eager model
        concatenates its inputs' crops. A crop carries no box, so the boxes come in ``boxes``:
        one (R_i, 4) XYXY image-pixel array / tensor per image (a single (R, 4) for one image),
        their R_i summing to R. None: one image whose crops all cover the whole image (the
        mapper's test-time crop without boxes; :meth:`sample_inputs`), boxes (0, 0, W, H).
        """
        keypoints = as_tensor(outputs["keypoints"])
        k = metadata.get("num_keypoints", keypoints.shape[1])
        if keypoints.dim() != 3 or tuple(keypoints.shape[1:]) != (k, 3):
            raise ValueError(f"keypoints output must be (R, {k}, 3), got {tuple(keypoints.shape)}")
        per_image = _boxes_per_image(boxes, image_sizes, len(keypoints))
        results, start = [], 0
        for (height, width), image_boxes in zip(image_sizes, per_image):
            r = len(image_boxes)
            points = keypoints[start : start + r]
            start += r
            instances = Instances((int(height), int(width)))
            instances.pred_boxes = Boxes(image_boxes.to(points.device, torch.float32))
            instances.scores = points[..., 2].mean(dim=1)
            instances.pred_classes = torch.zeros(r, dtype=torch.int64, device=points.device)
            instances.pred_keypoints = points
            results.append(instances)
        return results


def _boxes_per_image(
    boxes: Optional[BoxesArg], image_sizes: List[Tuple[int, int]], num_crops: int
) -> List[torch.Tensor]:
    """``outputs_to_instances``'s ``boxes`` as one (R_i, 4) tensor per image, checked."""
    if boxes is None:
        if len(image_sizes) != 1:
            raise ValueError(
                f"outputs_to_instances: boxes=None (whole-image crops) covers one image, got "
                f"{len(image_sizes)} image sizes; pass one (R_i, 4) boxes array per image"
            )
        height, width = image_sizes[0]
        whole = torch.tensor([[0.0, 0.0, float(width), float(height)]])
        return [whole.expand(num_crops, 4)]
    if isinstance(boxes, (torch.Tensor, np.ndarray)):
        boxes = [boxes]
    per_image = [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]
    if len(per_image) != len(image_sizes):
        raise ValueError(
            f"outputs_to_instances: {len(per_image)} boxes arrays for {len(image_sizes)} images "
            f"(one (R_i, 4) array per image)"
        )
    counts = [len(b) for b in per_image]
    if sum(counts) != num_crops:
        raise ValueError(
            f"outputs_to_instances: the boxes count {counts} (sum {sum(counts)}) differs from "
            f"the graph's {num_crops} crops"
        )
    return per_image
