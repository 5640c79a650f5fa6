"""RetinaFace's training augmentation (biubug6/Pytorch_Retinaface ``data/data_augment.py``
``preproc``) as D2 augmentations, in the original's order:

1. :class:`RandomSquareFaceCrop` (``_crop``): a square of side ``int(scale * short side)``,
   ``scale`` drawn from ``CROP_SCALES``, at a random integer corner; a trial succeeds when at
   least one face lies fully inside it (``matrix_iof >= 1``) and at least one face keeps its
   centre strictly inside it. Up to ``CROP_TRIALS`` trials, else the whole image. The kept
   faces (:func:`crop_faces`) are those whose centre is inside; their boxes are clipped to the
   crop and their landmarks clamped into it, as the original does (landmarks are never dropped).
   Faces whose clipped box has zero width or height are dropped too: the original keeps them
   (its size test adds 1 pixel) and their ``log(0)`` box targets are the NaN loss of its
   issue #60.
2. :class:`RetinaFaceColorDistort` (``_distort``): on uint8 pixels, clipped to [0, 255] and
   truncated after every step; with probability 1/2 brightness (+-32), contrast (x[0.5, 1.5]),
   then in HSV saturation (x[0.5, 1.5]) and hue (+-18 of OpenCV's 180); else brightness, HSV,
   then contrast. Each step happens with probability 1/2.
3. :class:`PadToSquare` (``_pad_to_square``): only when the crop fell back to a non-square
   image: padded right / bottom with the mean pixel, after the colour distortion.
4. D2's ``RandomFlip`` (``_mirror``: ``x -> W - x``; the mapper swaps left/right landmarks).
5. :class:`RandomInterpolationResize` (``_resize_subtract_mean``): to ``size`` x ``size`` with
   OpenCV, the interpolation drawn from linear, cubic, area, nearest and Lanczos.

Images are the mapper's uint8 arrays in ``INPUT.FORMAT`` ("BGR" as the original, or "RGB").
Every step is a D2 transform (``CropTransform``, ``ColorTransform``, ``PadTransform``,
``HFlipTransform``, ``ResizeTransform``); :func:`transform_faces` applies a list of them to face
boxes and landmarks with the crop's rules.
"""

import functools
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from detectron2.data import transforms as T

__all__ = [
    "RandomSquareFaceCrop",
    "RetinaFaceColorDistort",
    "distort_colors",
    "PadToSquare",
    "RandomInterpolationResize",
    "CV2ResizeTransform",
    "matrix_iof",
    "crop_faces",
    "transform_faces",
    "build_retinaface_augmentations",
]

# the original's five resize interpolations, drawn uniformly
INTERPOLATIONS = (
    cv2.INTER_LINEAR,
    cv2.INTER_CUBIC,
    cv2.INTER_AREA,
    cv2.INTER_NEAREST,
    cv2.INTER_LANCZOS4,
)


def matrix_iof(boxes: np.ndarray, rois: np.ndarray) -> np.ndarray:
    """(N, M) intersection over the *box's* area of XYXY ``boxes`` (N, 4) and ``rois`` (M, 4);
    areas below 1 count as 1 (so a zero-area or sub-pixel box is never "fully inside")."""
    lt = np.maximum(boxes[:, None, :2], rois[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], rois[None, :, 2:])
    inter = np.prod(rb - lt, axis=2) * (lt < rb).all(axis=2)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(area[:, None], 1)


