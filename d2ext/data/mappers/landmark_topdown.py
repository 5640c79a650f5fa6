"""Top-down landmark mapper: one affine-warped crop per instance box, for
:class:`d2ext.modeling.hourglass.TopDownLandmarkDetector`.

Crop geometry (mmpose's top-down pipeline, the original's ``utils.img.crop``): the crop is
centred on the box centre and covers the box widened to the crop's aspect ratio, times
``INPUT.LANDMARK.BOX_PADDING``. At training the crop is jittered (random scale, rotation, centre
shift) and flipped (D2's ``RandomFlip`` after the crop, so D2's
``transform_keypoint_annotations`` swaps the ``keypoint_flip_map`` pairs). Each instance costs
one ``cv2.warpAffine`` (bilinear, black border).

Coordinates: D2 continuous coordinates on both sides (pixel (i, j) covers [j, j + 1) x
[i, i + 1)). ``cv2.warpAffine`` maps integer pixel indices, i.e. points shifted by -0.5, so
:class:`AffineCropTransform` conjugates its continuous matrix by that half-pixel shift: a
keypoint lands in the crop exactly where its image pixel is drawn. Keypoints mapped outside the
crop get v = 0 (D2's rule).
"""

import copy
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from ..build import MAPPER_REGISTRY

__all__ = ["AffineCropTransform", "RandomLandmarkCrop", "TopDownLandmarkMapper", "crop_affine"]


def _affine_3x3(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(matrix, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])


