"""D2EXT.VIS_PERIOD_IMAGES: after each evaluation the Trainer draws the predictions on the first
test images (d2ext.utils.visualize, shared with tools/demo.py)."""

import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.structures import Boxes, Instances

from d2ext import add_d2ext_config
from d2ext.engine import Trainer
from d2ext.utils.visualize import draw_predictions

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATASET = "synth_shapes_mini_val"
BOX = (10, 20, 60, 50)  # x0, y0, x1, y1 of the fake model's one detection


def _instances(h, w, boxes, scores):
    inst = Instances((h, w))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.zeros(len(scores), dtype=torch.long)
    masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for m, (x0, y0, x1, y1) in zip(masks, boxes):
        m[y0:y1, x0:x1] = True
    inst.pred_masks = masks
    return inst


class _OneDetection(torch.nn.Module):
    """Stands in for a trained model: one confident box + mask per image, at BOX."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, batched_inputs):
        self.calls += len(batched_inputs)
        return [
            {"instances": _instances(x["height"], x["width"], [BOX], [0.9])} for x in batched_inputs
        ]


def _changed(a, b, x0, y0, x1, y1):
    return np.abs(a[y0:y1, x0:x1].astype(int) - b[y0:y1, x0:x1].astype(int)).mean()


def test_draw_predictions_instances_above_confidence():
    image = np.full((200, 300, 3), 128, np.uint8)
    meta = MetadataCatalog.get(DATASET)
    preds = {"instances": _instances(200, 300, [(4, 4, 60, 60), (200, 120, 280, 190)], [0.9, 0.1])}
    out = draw_predictions(image, preds, meta, confidence=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert _changed(out, image, 10, 10, 54, 54) > 5  # the confident instance's mask is drawn
    assert (out[110:, 190:] == image[110:, 190:]).all()  # the 0.1 one is not
    out = draw_predictions(image, preds, meta, confidence=0.05)
    assert _changed(out, image, 205, 125, 275, 185) > 5


def test_draw_predictions_panoptic_and_semantic():
    image = np.full((40, 40, 3), 128, np.uint8)
    meta = MetadataCatalog.get("synth_panoptic_mini_val")
    pan = torch.zeros(40, 40, dtype=torch.int32)
    pan[10:30, 10:30] = 1
    out = draw_predictions(
        image, {"panoptic_seg": (pan, [{"id": 1, "category_id": 0, "isthing": True}])}, meta
    )
    assert _changed(out, image, 12, 12, 28, 28) > 5
    assert (out[0:5, 0:5] == image[0:5, 0:5]).all()  # void is not drawn
    logits = torch.zeros(len(meta.stuff_classes), 40, 40)
    logits[1, :, 20:] = 1.0
    out = draw_predictions(image, {"sem_seg": logits}, meta)
    assert _changed(out, image, 25, 5, 35, 35) > 5
    with pytest.raises(ValueError, match="nothing to draw"):
        draw_predictions(image, {"proposals": None}, meta)


def _cfg(tmp_path, vis):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "Base", "mask_rcnn_R_18_FPN_synth.yaml"))
    cfg.DATASETS.TEST = (DATASET,)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.D2EXT.VIS_PERIOD_IMAGES = vis
    return cfg


def test_trainer_test_draws_the_first_test_images(tmp_path):
    model = _OneDetection()
    results = Trainer.test(_cfg(tmp_path, 2), model)
    assert model.training  # evaluation and drawing leave the model's mode as it was
    assert results["segm"]["AP"] >= 0  # D2's evaluation results, unchanged
    dicts = DatasetCatalog.get(DATASET)[:2]
    stems = sorted(os.path.splitext(os.path.basename(d["file_name"]))[0] + ".png" for d in dicts)
    vis_dir = tmp_path / "vis" / DATASET
    assert sorted(os.listdir(vis_dir)) == stems
    assert model.calls == len(DatasetCatalog.get(DATASET)) + 2  # evaluation + the 2 drawn
    for d in dicts:
        drawn = cv2.imread(
            str(vis_dir / (os.path.splitext(os.path.basename(d["file_name"]))[0] + ".png"))
        )
        image = read_image(d["file_name"], format="BGR")
        assert drawn.shape == image.shape == (d["height"], d["width"], 3)
        assert _changed(drawn, image, BOX[0] + 4, BOX[1] + 4, BOX[2] - 4, BOX[3] - 4) > 5
        assert (drawn[-20:, -20:] == image[-20:, -20:]).all()  # nothing drawn away from BOX


def test_no_drawing_when_zero(tmp_path):
    model = _OneDetection()
    Trainer.test(_cfg(tmp_path, 0), model)
    assert not (tmp_path / "vis").exists()
    assert model.calls == len(DatasetCatalog.get(DATASET))
