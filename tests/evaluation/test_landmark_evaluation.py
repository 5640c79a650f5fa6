"""LandmarkEvaluator: NME / FR / AUC / PCK / PCKh on hand-computed cases, pairing, missing
predictions, real iBUG faces, the dispatch and bad inputs."""

import json
import logging
import math
import os
import sys

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from d2ext.config import add_d2ext_config
from d2ext.data.ibug_pts import load_ibug_pts_dataset, read_pts
from d2ext.data.keypoint_metadata import ibug68_metadata
from d2ext.evaluation import LandmarkEvaluator, build_evaluator
from d2ext.evaluation.landmark_evaluation import pair_by_iou

FACE4 = ["left_eye", "right_eye", "nose", "mouth"]


@pytest.fixture
def register():
    """register(name, dicts, **metadata) -> name; removed again after the test."""
    names = []

    def _register(name, dicts, **metadata):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).set(**{"evaluator_type": "landmark", **metadata})
        names.append(name)
        return name

    yield _register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _ann(points, bbox, visible=None, **extra):
    """Annotation of (K, 2) points (v = 2, or 0 where ``visible`` is False), XYXY bbox."""
    points = np.asarray(points, dtype=np.float64)
    v = np.full(len(points), 2.0) if visible is None else np.where(visible, 2.0, 0.0)
    kpts = np.concatenate([points, v[:, None]], axis=1).ravel().tolist()
    return {
        "bbox": bbox,
        "bbox_mode": BoxMode.XYXY_ABS,
        "category_id": 0,
        "iscrowd": 0,
        "keypoints": kpts,
        **extra,
    }


def _image(image_id, anns):
    return {
        "file_name": f"{image_id}.jpg",
        "height": 100,
        "width": 100,
        "image_id": image_id,
        "annotations": anns,
    }


def _output(points, boxes=None, size=(100, 100), dtype=np.float32):
    """Model output of (R, K, 2) predicted points (score 1) and optional (R, 4) XYXY boxes."""
    points = torch.as_tensor(np.asarray(points, dtype=dtype))
    inst = Instances(size, pred_keypoints=torch.cat([points, torch.ones_like(points[..., :1])], -1))
    if boxes is not None:
        inst.pred_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    return {"instances": inst}


# Four faces, K = 4 (eyes, nose, mouth). NME_i by hand:
#   A: eyes 20 px apart, nose off by (3, 4) = 5 px  -> mean 5/4 px     -> 1.25 / 20  = 0.0625
#   B: eyes 10 px apart, every point off 7/8 px down -> 0.875 / 10                    = 0.0875
#   C: no prediction                                                                    = inf
#   D: eyes unlabelled -> box diagonal hypot(12, 16) = 20; mouth off 2 px -> 1 / 20     = 0.05
FACE_A = [[10, 10], [30, 10], [20, 20], [20, 30]]
FACE_B = [[60, 10], [70, 10], [65, 15], [65, 20]]
FACE_C = [[10, 50], [50, 50], [30, 60], [30, 70]]
FACE_D = [[0, 0], [0, 0], [20, 20], [20, 28]]
BOX_A, BOX_B, BOX_C, BOX_D = [10, 10, 30, 30], [60, 10, 70, 20], [10, 50, 50, 70], [14, 20, 26, 36]
PRED_A = [[10, 10], [30, 10], [23, 24], [20, 30]]
PRED_B = [[x, y + 0.875] for x, y in FACE_B]  # offsets exact in float32, as predictions are
PRED_D = [[0, 0], [0, 0], [20, 20], [22, 28]]


def _four_faces(register, **metadata):
    dicts = [
        _image(1, [_ann(FACE_A, BOX_A), _ann(FACE_B, BOX_B)]),
        _image(2, [_ann(FACE_C, BOX_C)]),
        _image(3, [_ann(FACE_D, BOX_D, visible=[False, False, True, True])]),
    ]
    name = register("d2ext_test_landmark_four", dicts, keypoint_names=FACE4, **metadata)
    inputs = [{"image_id": i} for i in (1, 2, 3)]
    outputs = [
        _output([PRED_A, PRED_B], [BOX_A, BOX_B]),
        _output(np.zeros((0, 4, 2))),
        _output([PRED_D], [BOX_D]),
    ]
    return name, inputs, outputs


