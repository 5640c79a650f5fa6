"""Train-time mapper of UPSNet: D2 COCO-panoptic dicts (``register_coco_panoptic``: a panoptic
PNG + segments_info) -> image, UPSNet semantic labels and thing instances."""

import copy
from typing import Dict, List

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances
from panopticapi.utils import rgb2id

from ..build import MAPPER_REGISTRY
from ..panoptic_label_space import PanopticLabelSpace

__all__ = ["UPSNetPanopticMapper"]


@MAPPER_REGISTRY.register()
class UPSNetPanopticMapper:
    """Select with ``INPUT.DATASET_MAPPER_NAME: "UPSNetPanopticMapper"``.

    Input: a dict of D2's ``load_coco_panoptic_json`` ("file_name", "pan_seg_file_name",
    "segments_info" with metadata contiguous "category_id", "isthing", "iscrowd").
    Output (training): "image" (C, H, W) uint8 tensor; "sem_seg" (H, W) long labels in UPSNet's
    standard space (stuff s -> s, thing t -> S + t, unlabeled -> ignore_value; crowd regions
    keep their thing class, as in UPSNet's semantic PNGs); "instances" with gt_masks (BitMasks),
    gt_boxes (tight XYXY boxes of the masks) and gt_classes in [0, T) of the non-crowd things.
    At test time only the image is loaded and resized, like D2's DatasetMapper.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List,
        image_format: str,
        label_space: PanopticLabelSpace,
        ignore_value: int = 255,
    ):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.label_space = label_space
        self.ignore_value = ignore_value

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        augs = utils.build_augmentation(cfg, is_train)
        if cfg.INPUT.CROP.ENABLED and is_train:
            augs.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
        return {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "label_space": PanopticLabelSpace.from_config(cfg),
            "ignore_value": cfg.MODEL.UPSNET.IGNORE_VALUE,
        }

    def __call__(self, dataset_dict: Dict) -> Dict:
        d = copy.deepcopy(dataset_dict)
        name = d.get("file_name", "<no file_name>")
        image = utils.read_image(d["file_name"], format=self.image_format)
        utils.check_image_size(d, image)
        if not self.is_train:
            aug_input = T.AugInput(image)
            self.augmentations(aug_input)
            d["image"] = _to_chw_tensor(aug_input.image)
            return d

        for key in ("pan_seg_file_name", "segments_info"):
            if key not in d:
                raise KeyError(
                    f"{name}: UPSNetPanopticMapper needs {key!r} (a dataset registered with "
                    "D2's register_coco_panoptic)"
                )
        pan = rgb2id(utils.read_image(d.pop("pan_seg_file_name"), "RGB"))
        if pan.shape != image.shape[:2]:
            raise ValueError(f"{name}: panoptic PNG is {pan.shape}, image is {image.shape[:2]}")
        # float64 holds every 24-bit segment id exactly and is resized (nearest) by D2's torch
        # path, which has no integer kernel
        aug_input = T.AugInput(image, sem_seg=pan.astype(np.float64))
        self.augmentations(aug_input)
        image, pan = aug_input.image, aug_input.sem_seg.astype(np.int64)

        space = self.label_space
        sem = np.full(pan.shape, self.ignore_value, dtype=np.int64)
        masks, classes = [], []
        for seg in d.pop("segments_info"):
            if "isthing" not in seg:
                raise KeyError(f"{name}: segment {seg.get('id')} has no 'isthing'")
            try:
                label = space.semantic_label(seg["category_id"], bool(seg["isthing"]))
            except ValueError as e:
                raise ValueError(f"{name}: segment {seg['id']}: {e}") from None
            region = pan == seg["id"]
            if not region.any():  # e.g. cropped out
                continue
            sem[region] = label
            if seg["isthing"] and not seg.get("iscrowd", 0):
                masks.append(region)
                classes.append(label - space.num_stuff)

        h, w = pan.shape
        instances = Instances((h, w))
        gt_masks = BitMasks(
            torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.bool)
        )
        instances.gt_masks = gt_masks
        instances.gt_boxes = gt_masks.get_bounding_boxes()
        instances.gt_classes = torch.tensor(classes, dtype=torch.long)
        d["image"] = _to_chw_tensor(image)
        d["sem_seg"] = torch.from_numpy(sem)
        d["instances"] = instances
        return d


def _to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
