"""Train-time mapper for RetinaFace: the original's augmentation
(:mod:`d2ext.data.transforms.retinaface`) on faces with five landmarks.

``INPUT.DATASET_MAPPER_NAME: RetinaFaceMapper``; at test time D2's ``DatasetMapper`` maps the
images (the model resizes them itself). Every training image becomes a ``TRAIN_SIZE`` square.
"""

import copy
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, Instances, Keypoints

from ..build import MAPPER_REGISTRY
from ..transforms.retinaface import build_retinaface_augmentations, transform_faces
from ..wider_face import WIDER_FACE_FLIP_MAP, WIDER_FACE_KEYPOINT_NAMES

__all__ = ["RetinaFaceMapper"]


def _hflip_indices(dataset_names: Sequence[str]) -> np.ndarray:
    """D2's keypoint flip indices of the training sets (all must agree), or the WIDER five
    points' when no training set declares keypoints."""
    if dataset_names and all(
        MetadataCatalog.get(n).get("keypoint_names", None) for n in dataset_names
    ):
        return np.asarray(utils.create_keypoint_hflip_indices(dataset_names), dtype=np.int64)
    flip = dict(WIDER_FACE_FLIP_MAP)
    flip.update({b: a for a, b in WIDER_FACE_FLIP_MAP})
    names = list(WIDER_FACE_KEYPOINT_NAMES)
    return np.asarray([names.index(flip.get(n, n)) for n in names], dtype=np.int64)


@MAPPER_REGISTRY.register()
class RetinaFaceMapper(DatasetMapper):
    """Maps a D2 dict of faces (``bbox``, ``keypoints`` (5 x (x, y, v)), crowd faces ignored) to

    * ``image``: (3, S, S) uint8 tensor in ``INPUT.FORMAT``, S = ``INPUT.RETINAFACE.TRAIN_SIZE``;
    * ``instances``: ``gt_boxes`` (Boxes, (N, 4) XYXY pixels of the S x S image),
      ``gt_classes`` ((N,) int64, the faces' ``category_id``, 0), ``gt_keypoints``
      (Keypoints, (N, 5, 3): x, y in the same pixels, v = 2 labelled / 0 missing with x = y = 0).
      Landmarks are never marked missing for leaving the image (D2's keypoint code would): the
      crop clamps them into itself, as the original, and without a crop they keep their
      coordinates. An image without faces gives empty Instances (a negative sample).

    With ``is_train=False`` it is D2's ``DatasetMapper``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List,
        image_format: str,
        keypoint_hflip_indices: Optional[np.ndarray] = None,
        **kwargs,
    ):
        """
        Args:
            augmentations: at training, normally ``build_retinaface_augmentations(...)``.
            image_format: ``INPUT.FORMAT`` of the image tensors.
            keypoint_hflip_indices: (K,) mirror index of each landmark (default: the WIDER
                five points' order, left <-> right eye and mouth corner).
            kwargs: further arguments of D2's ``DatasetMapper`` (used at test time).
        """
        if keypoint_hflip_indices is None:
            keypoint_hflip_indices = _hflip_indices(())
        super().__init__(
            is_train,
            augmentations=augmentations,
            image_format=image_format,
            keypoint_hflip_indices=keypoint_hflip_indices,
            **kwargs,
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict:
        ret = super().from_config(cfg, is_train)
        if is_train:
            c = cfg.INPUT.RETINAFACE
            ret["augmentations"] = build_retinaface_augmentations(
                train_size=c.TRAIN_SIZE,
                crop_scales=c.CROP_SCALES,
                crop_trials=c.CROP_TRIALS,
                distort=c.DISTORT,
                mirror_prob=c.MIRROR_PROB,
                random_interpolation=c.RANDOM_INTERPOLATION,
                # PIXEL_MEAN is in the channel order of INPUT.FORMAT, as the mapper's images
                pixel_mean=cfg.MODEL.PIXEL_MEAN,
                image_format=cfg.INPUT.FORMAT,
            )
            ret["keypoint_hflip_indices"] = _hflip_indices(cfg.DATASETS.TRAIN)
        return ret

    def __call__(self, dataset_dict: Dict) -> Dict:
        if not self.is_train:
            return super().__call__(dataset_dict)
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        faces = [a for a in dataset_dict.pop("annotations", []) if not a.get("iscrowd", 0)]
        num_points = len(self.keypoint_hflip_indices)
        boxes = np.array(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in faces],
            dtype=np.float64,
        ).reshape(-1, 4)
        keypoints = np.array(
            [a.get("keypoints", [0.0] * (3 * num_points)) for a in faces], dtype=np.float64
        ).reshape(-1, num_points, 3)

        aug_input = T.AugInput(image, boxes=boxes)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        keep, boxes, xy = transform_faces(transforms, boxes, keypoints[..., :2])
        keypoints = np.concatenate([xy, keypoints[..., 2:]], axis=2)[keep]
        if sum(isinstance(t, T.HFlipTransform) for t in transforms.transforms) % 2:
            keypoints = keypoints[:, self.keypoint_hflip_indices]  # left <-> right
        keypoints[keypoints[..., 2] == 0] = 0
        classes = [a["category_id"] for a, k in zip(faces, keep) if k]

        h, w = image.shape[:2]
        instances = Instances((h, w))
        instances.gt_boxes = Boxes(torch.as_tensor(boxes[keep], dtype=torch.float32))
        instances.gt_classes = torch.as_tensor(classes, dtype=torch.int64).reshape(-1)
        instances.gt_keypoints = Keypoints(torch.as_tensor(keypoints, dtype=torch.float32))
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        dataset_dict["instances"] = instances
        return dataset_dict