def test_hand_computed_metrics(register, tmp_path, caplog):
    name, inputs, outputs = _four_faces(register, interocular_keypoints=("left_eye", "right_eye"))
    ev = LandmarkEvaluator(name, output_dir=str(tmp_path))  # distributed=True on one process
    ev.reset()
    ev.process(inputs, outputs)
    with caplog.at_level(logging.WARNING):
        res = ev.evaluate()["landmarks"]
    assert ev.normalizer == "interocular"
    expected = {
        "NME": 100 * (0.0625 + 0.0875 + 0.05) / 3,  # 6.667, the missing face excluded
        "FR@0.08": 50.0,  # B and C
        "FR@0.10": 25.0,  # C
        # CED steps: 1/4 from 0.05, 2/4 from 0.0625, 3/4 from 0.0875 up to 0.1
        "AUC@0.1": 100 * (0.25 * 0.0125 + 0.5 * 0.025 + 0.75 * 0.0125) / 0.1,  # 25
        # labelled points 4 + 4 + 4 + 2; PCK size = the box's longer side: 20, 10, 40, 16
        "PCK@0.05": 100 * 4 / 14,  # A: 3 of 4 within 1 px, B: 0.875 > 0.5, C: 0, D: 1 of 2
        "PCK@0.2": 100 * 9 / 14,  # A: 3 within 4 px, B: 4 within 2, C: 0, D: 2 within 3.2
        "missing": 1.0,
    }
    assert list(res) == list(expected)  # no PCKh: no annotation has a head_size
    assert res == pytest.approx(expected, abs=1e-12)
    assert res["AUC@0.1"] == pytest.approx(25.0, abs=1e-9)
    assert "1 of 4 instances have unlabelled or coincident eye corners" in caplog.text
    assert "1 instances have no prediction" in caplog.text

    with open(tmp_path / "landmark_per_instance.json") as f:
        per_instance = json.load(f)
    assert [(r["image_id"], r["annotation"], r["prediction"]) for r in per_instance] == [
        (1, 0, 0),
        (1, 1, 1),
        (2, 0, None),
        (3, 0, 0),
    ]
    assert [r["missing"] for r in per_instance] == [False, False, True, False]
    assert per_instance[2]["nme"] is None and per_instance[2]["mean_error_px"] is None
    found = [per_instance[i] for i in (0, 1, 3)]
    assert [r["nme"] for r in found] == [0.0625, 0.0875, 0.05]
    assert [r["mean_error_px"] for r in found] == [1.25, 0.875, 1.0]
    assert [r["normalizer"] for r in per_instance] == ["interocular"] * 3 + ["box_diagonal"]
    assert [r["normalizer_px"] for r in per_instance] == [20.0, 10.0, 40.0, 20.0]
    with open(tmp_path / "landmark_ced.json") as f:
        ced = json.load(f)
    assert ced["errors"] == [0.05, 0.0625, 0.0875]
    assert ced["fraction"] == [0.25, 0.5, 0.75]
    assert (ced["num_instances"], ced["num_missing"], ced["normalizer"]) == (4, 1, "interocular")
    with open(tmp_path / "landmark_results.json") as f:
        assert json.load(f)["normalizer"] == "interocular"
    with open(tmp_path / "landmark_ced.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_box_diagonal_normaliser_and_pckh(register):
    # no interocular_keypoints in the metadata: every face normalised by its box diagonal (50 px)
    off = np.array([1.5, 2.0])  # 2.5 px on every point
    face = np.array([[5.0, 5], [25, 5], [15, 20], [15, 35]])
    dicts = [
        _image(
            "a",
            [
                _ann(face, [0, 0, 30, 40], head_size=10.0),
                _ann(face + [50, 0], [50, 0, 80, 40], head_size=4.0),
            ],
        )
    ]
    name = register("d2ext_test_landmark_box", dicts, keypoint_names=FACE4)
    ev = LandmarkEvaluator(name, distributed=False, pck_thresholds=(0.05, 0.1))
    ev.reset()
    ev.process([{"image_id": "a"}], [_output([face + off, face + [50, 0] + off])])
    res = ev.evaluate()["landmarks"]
    assert ev.normalizer == "box_diagonal"
    assert res["NME"] == pytest.approx(100 * 2.5 / 50, abs=1e-9)
    assert res["FR@0.08"] == res["FR@0.10"] == 0.0
    assert res["AUC@0.1"] == pytest.approx(100 * (0.1 - 0.05) / 0.1, abs=1e-9)
    # box longer side 40: 0.05 -> 2 px (2.5 fails), 0.1 -> 4 px (passes)
    assert (res["PCK@0.05"], res["PCK@0.1"]) == (0.0, 100.0)
    # head 10: 2.5 <= 5 on every point; head 4: 2.5 > 2 on every point
    assert res["PCKh@0.5"] == pytest.approx(50.0)


def test_normaliser_override(register):
    name, inputs, outputs = _four_faces(register, interocular_keypoints=("left_eye", "right_eye"))
    ev = LandmarkEvaluator(name, distributed=False, normalizer="box_diagonal")
    ev.reset()
    ev.process(inputs, outputs)
    res = ev.evaluate()["landmarks"]
    # A: 1.25 / hypot(20, 20); B: 0.875 / hypot(10, 10); D: 1 / 20
    nme = [1.25 / math.hypot(20, 20), 0.875 / math.hypot(10, 10), 0.05]
    assert res["NME"] == pytest.approx(100 * sum(nme) / 3, abs=1e-12)


def test_pair_by_iou():
    gt = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], dtype=float)
    p_right = [4, 0, 14, 10]  # IoU 0.43 with gt 0, 0.82 with gt 1
    p_left = [0, 0, 9, 10]  # IoU 0.9 with gt 0, 0.27 with gt 1
    p_far = [50, 50, 60, 60]
    assert pair_by_iou(np.array([p_right, p_left, p_far], dtype=float), gt) == [1, 0]
    assert pair_by_iou(np.array([p_right], dtype=float), gt) == [None, 0]
    assert pair_by_iou(np.array([p_far], dtype=float), gt) == [None, None]
    assert pair_by_iou(np.zeros((0, 4)), gt) == [None, None]


