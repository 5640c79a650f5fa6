"""d2ext.data.mappers.YOLACTDatasetMapper: the square stretch, crowd boxes, the original's SSD
augmentation and D2's scale jitter, each checked on the annotations it hands the model."""

import copy

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, BoxMode
from detectron2.utils.events import EventStorage
from PIL import Image
from yolact_tiny import tiny_cfg

from d2ext import add_d2ext_config
from d2ext.data import build_train_mapper
from d2ext.data.mappers import YOLACTDatasetMapper


def test_dataset_mapper_stretch_and_crowd(tmp_path):
    path = str(tmp_path / "a.png")
    Image.fromarray(np.zeros((60, 90, 3), np.uint8)).save(path)
    anns = [
        {
            "bbox": [10, 10, 30, 20],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 1,
            "iscrowd": 0,
            "segmentation": [[10, 10, 40, 10, 40, 30, 10, 30]],
        },
        {
            "bbox": [45, 0, 45, 60],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 0,
            "iscrowd": 1,
            "segmentation": [[45, 0, 90, 0, 90, 60, 45, 60]],
        },
    ]
    cfg = tiny_cfg()
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.MODEL.YOLACT.SSD_AUGMENTATION = False  # deterministic: resize only
    mapper = build_train_mapper(cfg)
    out = mapper({"file_name": path, "height": 60, "width": 90, "image_id": 0, "annotations": anns})
    assert out["image"].shape == (3, 128, 128)
    inst = out["instances"]
    assert (
        len(inst) == 1
        and isinstance(inst.gt_masks, BitMasks)
        and inst.gt_masks.tensor.shape[1:] == (128, 128)
    )
    torch.testing.assert_close(out["crowd_boxes"].tensor, torch.tensor([[64.0, 0.0, 128.0, 128.0]]))
    m = build_model(cfg)
    with EventStorage():
        losses = m([out])
    assert all(torch.isfinite(v) for v in losses.values())


def _shapes_image(tmp_path, h=120, w=160, rle=False):
    """A flat image with three rectangles and their annotations (polygons, or compressed RLE
    as the YouTube-VIS loader gives them)."""
    img = np.full((h, w, 3), 90, np.uint8)
    rects = [(10, 10, 50, 40), (70, 30, 140, 100), (20, 70, 45, 110)]
    anns = []
    for k, (x1, y1, x2, y2) in enumerate(rects):
        img[y1:y2, x1:x2] = (40 * k + 60, 200 - 40 * k, 120)
        anns.append(
            {
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": k,
                "iscrowd": 0,
                "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]],
            }
        )
        if rle:
            mask = np.zeros((h, w), np.uint8, order="F")
            mask[y1:y2, x1:x2] = 1
            anns[-1]["segmentation"] = mask_util.encode(mask)
    path = str(tmp_path / "shapes.png")
    Image.fromarray(img).save(path)
    return {"file_name": path, "height": h, "width": w, "image_id": 0, "annotations": anns}


def test_ssd_augmentation_keeps_boxes_masks_and_images_consistent(tmp_path):
    """The original's SSD augmentation through D2's annotation code: every output box is inside
    the S x S image and tight around its mask, objects only disappear through the crop, and the
    photometric / zoom-out / crop steps all happen over a few draws."""
    record = _shapes_image(tmp_path)
    default = get_cfg()
    add_d2ext_config(default)
    assert default.MODEL.YOLACT.SSD_AUGMENTATION  # the original's recipe is the default
    cfg = tiny_cfg(size=96)
    assert not cfg.MODEL.YOLACT.SSD_AUGMENTATION  # ... except in the CPU-budget synthetic config
    cfg.MODEL.YOLACT.SSD_AUGMENTATION = True
    mapper = build_train_mapper(cfg)
    counts, means = set(), set()
    for seed in range(40):
        np.random.seed(seed)
        out = mapper(copy.deepcopy(record))
        assert out["image"].shape == (3, 96, 96) and torch.isfinite(out["image"].float()).all()
        inst = out["instances"]
        counts.add(len(inst))
        means.add(round(float(out["image"].float().mean()), 1))
        boxes = inst.gt_boxes.tensor
        assert (boxes >= 0).all() and (boxes <= 96).all()
        for box, mask in zip(boxes, inst.gt_masks.tensor):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert len(ys) > 0
            # the mask lies within its (clipped) box, up to the resize's rounding
            assert (
                xs.min() >= box[0] - 2
                and xs.max() <= box[2] + 1
                and ys.min() >= box[1] - 2
                and ys.max() <= box[3] + 1
            )
    assert max(counts) == 3 and min(counts) < 3  # the crop drops objects whose centre it leaves out
    assert len(means) > 10  # photometric distortion and zoom-out change the pixels


