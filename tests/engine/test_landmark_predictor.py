"""LandmarkPredictor (single-image top-down inference) and tools/demo.py on image folders."""

import os
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.structures import BoxMode
from tool_runs import run_in_repo

from d2ext import add_d2ext_config
from d2ext.engine import LandmarkPredictor

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FACE_CONFIG = os.path.join(REPO, "configs", "Hourglass", "hourglass_face_synth.yaml")


def _cfg(path=FACE_CONFIG):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    return cfg


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return LandmarkPredictor(_cfg())


@pytest.fixture(scope="module")
def face_file(tmp_path_factory):
    from d2ext.data.synthetic.faces import render_face_image

    scene = render_face_image(7, 0, 128, 128)
    path = str(tmp_path_factory.mktemp("face") / "face.png")
    cv2.imwrite(path, cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    return path


def test_predictor_equals_the_evaluation_path(predictor, face_file):
    """Same crops, same numbers as the Trainer's test loader path (file read in INPUT.FORMAT by
    the test mapper), for an in-memory BGR image as DefaultPredictor takes it."""
    boxes = [[20.0, 25.0, 100.0, 110.0], [0.0, 0.0, 128.0, 128.0]]
    instances = predictor(cv2.imread(face_file), boxes=boxes)
    record = {
        "file_name": face_file,
        "height": 128,
        "width": 128,
        "image_id": 0,
        "annotations": [
            {"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0} for b in boxes
        ],
    }
    with torch.no_grad():
        reference = predictor.model([predictor.mapper(record)])[0]["instances"]
    assert instances.image_size == (128, 128)
    assert instances.pred_keypoints.shape == (2, 68, 3)
    assert torch.equal(instances.pred_boxes.tensor, torch.tensor(boxes))
    assert torch.equal(instances.pred_keypoints, reference.pred_keypoints)


def test_predictor_whole_image_grayscale_and_bad_boxes(predictor, face_file):
    image = cv2.imread(face_file)
    whole = predictor(image)  # no boxes: the whole image is the one box
    assert torch.equal(whole.pred_boxes.tensor, torch.tensor([[0.0, 0.0, 128.0, 128.0]]))
    same = predictor(image, boxes=np.array([0, 0, 128, 128]))
    assert torch.equal(whole.pred_keypoints, same.pred_keypoints)

    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    out = predictor(gray, boxes=[[10, 10, 90, 90]])
    assert out.pred_keypoints.shape == (1, 68, 3)
    assert torch.isfinite(out.pred_keypoints).all()
    # a grayscale image is its 3-channel replica, as D2's read_image converts it
    replica = predictor(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), boxes=[[10, 10, 90, 90]])
    assert torch.equal(out.pred_keypoints, replica.pred_keypoints)

    with pytest.raises(ValueError, match="x1 >= x0"):
        predictor(image, boxes=[[50, 10, 40, 90]])
    with pytest.raises(ValueError, match=r"\(R, 4\)"):
        predictor(image, boxes=[[1, 2, 3]])
    with pytest.raises(ValueError, match="uint8"):
        predictor(image.astype(np.float32))


def test_predictor_rejects_a_detector_config():
    cfg = _cfg(os.path.join(REPO, "configs", "Base", "mask_rcnn_R_18_FPN_synth.yaml"))
    with pytest.raises(ValueError, match="DefaultPredictor for detectors"):
        LandmarkPredictor(cfg)


@pytest.mark.slow
def test_demo_draws_landmarks_on_a_folder(tmp_path, require_shared):
    """The real iBUG samples (JPEG, grayscale JPEG, PPM) as a folder, one box for each."""
    folder = require_shared("real_samples", "ibug_faces")
    out = tmp_path / "vis"
    log = run_in_repo(
        [
            sys.executable,
            "tools/demo.py",
            "--config-file",
            "configs/Hourglass/hourglass_face_synth.yaml",
            "--input",
            folder,
            "--box",
            "10",
            "10",
            "200",
            "200",
            "--output",
            str(out),
            "MODEL.WEIGHTS",
            "",
            "OUTPUT_DIR",
            str(tmp_path),
        ],
        tmp_path,
    )
    images = sorted(
        os.path.splitext(f)[0] for f in os.listdir(folder) if f.endswith((".jpg", ".ppm"))
    )
    assert sorted(p.stem for p in out.iterdir()) == images, log[-2000:]
    assert log.count("1 instances, 1 drawn") == len(images), log[-2000:]
