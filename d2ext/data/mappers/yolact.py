"""Train-time mapper for YOLACT: D2's DatasetMapper with the original's augmentation and square
stretch.

The model stretches any image to S x S itself (so D2's test-time mapper works unchanged); at
training, resizing in the mapper to S x S keeps GT masks small. Before it, with
``MODEL.YOLACT.SSD_AUGMENTATION`` (default on, as the original), the SSD photometric distortion,
zoom-out and IoU-constrained crop of :mod:`d2ext.data.transforms.ssd` run (then, with
``MODEL.YOLACT.SCALE_JITTER``, D2's scale jitter); objects whose centre the crop leaves out are
dropped, as there. Crowd annotations, which D2's mapper drops, are kept as
``dataset_dict["crowd_boxes"]`` for the original's crowd handling.
"""

import copy
from typing import List, Sequence

import numpy as np
import torch
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode

from ..build import MAPPER_REGISTRY
from ..transforms.ssd import build_ssd_augmentations, centers_inside

__all__ = ["YOLACTDatasetMapper", "build_scale_jitter"]


def build_scale_jitter(
    scale_range: Sequence[float], size: int, pixel_mean: Sequence[float]
) -> List[T.Augmentation]:
    """``MODEL.YOLACT.SCALE_JITTER``: D2's ResizeScale to ``size`` x ``size`` by a random factor
    in ``scale_range`` (aspect kept), then FixedSizeCrop back to ``size`` x ``size``, padded
    with the mean pixel. Masks are padded with 0: FixedSizeCrop's default ``seg_pad_value=255``
    (meant for semantic-segmentation ignore labels) would turn the padding of every bitmask
    (RLE annotations: YouTube-VIS, COCO crowds) into object pixels."""
    if len(scale_range) != 2 or not 0 < float(scale_range[0]) <= float(scale_range[1]):
        raise ValueError(
            f"MODEL.YOLACT.SCALE_JITTER must be (min, max) with 0 < min <= max, got {tuple(scale_range)}"
        )
    lo, hi = float(scale_range[0]), float(scale_range[1])
    return [
        T.ResizeScale(lo, hi, size, size),
        T.FixedSizeCrop(
            (size, size), pad=True, pad_value=float(np.mean(pixel_mean)), seg_pad_value=0
        ),
    ]


def _xyxy(annotations) -> np.ndarray:
    return np.array(
        [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations],
        dtype=np.float64,
    ).reshape(-1, 4)


@MAPPER_REGISTRY.register()
class YOLACTDatasetMapper(DatasetMapper):
    """``INPUT.DATASET_MAPPER_NAME: YOLACTDatasetMapper``: (SSD augmentation +) Resize((S, S))
    (+ horizontal flip at training), bitmask GT, plus ``crowd_boxes`` (Boxes, XYXY pixels of the
    mapped image)."""

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        size = cfg.MODEL.YOLACT.INPUT_SIZE
        augs = []
        if is_train and cfg.MODEL.YOLACT.SSD_AUGMENTATION:
            # PIXEL_MEAN is in the channel order of INPUT.FORMAT, as the mapper's images
            augs += build_ssd_augmentations(list(cfg.MODEL.PIXEL_MEAN), cfg.INPUT.FORMAT)
        jitter = tuple(cfg.MODEL.YOLACT.SCALE_JITTER) if is_train else ()
        if jitter:
            augs += build_scale_jitter(jitter, size, cfg.MODEL.PIXEL_MEAN)
        if is_train and cfg.INPUT.RANDOM_FLIP != "none":
            augs.append(
                T.RandomFlip(
                    horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                    vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
                )
            )
        augs.append(T.Resize((size, size)))
        ret["augmentations"] = augs
        ret["instance_mask_format"] = "bitmask"
        return ret

    def __call__(self, dataset_dict):
        if not self.is_train:
            return super().__call__(dataset_dict)
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        annotations = dataset_dict.get("annotations", [])
        crowd = [a for a in annotations if a.get("iscrowd", 0)]
        objects = [a for a in annotations if not a.get("iscrowd", 0)]
        # the crop's IoU constraints and centre test look at the (non-crowd) objects
        aug_input = T.AugInput(image, boxes=_xyxy(objects))
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        h, w = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if crowd:
            boxes = np.clip(transforms.apply_box(_xyxy(crowd)), 0, [w, h, w, h])
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            dataset_dict["crowd_boxes"] = Boxes(torch.as_tensor(boxes[keep], dtype=torch.float32))
        if objects and any(isinstance(t, T.CropTransform) for t in transforms):
            # the original's crop keeps the objects whose centre it contains (D2 would clip them)
            objects = [
                a
                for a, k in zip(objects, centers_inside(transforms.apply_box(_xyxy(objects)), h, w))
                if k
            ]
        dataset_dict["annotations"] = objects
        self._transform_annotations(dataset_dict, transforms, (h, w))
        return dataset_dict
