"""iBUG / 300-W ``.pts`` loading (d2ext.data.ibug_pts): the three real faces in
``../shared/real_samples/ibug_faces/`` (RGB JPEG, grayscale JPEG, PPM) and bad inputs."""

import logging
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import check_image_size, read_image
from detectron2.structures import BoxMode
from detectron2.utils.visualizer import Visualizer
from PIL import Image

from d2ext.data import (
    DATASET_FORMATS,
    IBUG_68_INTEROCULAR,
    IBUG_68_KEYPOINT_NAMES,
    load_ibug_pts_dataset,
    read_pts,
    register_datasets,
)

SIZES = {"breakingbad": (1080, 1920), "einstein": (1024, 817), "takeo": (225, 150)}


@pytest.fixture(scope="module")
def samples(require_shared):
    return require_shared("real_samples", "ibug_faces")


def _raw_points(path):
    """The ``x y`` strings between the braces, parsed without the loader."""
    with open(path) as f:
        lines = [line.strip() for line in f]
    block = lines[lines.index("{") + 1 : lines.index("}")]
    return np.array([[float(v) for v in line.split()] for line in block])


def test_real_samples(samples):
    dicts = load_ibug_pts_dataset(samples)
    assert [d["image_id"] for d in dicts] == ["breakingbad", "einstein", "takeo"]
    for d in dicts:
        assert (d["height"], d["width"]) == SIZES[d["image_id"]]
        assert d["file_name"] == os.path.join(samples, os.path.basename(d["file_name"]))
        (ann,) = d["annotations"]
        kp = np.array(ann["keypoints"]).reshape(68, 3)
        raw = _raw_points(os.path.join(samples, d["image_id"] + ".pts"))
        # 1-based pixel coordinates -> D2 continuous coordinates, exactly
        assert np.array_equal(kp[:, :2], raw - 0.5)
        assert (kp[:, 2] == 2).all()
        assert ann["bbox"] == [*(raw - 0.5).min(0).tolist(), *(raw - 0.5).max(0).tolist()]
        assert ann["bbox_mode"] == BoxMode.XYXY_ABS
        assert (ann["category_id"], ann["iscrowd"]) == (0, 0)
        # iBUG's "right" is the subject's: in these frontal faces point 37 (right eye outer
        # corner) and point 1 (jaw, right ear) are on the image left of 46 and 17
        assert kp[36, 0] < kp[39, 0] < kp[42, 0] < kp[45, 0]
        assert kp[0, 0] < kp[8, 0] < kp[16, 0]
        # D2 reads the grayscale JPEG and the PPM as 3-channel images of the header's size
        image = read_image(d["file_name"], format="BGR")
        assert image.shape == (*SIZES[d["image_id"]], 3)
        check_image_size(d, image)
    # the first and last points of one file, as written in it
    kp = dicts[0]["annotations"][0]["keypoints"]
    assert kp[:2] == [1283.598566 - 0.5, 276.387616 - 0.5]
    assert Image.open(dicts[1]["file_name"]).mode == "L"
    assert read_pts(os.path.join(samples, "takeo.pts")).shape == (68, 2)


def test_real_samples_registered_and_drawn(samples, new_name):
    name = new_name()
    assert register_datasets([(name, "ibug_pts", samples, samples)]) == [name]
    dicts = DatasetCatalog.get(name)
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "landmark" and meta.thing_classes == ["face"]
    assert meta.keypoint_names == list(IBUG_68_KEYPOINT_NAMES)
    assert meta.interocular_keypoints == IBUG_68_INTEROCULAR
    assert meta.image_root == samples
    takeo = dicts[2]
    vis = Visualizer(read_image(takeo["file_name"], format="RGB"), meta).draw_dataset_dict(takeo)
    drawn = vis.get_image()
    assert drawn.shape == (225, 150, 3)
    assert not np.array_equal(drawn, read_image(takeo["file_name"], format="RGB"))


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def _pts_text(points, n_points=None):
    n = len(points) if n_points is None else n_points
    body = "\n".join(f"{x} {y}" for x, y in points)
    return f"version: 1\nn_points:  {n}\n{{\n{body}\n}}\n"


def _image(path, size=(20, 30), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size[1], size[0])).save(str(path))
    return str(path)


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n", 6, "n_points is 3 but the block has 2"),
        ("version: 1\nn_points: 1\n{\n1 2\n3 4\n}\n", 6, "n_points is 1 but the block has 2"),
        ("version: 1\nn_points: 2\n{\n1 2\n3 4\n", 5, "no '}' closing the point block opened"),
        ("version: 1\nn_points: 2\n1 2\n3 4\n}\n", 3, "expected a 'version:' or 'n_points:'"),
        ("version: 1\nn_points: 2\n", 2, "no '{' opening the point block"),
        ("version: 1\nn_points: 2\n{\n1 2\n{\n3 4\n}\n", 5, "expected 'x y'"),
        ("version: 1\nn_points: 1\n{\n1 2\n}\n}\n", 6, "unexpected text after the closing"),
        ("version: 1\nn_points: 2\n{\n1 2 3\n3 4\n}\n", 4, "expected 'x y'"),
        ("version: 1\nn_points: 2\n{\n1 2\n3 abc\n}\n", 5, "non-numeric point '3 abc'"),
        ("version: 1\nn_points: 1\n{\nnan 2\n}\n", 4, "non-finite"),
        ("version: 1\n{\n1 2\n}\n", 2, "missing 'n_points:' header"),
        ("version: 1\nn_points: two\n{\n1 2\n}\n", 2, "n_points must be a non-negative"),
        ("\n\n", 1, "empty file"),
    ],
)
def test_malformed_pts_names_file_and_line(tmp_path, text, line, message):
    path = _write(tmp_path / "face.pts", text)
    with pytest.raises(ValueError) as e:
        read_pts(path)
    assert str(e.value).startswith(f"{path}:{line}: ")
    assert message in str(e.value)


