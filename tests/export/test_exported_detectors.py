"""ExportedPredictor on exported YOLACT and RetinaFace files answers as D2's DefaultPredictor
on the eager model: same Instances (RetinaFace through a test-time resize and back)."""

import os

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import DefaultPredictor
from test_retinaface_export import _model as retinaface_model
from test_yolact_export import FAST
from test_yolact_export import _model as yolact_model
from yolact_tiny import tiny_cfg

from d2ext import add_d2ext_config
from d2ext.engine import ExportedPredictor
from d2ext.export import build_export_wrapper, export_onnx

pytest.importorskip("onnxruntime")

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _image(h, w, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _export(model, cfg, tmp_path, sample_hw):
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("weights")
    cfg.MODEL.WEIGHTS = str(tmp_path / "weights.pth")
    wrapper = build_export_wrapper(model, input_format=cfg.INPUT.FORMAT)
    inputs = wrapper.sample_inputs(_image(*sample_hw, seed=5), batch_size=1)
    return export_onnx(wrapper, inputs, str(tmp_path / "model.onnx"))


def test_yolact_onnx_predictor_equals_default_predictor(tmp_path):
    cfg = tiny_cfg(**FAST)
    cfg.MODEL.DEVICE = "cpu"
    cfg.INPUT.MIN_SIZE_TEST = 0  # YOLACT stretches the image itself (README: Deployment)
    path = _export(yolact_model(**FAST), cfg, tmp_path, (96, 112))
    image = _image(90, 130, seed=1)
    ours = ExportedPredictor(cfg, path)(image)["instances"]
    eager = DefaultPredictor(cfg)(image)["instances"]
    assert len(eager) > 0 and ours.image_size == eager.image_size == (90, 130)
    assert torch.equal(ours.pred_classes, eager.pred_classes)
    torch.testing.assert_close(ours.pred_boxes.tensor, eager.pred_boxes.tensor, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.scores, eager.scores, atol=1e-5, rtol=0)
    assert ours.pred_masks.dtype == torch.bool
    assert (ours.pred_masks == eager.pred_masks).float().mean().item() >= 0.9999


def test_retinaface_onnx_predictor_equals_default_predictor_through_a_resize(tmp_path):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "RetinaFace", "retinaface_mnet025_640.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[12, 16], [24, 32], [40, 48]]  # retinaface_model's
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 48, 1000
    path = _export(retinaface_model(), cfg, tmp_path, (64, 80))
    image = _image(72, 96, seed=2)  # resized to 48 x 64 by both predictors, outputs scaled back
    ours = ExportedPredictor(cfg, path)(image)["instances"]
    eager = DefaultPredictor(cfg)(image)["instances"]
    assert len(eager) > 0 and len(ours) == len(eager)
    assert ours.image_size == eager.image_size == (72, 96)
    torch.testing.assert_close(ours.scores, eager.scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.pred_boxes.tensor, eager.pred_boxes.tensor, atol=1e-3, rtol=0)
    torch.testing.assert_close(ours.pred_keypoints, eager.pred_keypoints, atol=1e-3, rtol=0)
    assert torch.equal(ours.pred_classes, eager.pred_classes)


def test_fixed_shape_file_refuses_another_image_size(tmp_path):
    cfg = tiny_cfg(**FAST)
    cfg.MODEL.DEVICE = "cpu"
    cfg.INPUT.MIN_SIZE_TEST = 0
    model = yolact_model(**FAST)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("weights")
    cfg.MODEL.WEIGHTS = str(tmp_path / "weights.pth")
    wrapper = build_export_wrapper(model, fixed_shape=(64, 80))
    path = export_onnx(wrapper, wrapper.sample_inputs(_image(64, 80, 3)), str(tmp_path / "f.onnx"))
    predictor = ExportedPredictor(cfg, path)
    assert len(predictor(_image(64, 80, seed=4))["instances"].pred_masks.shape) == 3
    with pytest.raises(ValueError, match="exported for fixed 64x80 inputs; this image is 65x80"):
        predictor(_image(65, 80, seed=4))
