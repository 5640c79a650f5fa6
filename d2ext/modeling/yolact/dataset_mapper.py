"""Train-time mapper for YOLACT: D2's DatasetMapper with the original's square stretch.

The model stretches any image to S x S itself (so D2's test-time mapper works unchanged); at
training, resizing in the mapper to S x S keeps GT masks small. Crowd annotations, which D2's
mapper drops, are kept as ``dataset_dict["crowd_boxes"]`` for the original's crowd handling.
"""
import copy

import numpy as np
import torch

from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode

from d2ext.data import MAPPER_REGISTRY

__all__ = ["YOLACTDatasetMapper"]


@MAPPER_REGISTRY.register()
class YOLACTDatasetMapper(DatasetMapper):
    """``INPUT.DATASET_MAPPER_NAME: YOLACTDatasetMapper``: Resize((S, S)) (+ horizontal flip at
    training), bitmask GT, plus ``crowd_boxes`` (Boxes, XYXY pixels of the mapped image)."""

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        size = cfg.MODEL.YOLACT.INPUT_SIZE
        augs = [T.Resize((size, size))]
        if is_train and cfg.INPUT.RANDOM_FLIP != "none":
            augs.append(T.RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal", vertical=cfg.INPUT.RANDOM_FLIP == "vertical"))
        ret["augmentations"] = augs
        ret["instance_mask_format"] = "bitmask"
        return ret

    def __call__(self, dataset_dict):
        crowd = [a for a in dataset_dict.get("annotations", []) if a.get("iscrowd", 0)]
        if not (self.is_train and crowd):
            return super().__call__(dataset_dict)
        # run D2's mapping, then transform the crowd boxes with the same (deterministic) transform
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in crowd], dtype=np.float64)
        dataset_dict["crowd_boxes"] = Boxes(torch.as_tensor(transforms.apply_box(boxes), dtype=torch.float32))
        self._transform_annotations(dataset_dict, transforms, image.shape[:2])
        return dataset_dict