def test_loader_skips_and_warns(tmp_path, caplog):
    root = tmp_path / "faces"
    _image(root / "a.JPG")
    _write(root / "a.pts", _pts_text([[1.0, 1.0], [30.0, 20.0]]))
    _image(root / "sub" / "b.pgm", mode="L")
    _write(root / "sub" / "b.pts", _pts_text([[5.5, 6.5], [10.25, 8.0]]))
    lonely = _image(root / "no_pts.png")
    orphan = _write(root / "orphan.pts", _pts_text([[1.0, 1.0], [2.0, 2.0]]))
    _write(root / "notes.txt", "not an image")
    # D2 would rotate this one on read (EXIF orientation 6): its .pts could not match
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = str(root / "rotated.jpg")
    Image.new("RGB", (30, 20)).save(rotated, exif=exif)
    _write(root / "rotated.pts", _pts_text([[1.0, 1.0], [2.0, 2.0]]))
    with caplog.at_level(logging.WARNING, logger="d2ext.data.ibug_pts"):
        dicts = load_ibug_pts_dataset(str(root), num_points=2)
    assert [d["image_id"] for d in dicts] == ["a", "sub/b"]
    assert dicts[1]["annotations"][0]["keypoints"] == [5.0, 6.0, 2.0, 9.75, 7.5, 2.0]
    assert dicts[1]["annotations"][0]["bbox"] == [5.0, 6.0, 9.75, 7.5]
    assert dicts[0]["annotations"][0]["bbox"] == [0.5, 0.5, 29.5, 19.5]
    assert all((d["height"], d["width"]) == (20, 30) for d in dicts)
    assert f"Skipped 1 image(s) without a .pts file: {lonely}" in caplog.text
    assert f"1 .pts file(s) without an image: {orphan}" in caplog.text
    assert "Skipped 1 image(s) with an EXIF orientation" in caplog.text and rotated in caplog.text
    # num_points=None: any count, the same in every file
    assert len(load_ibug_pts_dataset(str(root), num_points=None)) == 2


def test_loader_errors(tmp_path):
    root = tmp_path / "faces"
    _image(root / "a.png")
    bad = _write(root / "a.pts", _pts_text([[1.0, 1.0], [2.0, 2.0]]))
    with pytest.raises(ValueError, match=f"{bad}: has 2 points, expected 68"):
        load_ibug_pts_dataset(str(root))
    _write(root / "b.pts", _pts_text([[1.0, 1.0]]))
    _image(root / "b.png")
    with pytest.raises(ValueError, match="b.pts: has 1 points, expected 2"):
        load_ibug_pts_dataset(str(root), num_points=None)
    _image(root / "b.jpg")
    with pytest.raises(ValueError, match="share the stem"):
        load_ibug_pts_dataset(str(root), num_points=None)
    with pytest.raises(FileNotFoundError, match="pts root"):
        load_ibug_pts_dataset(str(root), str(tmp_path / "missing"))


def test_separate_pts_root_and_visibility(tmp_path):
    images, pts = tmp_path / "images", tmp_path / "pts"
    _image(images / "set1" / "x.png")
    _write(pts / "set1" / "x.pts", _pts_text([[2.0, 3.0], [12.0, 13.0], [22.0, 15.0]]))
    vis = _write(tmp_path / "vis.json", '{"set1/x": [2, 1, 0]}')
    (d,) = load_ibug_pts_dataset(str(images), str(pts), num_points=3, visibility_file=vis)
    ann = d["annotations"][0]
    assert ann["keypoints"] == [1.5, 2.5, 2.0, 11.5, 12.5, 1.0, 21.5, 14.5, 0.0]
    assert ann["bbox"] == [1.5, 2.5, 11.5, 12.5]  # tight box of the labelled (v > 0) points
    for text, match in (
        ('{"set1/x": [2, 1]}', "entry 'set1/x' must be a list of 3"),
        ('{"set1/x": [2, 1, 3]}', "visibility flags in"),
        ('{"other": [2, 2, 2]}', "no visibility entry for image_id 'set1/x'"),
        ("[1, 2]", "expected an object"),
        ("{", "not valid json"),
    ):
        _write(tmp_path / "vis.json", text)
        with pytest.raises(ValueError, match=match):
            load_ibug_pts_dataset(str(images), str(pts), num_points=3, visibility_file=vis)


def test_dataset_format_entry(tmp_path, new_name):
    assert "ibug_pts" in DATASET_FORMATS
    images, pts = tmp_path / "images", tmp_path / "pts"
    _image(images / "x.png")
    _write(pts / "x.pts", _pts_text(np.arange(136.0).reshape(68, 2) % 19 + 1))
    name = new_name()
    register_datasets([(name, "ibug_pts", str(pts), str(images))])
    (d,) = DatasetCatalog.get(name)
    assert d["annotations"][0]["keypoints"][:3] == [0.5, 1.5, 2.0]
    assert MetadataCatalog.get(name).pts_root == str(pts)
    with pytest.raises(FileNotFoundError, match="pts folder"):
        register_datasets([(new_name(), "ibug_pts", str(tmp_path / "nope"), str(images))])
    with pytest.raises(FileNotFoundError, match="visibility json"):
        register_datasets([(new_name(), "ibug_pts", str(pts), str(images), "nope.json")])