def test_iou_pairing_when_counts_differ(register):
    dicts = [
        _image(1, [_ann(FACE_A, BOX_A), _ann(FACE_B, BOX_B)]),
        _image(2, [_ann(FACE_C, BOX_C)]),
    ]
    name = register(
        "d2ext_test_landmark_pairing",
        dicts,
        keypoint_names=FACE4,
        interocular_keypoints=("left_eye", "right_eye"),
    )
    ev = LandmarkEvaluator(name, distributed=False)
    ev.reset()
    far = [[90, 90]] * 4
    # image 1: three predictions, shuffled, one a false positive; image 2: one that misses C
    ev.process(
        [{"image_id": 1}, {"image_id": 2}],
        [
            _output([far, PRED_B, PRED_A], [[85, 85, 95, 95], BOX_B, [11, 10, 31, 30]]),
            _output([far, far], [[85, 85, 95, 95], [80, 80, 99, 99]]),
        ],
    )
    res = ev.evaluate()["landmarks"]
    assert res["NME"] == pytest.approx(100 * (0.0625 + 0.0875) / 2, abs=1e-12)
    assert res["missing"] == 1.0
    assert res["FR@0.10"] == pytest.approx(100 / 3)


def test_all_missing(register):
    name = register(
        "d2ext_test_landmark_none", [_image(1, [_ann(FACE_A, BOX_A)])], keypoint_names=FACE4
    )
    ev = LandmarkEvaluator(name, distributed=False)
    ev.reset()
    ev.process([{"image_id": 1}], [{"instances": Instances((100, 100))}])
    res = ev.evaluate()["landmarks"]
    assert math.isnan(res["NME"])
    assert (res["FR@0.08"], res["AUC@0.1"], res["PCK@0.2"], res["missing"]) == (100, 0, 0, 1)


