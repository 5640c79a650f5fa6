"""SSD's training augmentation (Liu et al., ECCV 2016) as D2 augmentations, in the variant
YOLACT trains with (dbolya/yolact ``SSDAugmentation``, before its flip and S x S resize).

With 200-image synthetic sets it is also what keeps YOLACT from memorising the training images
(docs/RESULTS.md):

* :class:`PhotometricDistort`: brightness +-32 (additive), then contrast x[0.5, 1.5] either first
  or last, and in HSV saturation x[0.5, 1.5] and hue +-18 degrees; each step with probability
  1/2, on float32 pixels, unclipped (as the original);
* :class:`Expand`: with probability 1/2, the image is placed at a random spot of a canvas up to
  4x its size filled with the pixel mean (zoom out);
* :class:`RandomSampleCrop`: SSD's crop: no crop, or a crop of 30-100% of each side (aspect
  within [1/2, 2]) whose IoU with the gt boxes respects a minimum of 0.1/0.3/0.7/0.9 or none;
  the mapper then drops the objects whose centre falls outside it (:func:`centers_inside`).

Everything is a D2 :class:`~detectron2.data.transforms.Augmentation` producing D2 transforms
(``ColorTransform``, ``PadTransform``, ``CropTransform``), so boxes, polygons and bitmasks
follow through D2's own annotation code.
"""

from typing import List, Sequence

import cv2
import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.structures import Boxes, pairwise_iou

__all__ = [
    "PhotometricDistort",
    "Expand",
    "RandomSampleCrop",
    "build_ssd_augmentations",
    "centers_inside",
]


def _color(op) -> T.ColorTransform:
    return T.ColorTransform(lambda img: op(np.asarray(img, dtype=np.float32)))


class PhotometricDistort(T.Augmentation):
    """SSD's photometric distortions (module doc) of a BGR (or, with ``image_format="RGB"``, RGB)
    image."""

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast=(0.5, 1.5),
        saturation=(0.5, 1.5),
        hue_delta: float = 18.0,
        image_format: str = "BGR",
    ):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        steps = []
        if self._rand_range() < 0.5:
            delta = self._rand_range(-self.brightness_delta, self.brightness_delta)
            steps.append(lambda im: im + delta)
        contrast_first = self._rand_range() < 0.5
        alpha = self._rand_range(*self.contrast) if self._rand_range() < 0.5 else None
        if contrast_first and alpha is not None:
            steps.append(lambda im: im * alpha)
        sat = self._rand_range(*self.saturation) if self._rand_range() < 0.5 else None
        hue = (
            self._rand_range(-self.hue_delta, self.hue_delta) if self._rand_range() < 0.5 else None
        )
        if sat is not None or hue is not None:
            to_hsv, from_hsv = (
                (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB)
                if self.image_format == "RGB"
                else (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR)
            )

            def hsv(im):
                h = cv2.cvtColor(im, to_hsv)  # float32: H in [0, 360)
                if sat is not None:
                    h[:, :, 1] *= sat
                if hue is not None:
                    h[:, :, 0] += hue
                    h[:, :, 0][h[:, :, 0] > 360.0] -= 360.0
                    h[:, :, 0][h[:, :, 0] < 0.0] += 360.0
                return cv2.cvtColor(h, from_hsv)

            steps.append(hsv)
        if not contrast_first and alpha is not None:
            steps.append(lambda im: im * alpha)
        if not steps:
            return T.NoOpTransform()

        def apply(im):
            for step in steps:
                im = step(im)
            return im

        return _color(apply)


