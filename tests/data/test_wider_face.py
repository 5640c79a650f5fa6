"""d2ext.data.wider_face: RetinaFace label.txt and WIDER bbx_gt.txt parsing, bad lines,
registration (also through DATASETS.REGISTER)."""

import logging
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

from d2ext.data.datasets import DATASET_FORMATS, register_dataset
from d2ext.data.wider_face import (
    WIDER_FACE_KEYPOINT_NAMES,
    format_label_face,
    load_wider_bbx_gt,
    load_wider_face_label,
    register_wider_bbx,
    register_wider_face,
)

LABEL = """\
# 0--Parade/a.jpg
449 330 122 149 488.906 373.643 0.0 542.089 376.442 1.0 515.031 412.83 0.0 485.174 425.893 0.0 538.357 431.491 0.0 0.82
10 20 5 6 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0
1 2 3 4 5.5 6.5 0.0 -1 -1 -1 7 8 0.0 -1 -1 -1 9.25 10 0.0 0.5
# 1--Handshaking/b.jpg

# 1--Handshaking/c.jpg
7 8 9 10
"""

BBX = (
    "0--Parade/a.jpg\n"
    "2\n"
    "449 330 122 149 0 0 0 0 0 0 \n"  # the official files end face lines with a space
    "78 221 7 8 2 0 0 0 1 0\n"
    "1--Handshaking/b.jpg\n"
    "0\n"
    "0 0 0 0 0 0 0 0 0 0\n"
    "1--Handshaking/c.jpg\n"
    "1\n"
    "7 8 9 10 1 1 1 1 2 1\n"
)


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    for rel, (h, w) in {
        "0--Parade/a.jpg": (600, 800),
        "1--Handshaking/b.jpg": (30, 40),
        "1--Handshaking/c.jpg": (50, 60),
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(root / rel)
    return str(root)


def _write(tmp_path, text, name="label.txt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_label_txt_records(tmp_path, images):
    dicts = load_wider_face_label(_write(tmp_path, LABEL), images)
    assert [d["image_id"] for d in dicts] == [
        "0--Parade/a",
        "1--Handshaking/b",
        "1--Handshaking/c",
    ]
    assert [(d["height"], d["width"]) for d in dicts] == [(600, 800), (30, 40), (50, 60)]
    assert dicts[0]["file_name"] == os.path.join(images, "0--Parade/a.jpg")
    a = dicts[0]["annotations"]
    assert len(a) == 3
    assert a[0] == {
        "bbox": [449.0, 330.0, 122.0, 149.0],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": 0,
        "iscrowd": 0,
        # the flag (1.0 on the right eye) does not change v
        "keypoints": [488.906, 373.643, 2.0, 542.089, 376.442, 2.0, 515.031, 412.83, 2.0]
        + [485.174, 425.893, 2.0, 538.357, 431.491, 2.0],
        "blur": 0.82,
    }
    assert a[1]["keypoints"] == [0.0] * 15 and a[1]["blur"] == -1.0
    # the original's rule: the first point is labelled, so all five are, -1 -1 included
    assert a[2]["keypoints"] == [5.5, 6.5, 2, -1, -1, 2, 7, 8, 2, -1, -1, 2, 9.25, 10, 2]
    assert dicts[1]["annotations"] == []  # an image without faces is valid
    # val/label.txt lines: boxes only, no landmarks, no blur
    (c,) = dicts[2]["annotations"]
    assert c["bbox"] == [7.0, 8.0, 9.0, 10.0] and c["keypoints"] == [0.0] * 15
    assert "blur" not in c


@pytest.mark.parametrize(
    "text, line, match",
    [
        ("# a/a.jpg\n1 2 3 4 5 6 7\n", 2, "expected 4 numbers"),
        ("# a/a.jpg\n1 2 3 4\n1 2 x 4\n", 3, "non-numeric"),
        ("# a/a.jpg\n1 2 nan 4\n", 2, "non-finite"),
        ("\n1 2 3 4\n# a/a.jpg\n", 2, "before the first"),
        ("# a/a.jpg\n#\n", 2, "without an image path"),
    ],
)
def test_label_txt_malformed_line_names_file_and_line(tmp_path, images, text, line, match):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=match) as e:
        load_wider_face_label(path, images)
    assert f"{path}:{line}:" in str(e.value)


def test_negative_and_zero_boxes_skipped_with_warning(tmp_path, images, caplog):
    text = "# 0--Parade/a.jpg\n1 2 -3 4\n1 2 0 4\n1 2 3 0\n1 2 3 4\n"
    path = _write(tmp_path, text)
    with caplog.at_level(logging.WARNING, logger="d2ext.data.wider_face"):
        (d,) = load_wider_face_label(path, images)
    assert [a["bbox"] for a in d["annotations"]] == [[1.0, 2.0, 3.0, 4.0]]
    assert (
        f"{path}: skipped 1 face box(es) with a negative width or height (lines 2)" in caplog.text
    )
    assert f"{path}: skipped 2 face box(es) with zero area (lines 3, 4)" in caplog.text


def test_missing_image_and_duplicate_named(tmp_path, images):
    path = _write(tmp_path, "# 0--Parade/a.jpg\n# 0--Parade/missing.jpg\n1 2 3 4\n")
    with pytest.raises(FileNotFoundError, match=f"{path}:2: image .*missing.jpg"):
        load_wider_face_label(path, images)
    path = _write(tmp_path, "# 0--Parade/a.jpg\n\n# 0--Parade/a.jpg\n")
    with pytest.raises(ValueError, match=f"{path}:3: .* listed again .* line 1"):
        load_wider_face_label(path, images)


def test_bbx_gt_records(tmp_path, images):
    dicts = load_wider_bbx_gt(_write(tmp_path, BBX, "bbx.txt"), images)
    assert [len(d["annotations"]) for d in dicts] == [2, 0, 1]
    a = dicts[0]["annotations"][1]
    assert a["bbox"] == [78.0, 221.0, 7.0, 8.0] and a["bbox_mode"] == BoxMode.XYWH_ABS
    assert a["keypoints"] == [0.0] * 15
    attrs = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
    assert [a[k] for k in attrs] == [2, 0, 0, 0, 1, 0]
    assert [dicts[2]["annotations"][0][k] for k in attrs] == [1, 1, 1, 1, 2, 1]
    # a count of 0 without its line of zeros (some copies) reads the same
    no_zeros = BBX.replace("0\n0 0 0 0 0 0 0 0 0 0\n", "0\n")
    assert load_wider_bbx_gt(_write(tmp_path, no_zeros, "bbx2.txt"), images) == dicts


@pytest.mark.parametrize(
    "text, line, match",
    [
        ("0--Parade/a.jpg\ntwo\n", 2, "expected the face count"),
        ("0--Parade/a.jpg\n1\n1 2 3 4 0 0 0 0 0\n", 3, "expected 10 integers"),
        ("0--Parade/a.jpg\n1\n1 2 3.5 4 0 0 0 0 0 0\n", 3, "expected 10 integers"),
        ("0--Parade/a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", 3, "file ends where face 2 of 2"),
        ("0--Parade/a.jpg\n", 1, "file ends where the face count"),
        ("a/a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n5 6 7 8 0 0 0 0 0 0\n", 4, "expected an image path"),
    ],
)
def test_bbx_gt_malformed_line_names_file_and_line(tmp_path, images, text, line, match):
    path = _write(tmp_path, text, "bbx.txt")
    with pytest.raises(ValueError, match=match) as e:
        load_wider_bbx_gt(path, images)
    assert f"{path}:{line}:" in str(e.value)


def test_format_label_face_round_trip(tmp_path, images):
    lm = np.array([[1.5, 2.0625], [3, 4], [5, 6], [-1, -1], [7.25, 8]])
    lines = [
        "# 0--Parade/a.jpg",
        format_label_face([1, 2, 30, 40], lm, [0, 1, 0, 0, 0], 2),
        format_label_face([5, 6, 7, 8], None, blur=0),
        format_label_face([9, 10, 11, 12]),
    ]
    assert lines[1] == "1 2 30 40 1.5 2.0625 0.0 3 4 1.0 5 6 0.0 -1 -1 0.0 7.25 8 0.0 2"
    assert lines[3] == "9 10 11 12"
    (d,) = load_wider_face_label(_write(tmp_path, "\n".join(lines) + "\n"), images)
    a = d["annotations"]
    assert a[0]["keypoints"] == [1.5, 2.0625, 2, 3, 4, 2, 5, 6, 2, -1, -1, 2, 7.25, 8, 2]
    assert a[0]["blur"] == 2.0 and a[1]["blur"] == 0.0 and a[1]["keypoints"] == [0.0] * 15
    assert "blur" not in a[2]


def _check_metadata(name, gt_dir):
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["face"]
    assert tuple(meta.keypoint_names) == WIDER_FACE_KEYPOINT_NAMES
    assert tuple(meta.keypoint_flip_map) == (
        ("left_eye", "right_eye"),
        ("left_mouth", "right_mouth"),
    )
    assert meta.evaluator_type == "widerface"
    assert meta.get("wider_gt_dir", None) == gt_dir


def test_register_functions(tmp_path, images, new_name):
    gt = tmp_path / "gt"
    gt.mkdir()
    name = new_name("wider")
    register_wider_face(name, _write(tmp_path, LABEL), images, str(gt))
    _check_metadata(name, str(gt))
    assert len(DatasetCatalog.get(name)) == 3
    name = new_name("wider_bbx")
    register_wider_bbx(name, _write(tmp_path, BBX, "bbx.txt"), images)
    _check_metadata(name, None)
    assert [len(d["annotations"]) for d in DatasetCatalog.get(name)] == [2, 0, 1]
    with pytest.raises(FileNotFoundError, match="ground-truth folder .*nowhere"):
        register_wider_face(new_name(), _write(tmp_path, LABEL), images, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="label.txt .*nolabel.txt"):
        register_wider_face(new_name(), str(tmp_path / "nolabel.txt"), images)


def test_dataset_register_entries(tmp_path, images, new_name):
    assert DATASET_FORMATS["widerface"] is register_wider_face
    assert DATASET_FORMATS["wider_bbx"] is register_wider_bbx
    name = register_dataset((new_name("cfg"), "widerface", _write(tmp_path, LABEL), images))
    _check_metadata(name, None)
    assert len(DatasetCatalog.get(name)) == 3
    gt = tmp_path / "gt"
    gt.mkdir()
    entry = (new_name("cfg"), "wider_bbx", _write(tmp_path, BBX, "bbx.txt"), images, str(gt))
    _check_metadata(register_dataset(entry), str(gt))