def test_real_ibug_faces(register, require_shared, tmp_path):
    folder = require_shared("real_samples", "ibug_faces")
    dicts = load_ibug_pts_dataset(folder)
    assert len(dicts) == 3
    inputs, outputs, expected = [], [], []
    for i, d in enumerate(dicts):
        (ann,) = d["annotations"]
        pts = np.asarray(ann["keypoints"], dtype=np.float64).reshape(68, 3)[:, :2]
        offset = np.array([3.0 * (i + 1), -4.0 * (i + 1)])  # 5, 10, 15 px on every point
        inputs.append({"image_id": d["image_id"]})
        outputs.append(_output([pts + offset], [ann["bbox"]], dtype=np.float64))
        # outer eye corners, 1-based points 37 and 46, from the file as written
        raw = read_pts(os.path.join(folder, d["image_id"] + ".pts"))
        expected.append(np.hypot(*offset) / np.hypot(*(raw[36] - raw[45])))
    name = register("d2ext_test_landmark_ibug", dicts, **ibug68_metadata())
    ev = LandmarkEvaluator(name, output_dir=str(tmp_path), distributed=False)
    ev.reset()
    ev.process(inputs, outputs)
    res = ev.evaluate()["landmarks"]
    assert ev.normalizer == "interocular"
    assert res["NME"] == pytest.approx(100 * np.mean(expected), rel=1e-12)
    with open(tmp_path / "landmark_per_instance.json") as f:
        per_instance = json.load(f)
    # float64 predictions: (pts + offset) - pts is the offset up to one rounding of pts + offset
    assert [r["nme"] for r in per_instance] == pytest.approx(expected, rel=1e-12)
    assert all(r["normalizer"] == "interocular" for r in per_instance)
    assert os.path.getsize(tmp_path / "landmark_ced.png") > 1000


def test_build_evaluator_dispatch(register, tmp_path):
    name, _, _ = _four_faces(register)
    cfg = get_cfg()
    add_d2ext_config(cfg)
    ev = build_evaluator(cfg, name, str(tmp_path))
    assert type(ev) is LandmarkEvaluator and ev._output_dir == str(tmp_path)


def test_without_matplotlib(register, tmp_path, monkeypatch, caplog):
    name, inputs, outputs = _four_faces(register)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import raises ImportError
    ev = LandmarkEvaluator(name, output_dir=str(tmp_path), distributed=False)
    ev.reset()
    ev.process(inputs, outputs)
    with caplog.at_level(logging.WARNING):
        assert ev.evaluate()["landmarks"]["missing"] == 1.0
    assert "matplotlib is not installed" in caplog.text
    assert (tmp_path / "landmark_ced.json").exists()
    assert not (tmp_path / "landmark_ced.png").exists()