class _ExpandTransform(T.PadTransform):
    """D2's ``PadTransform`` whose image padding is a per-channel fill (the pixel mean)."""

    def __init__(self, x0, y0, x1, y1, orig_w, orig_h, fill: Sequence[float]):
        super().__init__(x0, y0, x1, y1, orig_w, orig_h, pad_value=0, seg_pad_value=0)
        self.fill = np.asarray(fill, dtype=np.float32)

    def apply_image(self, img):
        h, w = img.shape[:2]
        out = np.empty(
            (h + self.y0 + self.y1, w + self.x0 + self.x1) + img.shape[2:], dtype=np.float32
        )
        out[...] = self.fill if img.ndim == 3 else float(self.fill.mean())
        out[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = img
        return out


class Expand(T.Augmentation):
    """SSD's zoom out (module doc); ``fill`` is the pixel mean in the image's channel order."""

    def __init__(self, fill: Sequence[float], max_ratio: float = 4.0, prob: float = 0.5):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        if self._rand_range() >= self.prob:
            return T.NoOpTransform()
        h, w = image.shape[:2]
        ratio = self._rand_range(1.0, self.max_ratio)
        left = int(self._rand_range(0, w * ratio - w))
        top = int(self._rand_range(0, h * ratio - h))
        new_w, new_h = int(w * ratio), int(h * ratio)
        return _ExpandTransform(left, top, new_w - w - left, new_h - h - top, w, h, self.fill)


class RandomSampleCrop(T.Augmentation):
    """SSD's random crop with IoU constraints (module doc). Needs the gt boxes (XYXY) in the
    :class:`~detectron2.data.transforms.AugInput`; an image without boxes is not cropped."""

    MODES = (None, (0.1, None), (0.3, None), (0.7, None), (0.9, None), (None, None))

    def __init__(self, min_scale: float = 0.3, max_trials: int = 50):
        super().__init__()
        self._init(locals())

    def get_transform(self, image, boxes):
        h, w = image.shape[:2]
        if boxes is None or len(boxes) == 0:
            return T.NoOpTransform()
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2
        while True:  # as the original: redraw a mode until a crop is found or no crop is drawn
            mode = self.MODES[int(self._rand_range(0, len(self.MODES)))]
            if mode is None:
                return T.NoOpTransform()
            min_iou = -np.inf if mode[0] is None else mode[0]
            max_iou = np.inf if mode[1] is None else mode[1]
            for _ in range(self.max_trials):
                cw = self._rand_range(self.min_scale * w, w)
                ch = self._rand_range(self.min_scale * h, h)
                if ch / cw < 0.5 or ch / cw > 2:
                    continue
                left = self._rand_range(0, w - cw)
                top = self._rand_range(0, h - ch)
                rect = np.array(
                    [int(left), int(top), int(left + cw), int(top + ch)], dtype=np.float64
                )
                overlap = pairwise_iou(
                    Boxes(torch.as_tensor(rect[None], dtype=torch.float32)),
                    Boxes(torch.as_tensor(boxes, dtype=torch.float32)),
                ).numpy()[0]
                if overlap.min() < min_iou and max_iou < overlap.max():
                    continue
                inside = (
                    (rect[0] < centers[:, 0])
                    & (rect[1] < centers[:, 1])
                    & (rect[2] > centers[:, 0])
                    & (rect[3] > centers[:, 1])
                )
                if not inside.any():
                    continue
                x0, y0, x1, y1 = (int(v) for v in rect)
                return T.CropTransform(x0, y0, x1 - x0, y1 - y0, w, h)


def centers_inside(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Which (transformed, unclipped) XYXY boxes have their centre strictly inside the image:
    the objects the original keeps after its crop."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return (cx > 0) & (cy > 0) & (cx < width) & (cy < height)


def build_ssd_augmentations(
    pixel_mean: Sequence[float], image_format: str = "BGR"
) -> List[T.Augmentation]:
    """Photometric distortion, zoom-out and IoU crop in SSD's order (module doc); the mapper
    adds its flip and resize after them. ``pixel_mean`` in the images' channel order."""
    return [
        PhotometricDistort(image_format=image_format),
        Expand(fill=pixel_mean),
        RandomSampleCrop(),
    ]