def crop_faces(boxes: np.ndarray, roi: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The original's crop rule for XYXY ``boxes`` (N, 4) and the crop ``roi`` (x0, y0, x1, y1),
    both in the uncropped image: (keep (N,) bool: centre strictly inside and a non-empty clipped
    box, boxes (N, 4) clipped to the roi, still in uncropped coordinates)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    keep = ((roi[:2] < centers) & (centers < roi[2:])).all(axis=1)
    clipped = np.concatenate(
        [np.maximum(boxes[:, :2], roi[:2]), np.minimum(boxes[:, 2:], roi[2:])], axis=1
    )
    keep &= (clipped[:, 2:] > clipped[:, :2]).all(axis=1)  # the NaN guard (module doc)
    return keep, clipped


class RandomSquareFaceCrop(T.Augmentation):
    """Step 1 of the module doc: ``CropTransform`` of a random square, or ``NoOpTransform``
    when no trial succeeds (always for an image without faces). Needs the XYXY face ``boxes``
    in the :class:`~detectron2.data.transforms.AugInput`."""

    def __init__(self, scales: Sequence[float] = (0.3, 0.45, 0.6, 0.8, 1.0), max_trials: int = 250):
        super().__init__()
        if not scales or not all(0 < float(s) <= 1 for s in scales):
            raise ValueError(f"RandomSquareFaceCrop: scales must be in (0, 1], got {scales}")
        self._init(locals())

    def get_transform(self, image, boxes):
        h, w = image.shape[:2]
        boxes = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return T.NoOpTransform()
        short = min(h, w)
        for _ in range(self.max_trials):
            side = int(self.scales[np.random.randint(len(self.scales))] * short)
            if side < 1:
                continue
            x0 = 0 if side == w else np.random.randint(w - side)
            y0 = 0 if side == h else np.random.randint(h - side)
            roi = np.array([x0, y0, x0 + side, y0 + side], dtype=np.float64)
            if not (matrix_iof(boxes, roi[None]) >= 1).any():
                continue
            if crop_faces(boxes, roi)[0].any():
                return T.CropTransform(x0, y0, side, side, w, h)
        return T.NoOpTransform()


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Clip to [0, 255] and truncate, as the original's assignment of floats into uint8."""
    return np.clip(values, 0, 255).astype(np.uint8)


def distort_colors(
    img: np.ndarray,
    *,
    brightness: Optional[float] = None,
    contrast: Optional[float] = None,
    contrast_first: bool = True,
    saturation: Optional[float] = None,
    hue: Optional[int] = None,
    image_format: str = "BGR",
) -> np.ndarray:
    """The original's ``_distort`` with its random draws given (None = step skipped): uint8
    ``img`` + ``brightness``, x ``contrast`` (before the HSV steps if ``contrast_first``, else
    after), saturation x ``saturation``, hue + ``hue`` modulo 180, every step clipped to
    [0, 255] and truncated to uint8. The HSV round trip happens even when both HSV steps are
    skipped, as in the original."""
    if img.dtype != np.uint8:
        raise ValueError(f"RetinaFace colour distortion expects uint8 images, got {img.dtype}")
    bgr = image_format == "BGR"
    img = np.ascontiguousarray(img)
    if brightness is not None:
        img = _to_uint8(img.astype(np.float64) + brightness)
    if contrast_first and contrast is not None:
        img = _to_uint8(img.astype(np.float64) * contrast)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV if bgr else cv2.COLOR_RGB2HSV)  # H in [0, 180)
    if saturation is not None:
        hsv[:, :, 1] = _to_uint8(hsv[:, :, 1].astype(np.float64) * saturation)
    if hue is not None:
        hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int64) + hue) % 180
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR if bgr else cv2.COLOR_HSV2RGB)
    if not contrast_first and contrast is not None:
        img = _to_uint8(img.astype(np.float64) * contrast)
    return img


class RetinaFaceColorDistort(T.Augmentation):
    """Step 2 of the module doc: a ``ColorTransform`` applying :func:`distort_colors` with the
    original's random draws, on uint8 BGR (or RGB) images."""

    def __init__(self, image_format: str = "BGR"):
        super().__init__()
        if image_format not in ("BGR", "RGB"):
            raise ValueError(
                f"RetinaFaceColorDistort: image_format must be BGR or RGB, got {image_format!r}"
            )
        self._init(locals())

    def get_transform(self, image):
        def coin() -> bool:
            return bool(np.random.randint(2))

        params = {"contrast_first": coin(), "image_format": self.image_format}
        params["brightness"] = np.random.uniform(-32, 32) if coin() else None
        if params["contrast_first"]:
            params["contrast"] = np.random.uniform(0.5, 1.5) if coin() else None
        params["saturation"] = np.random.uniform(0.5, 1.5) if coin() else None
        params["hue"] = int(np.random.randint(-18, 19)) if coin() else None
        if not params["contrast_first"]:
            params["contrast"] = np.random.uniform(0.5, 1.5) if coin() else None
        return T.ColorTransform(functools.partial(distort_colors, **params))