class AffineCropTransform(T.Transform):
    """Warp an image to an ``(height, width)`` crop with a 2x3 affine ``matrix`` that maps D2
    continuous image coordinates to D2 continuous crop coordinates."""

    def __init__(self, matrix: np.ndarray, height: int, width: int):
        super().__init__()
        self.matrix = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
        self.height, self.width = int(height), int(width)

    def _index_matrix(self) -> np.ndarray:
        # pixel index = continuous coordinate - 0.5 on both sides: M' x = M (x + 0.5) - 0.5
        m = self.matrix.copy()
        m[:, 2] += m[:, :2].sum(axis=1) * 0.5 - 0.5
        return m

    def _warp(self, img: np.ndarray, interp: int) -> np.ndarray:
        out = cv2.warpAffine(
            img,
            self._index_matrix(),
            (self.width, self.height),
            flags=interp,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        return out.reshape(out.shape[:2] + img.shape[2:])  # cv2 drops a trailing channel axis

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self._warp(img, cv2.INTER_LINEAR)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._warp(segmentation, cv2.INTER_NEAREST)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """(N, 2) xy image coordinates -> crop coordinates."""
        return coords @ self.matrix[:, :2].T + self.matrix[:, 2]


def crop_affine(
    box: Sequence[float],
    crop_size: Tuple[int, int],
    *,
    padding: float = 1.25,
    scale: float = 1.0,
    rotation: float = 0.0,
    shift: Tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """The 2x3 matrix mapping image to crop coordinates (both D2 continuous) for an XYXY box.

    The box is widened to the crop's aspect ratio (at least 1 pixel, so a degenerate box still
    gives an invertible warp), multiplied by ``padding * scale``, its centre moved by ``shift``
    times the padded box size; the content is rotated by ``rotation`` degrees counter-clockwise
    as displayed.
    """
    crop_h, crop_w = crop_size
    x0, y0, x1, y1 = (float(v) for v in box)
    width, height = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    aspect = crop_w / crop_h
    if width > aspect * height:
        height = width / aspect
    else:
        width = height * aspect
    width, height = width * padding, height * padding
    cx = 0.5 * (x0 + x1) + shift[0] * width
    cy = 0.5 * (y0 + y1) + shift[1] * height
    s = crop_w / (width * scale)  # == crop_h / (height * scale)
    theta = np.deg2rad(rotation)
    cos, sin = np.cos(theta) * s, np.sin(theta) * s
    linear = np.array([[cos, sin], [-sin, cos]])
    offset = np.array([crop_w / 2.0, crop_h / 2.0]) - linear @ np.array([cx, cy])
    return np.hstack([linear, offset[:, None]])


class RandomLandmarkCrop(T.Augmentation):
    """Affine crop around ``boxes`` (their enclosing box; the mapper passes one box at a time)
    with a random scale in ``scale_range``, rotation in [-rotation, rotation] degrees and centre
    shift in [-shift, shift] of the padded box size. The defaults are the test-time crop."""

    def __init__(
        self,
        crop_size: Tuple[int, int],
        box_padding: float = 1.25,
        scale_range: Tuple[float, float] = (1.0, 1.0),
        rotation: float = 0.0,
        shift: float = 0.0,
    ):
        super().__init__()
        crop_size = tuple(int(s) for s in crop_size)
        if len(crop_size) != 2 or min(crop_size) < 1:
            raise ValueError(f"crop_size must be (height, width) > 0, got {crop_size}")
        scale_range = tuple(float(s) for s in scale_range)
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be (min, max), 0 < min <= max, got {scale_range}")
        if not box_padding > 0 or rotation < 0 or shift < 0:
            raise ValueError(
                f"box_padding must be > 0, rotation and shift >= 0; got {box_padding}, "
                f"{rotation}, {shift}"
            )
        self._init(locals())

    def get_transform(self, image: np.ndarray, boxes: np.ndarray) -> AffineCropTransform:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            raise ValueError("RandomLandmarkCrop needs at least one box")
        box = [*boxes[:, :2].min(axis=0), *boxes[:, 2:].max(axis=0)]
        low, high = self.scale_range
        scale = self._rand_range(low, high) if low < high else low
        rotation = self._rand_range(-self.rotation, self.rotation) if self.rotation else 0.0
        shift = tuple(self._rand_range(-self.shift, self.shift, 2)) if self.shift else (0.0, 0.0)
        matrix = crop_affine(
            box,
            self.crop_size,
            padding=self.box_padding,
            scale=scale,
            rotation=rotation,
            shift=shift,
        )
        return AffineCropTransform(matrix, *self.crop_size)


def _affine_of(transforms: T.Transform) -> np.ndarray:
    """The 2x3 matrix of an affine transform (a crop, flips, resizes...), read off the images
    of three points."""
    p = transforms.apply_coords(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    return np.stack([p[1] - p[0], p[2] - p[0], p[0]], axis=1)


@MAPPER_REGISTRY.register()
class TopDownLandmarkMapper:
    """``INPUT.DATASET_MAPPER_NAME: TopDownLandmarkMapper``: a D2 dataset dict (see
    :mod:`d2ext.data.datasets`; keypoints in D2 coordinates) -> the model input

    * ``"crops"``: (R, C, h, w) uint8, ``image_format`` channels, one per non-crowd annotation
      in order (test time without ``"annotations"``: the whole image as one box);
    * ``"crop_to_image"``: (R, 2, 3) float32, crop coordinates -> image coordinates;
    * ``"boxes"``: (R, 4) float32 XYXY image boxes of the instances;
    * ``"gt_keypoints"``: (R, K, 3) float32 (x, y, v) in crop coordinates, v = 0 for points
      outside the crop (and x = y = 0 there, D2's convention); present whenever the
      annotations have keypoints (required at training);
    * ``"file_name"``, ``"image_id"``, ``"height"``, ``"width"`` of the original image.

    The image is read from ``"file_name"``, or taken from ``"image"`` when the dict holds an
    already decoded (H, W, C) uint8 array in ``image_format`` (:class:`LandmarkPredictor`).

    Used by ``Trainer`` at test time too (``used_at_test_time``): ``is_train=False`` crops
    without jitter or flip.
    """

    used_at_test_time = True

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: List,
        image_format: str,
        keypoint_hflip_indices: Optional[List[int]] = None,
    ):
        """
        Args:
            is_train: training (keypoints required) or test mapping.
            augmentations: a :class:`RandomLandmarkCrop` first, then any D2 augmentations of the
                crop (``RandomFlip``, photometric ones...).
            image_format: D2 ``read_image`` format (``"BGR"``, ``"RGB"``...; grayscale files
                are converted to it).
            keypoint_hflip_indices: D2's ``create_keypoint_hflip_indices`` of the dataset,
                needed when an augmentation flips.
        """
        augmentations = list(augmentations)
        if not augmentations or not isinstance(augmentations[0], RandomLandmarkCrop):
            raise ValueError(
                "TopDownLandmarkMapper: the first augmentation must be a RandomLandmarkCrop"
            )
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.keypoint_hflip_indices = (
            None if keypoint_hflip_indices is None else [int(i) for i in keypoint_hflip_indices]
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        lm = cfg.INPUT.LANDMARK
        crop = RandomLandmarkCrop(
            tuple(lm.CROP_SIZE),
            box_padding=lm.BOX_PADDING,
            scale_range=tuple(lm.SCALE_RANGE) if is_train else (1.0, 1.0),
            rotation=lm.ROTATION if is_train else 0.0,
            shift=lm.SHIFT if is_train else 0.0,
        )
        augmentations = [crop]
        flip_indices = None
        if is_train and lm.FLIP_PROB > 0:
            augmentations.append(T.RandomFlip(prob=lm.FLIP_PROB, horizontal=True))
            try:
                flip_indices = utils.create_keypoint_hflip_indices(cfg.DATASETS.TRAIN)
            except (AttributeError, KeyError) as e:
                raise ValueError(
                    f"INPUT.LANDMARK.FLIP_PROB={lm.FLIP_PROB} flips the crops, which needs the "
                    f"keypoint_names and keypoint_flip_map metadata of DATASETS.TRAIN "
                    f"{tuple(cfg.DATASETS.TRAIN)}: {e}"
                ) from e
        return {
            "is_train": is_train,
            "augmentations": augmentations,
            "image_format": cfg.INPUT.FORMAT,
            "keypoint_hflip_indices": flip_indices,
        }

    def _boxes(self, dataset_dict: Dict, annotations: Optional[List[Dict]], image_size):
        """(R, 4) float64 XYXY boxes of the annotations; None: the whole image (test time)."""
        if annotations is None:
            if self.is_train:
                raise ValueError(f"image {dataset_dict.get('file_name')}: no 'annotations'")
            return np.array([[0.0, 0.0, image_size[1], image_size[0]]])
        boxes = []
        for i, ann in enumerate(annotations):
            box = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYXY_ABS)
            if not np.isfinite(box).all() or box[2] < box[0] or box[3] < box[1]:
                raise ValueError(
                    f"image {dataset_dict.get('file_name')}: annotation {i} has a malformed "
                    f"bbox {ann['bbox']!r}"
                )
            boxes.append(box)
        return np.array(boxes, dtype=np.float64).reshape(-1, 4)

    def __call__(self, dataset_dict: Dict) -> Dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict.get("file_name", "<in-memory image>")
        if "image" in dataset_dict:  # an already decoded (H, W, C) array in image_format
            image = np.asarray(dataset_dict.pop("image"))
            if image.ndim == 2:
                image = image[:, :, None]
            if image.ndim != 3:
                raise ValueError(f"image {file_name}: expected (H, W, C), got {image.shape}")
        else:
            image = utils.read_image(file_name, format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        height, width = image.shape[:2]
        annotations = dataset_dict.pop("annotations", None)
        if annotations is not None:
            annotations = [a for a in annotations if not a.get("iscrowd", 0)]
        boxes = self._boxes(dataset_dict, annotations, (height, width))
        with_keypoints = bool(annotations) and all("keypoints" in a for a in annotations)
        if self.is_train and annotations and not with_keypoints:
            raise ValueError(f"image {file_name}: an annotation has no 'keypoints' to train on")
        crop_h, crop_w = self.augmentations.augs[0].crop_size

        crops, crop_to_image, keypoints = [], [], []
        for i, box in enumerate(boxes):
            aug_input = T.AugInput(image, boxes=box[None])
            transforms = self.augmentations(aug_input)
            crops.append(aug_input.image)
            crop_to_image.append(np.linalg.inv(_affine_3x3(_affine_of(transforms)))[:2])
            if with_keypoints:
                keypoints.append(
                    utils.transform_keypoint_annotations(
                        annotations[i]["keypoints"],
                        transforms,
                        (crop_h, crop_w),
                        self.keypoint_hflip_indices,
                    )
                )
        channels = image.shape[2] if image.ndim == 3 else 1
        crops = np.stack(crops) if crops else np.zeros((0, crop_h, crop_w, channels), np.uint8)
        crops = crops.reshape(len(boxes), crop_h, crop_w, channels)
        dataset_dict["crops"] = torch.as_tensor(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))
        dataset_dict["crop_to_image"] = torch.as_tensor(
            np.array(crop_to_image).reshape(-1, 2, 3), dtype=torch.float32
        )
        dataset_dict["boxes"] = torch.as_tensor(boxes, dtype=torch.float32)
        dataset_dict.setdefault("height", height)
        dataset_dict.setdefault("width", width)
        if with_keypoints:
            dataset_dict["gt_keypoints"] = torch.as_tensor(np.stack(keypoints), dtype=torch.float32)
        elif self.is_train:  # an image without instances: nothing to supervise
            dataset_dict["gt_keypoints"] = torch.zeros((0, 0, 3))
        return dataset_dict