@pytest.mark.parametrize("rle", [False, True])
def test_scale_jitter_rescales_objects_and_keeps_annotations_consistent(tmp_path, rle):
    """MODEL.YOLACT.SCALE_JITTER: D2's ResizeScale + FixedSizeCrop before the S x S stretch;
    objects change size, boxes stay tight around their masks (bitmasks from RLE too: their
    padding stays background), the padding is the mean pixel."""
    record = _shapes_image(tmp_path, rle=rle)
    cfg = tiny_cfg(size=96)
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.MODEL.YOLACT.SCALE_JITTER = [0.5, 1.5]
    mapper = build_train_mapper(cfg)
    widths, padded = set(), 0
    for seed in range(30):
        np.random.seed(seed)
        out = mapper(copy.deepcopy(record))
        assert out["image"].shape == (3, 96, 96)
        inst = out["instances"]
        if len(inst) == 0:  # the crop cut every object's centre away
            continue
        boxes = inst.gt_boxes.tensor
        assert (boxes >= 0).all() and (boxes <= 96).all()
        for box, mask in zip(boxes, inst.gt_masks.tensor):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert (
                xs.min() >= box[0] - 1
                and xs.max() <= box[2]
                and ys.min() >= box[1] - 1
                and ys.max() <= box[3]
            )
        widths.add(round(float(boxes[0, 2] - boxes[0, 0])))
        if (
            out["image"][:, -1, -1] == 127
        ).all():  # scale < 1: bottom-right padding, the mean 127.5 as uint8
            padded += 1
    assert len(widths) > 5 and padded > 0
    cfg.MODEL.YOLACT.SCALE_JITTER = [1.5, 0.5]
    with pytest.raises(ValueError, match="SCALE_JITTER"):
        build_train_mapper(cfg)


def test_mapper_image_without_annotations(tmp_path):
    record = _shapes_image(tmp_path)
    record["annotations"] = []
    mapper = build_train_mapper(tiny_cfg(size=64, SSD_AUGMENTATION=True))
    for seed in range(5):
        np.random.seed(seed)
        out = mapper(copy.deepcopy(record))
        assert out["image"].shape == (3, 64, 64) and len(out["instances"]) == 0


def test_crop_drops_objects_whose_centre_it_cuts_away(tmp_path):
    """After a crop, objects with their centre outside are dropped (the original), not clipped
    (D2); without a crop nothing is dropped."""

    class FixedCrop(T.Augmentation):
        def get_transform(self, image):
            return T.CropTransform(0, 0, 60, 60)

    record = _shapes_image(tmp_path)  # boxes (10,10,50,40), (70,30,140,100), (20,70,45,110)
    record["annotations"][1]["bbox"] = [
        40,
        30,
        100,
        70,
    ]  # overlaps the crop, centre (90, 65) outside
    kw = dict(
        is_train=True, image_format="BGR", use_instance_mask=True, instance_mask_format="bitmask"
    )
    cropped = YOLACTDatasetMapper(augmentations=[FixedCrop()], **kw)(copy.deepcopy(record))[
        "instances"
    ]
    assert cropped.gt_classes.tolist() == [
        0
    ]  # (20,70,45,110) is outside, (40,30,..) centre outside
    kept = YOLACTDatasetMapper(augmentations=[T.NoOpTransform()], **kw)(copy.deepcopy(record))[
        "instances"
    ]
    assert kept.gt_classes.tolist() == [0, 1, 2]