class _FillPadTransform(T.PadTransform):
    """D2's ``PadTransform`` whose image padding is a per-channel ``fill``, in the image's dtype."""

    def __init__(self, x0, y0, x1, y1, orig_w, orig_h, fill: Sequence[float]):
        super().__init__(x0, y0, x1, y1, orig_w, orig_h, pad_value=0, seg_pad_value=0)
        self.fill = tuple(float(v) for v in fill)

    def apply_image(self, img):
        h, w = img.shape[:2]
        out = np.empty((h + self.y0 + self.y1, w + self.x0 + self.x1) + img.shape[2:], img.dtype)
        fill = np.asarray(self.fill) if img.ndim == 3 else np.mean(self.fill)
        out[...] = np.round(fill).astype(img.dtype) if img.dtype == np.uint8 else fill
        out[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = img
        return out


class PadToSquare(T.Augmentation):
    """Step 3 of the module doc: pad a non-square image right / bottom to its long side with
    ``fill`` (the mean pixel in the image's channel order; rounded for uint8 images)."""

    def __init__(self, fill: Sequence[float]):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        if h == w:
            return T.NoOpTransform()
        side = max(h, w)
        return _FillPadTransform(0, 0, side - w, side - h, w, h, self.fill)


class CV2ResizeTransform(T.ResizeTransform):
    """D2's ``ResizeTransform`` (same coordinate mapping) resizing images with OpenCV's
    ``interp`` (a ``cv2.INTER_*`` flag), as the original."""

    def apply_image(self, img, interp=None):
        assert img.shape[:2] == (self.h, self.w)
        return cv2.resize(img, (self.new_w, self.new_h), interpolation=self.interp)

    def apply_segmentation(self, segmentation):
        return cv2.resize(segmentation, (self.new_w, self.new_h), interpolation=cv2.INTER_NEAREST)


class RandomInterpolationResize(T.Augmentation):
    """Step 5 of the module doc: resize to ``size`` x ``size`` with an interpolation drawn from
    ``interpolations`` (``cv2.INTER_*``)."""

    def __init__(self, size: int, interpolations: Sequence[int] = INTERPOLATIONS):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        interp = self.interpolations[np.random.randint(len(self.interpolations))]
        return CV2ResizeTransform(h, w, self.size, self.size, interp)


def transform_faces(
    transforms: T.TransformList, boxes: np.ndarray, landmarks: np.ndarray
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply ``transforms`` to XYXY face ``boxes`` (N, 4) and ``landmarks`` (N, K, 2), with the
    crop rules of the module doc at every ``CropTransform``; returns (keep (N,) bool, boxes
    (N, 4), landmarks (N, K, 2)) of all N faces (those with ``keep`` False are dropped). Faces
    whose final box has no area are not kept either (the same NaN guard when nothing crops)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    landmarks = np.array(landmarks, dtype=np.float64)
    n, k = len(boxes), landmarks.shape[1]
    if landmarks.shape != (n, k, 2):
        raise ValueError(f"transform_faces: landmarks must be ({n}, K, 2), got {landmarks.shape}")
    keep = np.ones(n, dtype=bool)
    for t in transforms.transforms:
        if isinstance(t, T.CropTransform):
            roi = np.array([t.x0, t.y0, t.x0 + t.w, t.y0 + t.h], dtype=np.float64)
            inside, boxes = crop_faces(boxes, roi)
            keep &= inside
            landmarks = np.clip(landmarks, roi[:2], roi[2:])  # clamped into the crop
        if n:
            boxes = t.apply_box(boxes)
            landmarks = t.apply_coords(landmarks.reshape(-1, 2)).reshape(n, k, 2)
    keep &= (boxes[:, 2:] > boxes[:, :2]).all(axis=1)
    return keep, boxes, landmarks


def build_retinaface_augmentations(
    *,
    train_size: int,
    crop_scales: Sequence[float],
    crop_trials: int,
    distort: bool,
    mirror_prob: float,
    random_interpolation: bool,
    pixel_mean: Sequence[float],
    image_format: str,
) -> List[T.Augmentation]:
    """The steps of the module doc from the ``INPUT.RETINAFACE`` keys; ``pixel_mean`` in the
    images' channel order fills the padding."""
    augs: List[T.Augmentation] = [RandomSquareFaceCrop(tuple(crop_scales), int(crop_trials))]
    if distort:
        augs.append(RetinaFaceColorDistort(image_format))
    augs.append(PadToSquare(tuple(pixel_mean)))
    if mirror_prob > 0:
        augs.append(T.RandomFlip(prob=mirror_prob, horizontal=True, vertical=False))
    interps = INTERPOLATIONS if random_interpolation else (cv2.INTER_LINEAR,)
    augs.append(RandomInterpolationResize(int(train_size), interps))
    return augs