def test_bad_inputs(register):
    name, inputs, outputs = _four_faces(register)
    ev = LandmarkEvaluator(name, distributed=False)
    ev.reset()
    with pytest.raises(
        ValueError,
        match=r"image_id=7: pred_keypoints must be \(R, K, 3\) with "
        r"K = 4, got \(1, 5, 3\)",
    ):
        ev.process([{"image_id": 7}], [_output([[[0, 0]] * 5])])
    with pytest.raises(ValueError, match="image_id=7: instances have no pred_keypoints"):
        ev.process([{"image_id": 7}], [{"instances": Instances((9, 9), scores=torch.ones(1))}])
    assert ev.evaluate() == {}  # nothing processed: D2's warning and empty results

    ev.process([{"image_id": 99}], [_output([PRED_A])])
    with pytest.raises(KeyError, match="image_id=99 is not in dataset"):
        ev.evaluate()
    ev.reset()
    ev.process([{"image_id": 1}], [_output([PRED_A, PRED_B, PRED_A])])  # no boxes to pair by
    with pytest.raises(ValueError, match="image_id=1: 3 predictions for 2 annotations and no"):
        ev.evaluate()
    ev.reset()
    ev.process([{"image_id": 1}], [_output([PRED_A, [[math.nan, 0]] * 4])])
    with pytest.raises(ValueError, match="image_id=1, prediction 1: non-finite keypoints"):
        ev.evaluate()

    # no keypoint_names: the count is checked against the annotations, naming the image
    dicts = [_image(5, [_ann(FACE_A, BOX_A)])]
    name = register("d2ext_test_landmark_nonames", dicts)
    ev = LandmarkEvaluator(name, distributed=False)
    ev.reset()
    ev.process([{"image_id": 5}], [_output([[[0, 0]] * 3])])
    with pytest.raises(
        ValueError, match="image_id=5, annotation 0: 4 annotated keypoints, predictions have 3"
    ):
        ev.evaluate()

    name = register("d2ext_test_landmark_empty", [], keypoint_names=FACE4)
    ev = LandmarkEvaluator(name, distributed=False)
    ev.reset()
    ev.process([{"image_id": 1}], [_output([PRED_A])])
    with pytest.raises(ValueError, match="dataset 'd2ext_test_landmark_empty' is empty"):
        ev.evaluate()

    # every landmark unlabelled (a fully occluded face): skipped, and then nothing is left
    unlabelled = [_image(1, [_ann(FACE_A, BOX_A, visible=[False] * 4)])]
    name = register("d2ext_test_landmark_unlabelled", unlabelled, keypoint_names=FACE4)
    ev = LandmarkEvaluator(name, distributed=False)
    ev.reset()
    ev.process([{"image_id": 1}], [_output([PRED_A])])
    with pytest.raises(ValueError, match="none of the 1 evaluated images has an annotation"):
        ev.evaluate()

    # one labelled point: a 0 x 0 tight box has no diagonal to normalise by
    point = [_image(1, [_ann(FACE_A, [20, 20, 20, 20], visible=[False, False, True, False])])]
    name = register("d2ext_test_landmark_point", point, keypoint_names=FACE4)
    ev = LandmarkEvaluator(name, distributed=False)
    ev.reset()
    ev.process([{"image_id": 1}], [_output([PRED_A])])
    with pytest.raises(ValueError, match="image_id=1, annotation 0: box .* has a zero diagonal"):
        ev.evaluate()

    # a landmark annotation without keypoints
    no_kpts = [_image(1, [{"bbox": BOX_A, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}])]
    name = register("d2ext_test_landmark_nokpts", no_kpts, keypoint_names=FACE4)
    ev = LandmarkEvaluator(name, distributed=False)
    ev.reset()
    ev.process([{"image_id": 1}], [_output([PRED_A])])
    with pytest.raises(ValueError, match="image_id=1, annotation 0: a landmark annotation needs"):
        ev.evaluate()


def test_bad_settings(register):
    name = register(
        "d2ext_test_landmark_meta",
        [],
        keypoint_names=FACE4,
        interocular_keypoints=("left_eye", "chin"),
    )
    with pytest.raises(ValueError, match=r"not in keypoint_names: \['chin'\]"):
        LandmarkEvaluator(name)
    name = register("d2ext_test_landmark_meta2", [], keypoint_names=FACE4)
    with pytest.raises(ValueError, match="normalizer='interocular' needs the metadata"):
        LandmarkEvaluator(name, normalizer="interocular")
    with pytest.raises(ValueError, match="normalizer must be one of"):
        LandmarkEvaluator(name, normalizer="face_size")
    with pytest.raises(ValueError, match=r"failure_thresholds must be finite numbers > 0"):
        LandmarkEvaluator(name, failure_thresholds=(0.08, 0))
    with pytest.raises(ValueError, match=r"auc_threshold must be finite numbers > 0"):
        LandmarkEvaluator(name, auc_threshold=math.inf)
