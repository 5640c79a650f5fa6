"""WIDER FACE ground-truth ``.mat`` files (d2ext.data.wider_face_mat): the real val files in
``../shared/real_samples/wider_face_val_gt/``, write -> read round trips in the official
structure, and bad inputs."""

import os
import shutil

import numpy as np
import pytest
from scipy.io import loadmat

from d2ext.data.wider_face_mat import (
    ATTRIBUTES,
    GT_FILE,
    SUBSET_FILES,
    SUBSETS,
    read_wider_gt_mats,
    write_wider_gt_mats,
)


@pytest.fixture(scope="module")
def real_dir(require_shared):
    return require_shared("real_samples", "wider_face_val_gt")


@pytest.fixture(scope="module")
def real(real_dir):
    return read_wider_gt_mats(real_dir)


def _readme_access(gt_dir, subset):
    """{(event, file): (boxes, 1-based keep)} read as the README (and the official
    ``evaluation.py``) index the files, without the reader under test."""
    gt = loadmat(os.path.join(gt_dir, GT_FILE))
    keep = loadmat(os.path.join(gt_dir, SUBSET_FILES[subset]))["gt_list"]
    out = {}
    for i in range(len(gt["event_list"])):
        event = str(gt["event_list"][i][0][0])
        for j in range(len(gt["file_list"][i][0])):
            file = str(gt["file_list"][i][0][j][0][0])
            boxes = gt["face_bbx_list"][i][0][j][0].astype("float")
            out[(event, file)] = (boxes, keep[i][0][j][0])
    return out


def _assert_same(a_images, b_images):
    assert len(a_images) == len(b_images)
    for a, b in zip(a_images, b_images):
        assert (a["event"], a["file"]) == (b["event"], b["file"])
        assert np.array_equal(a["boxes"], b["boxes"]) and b["boxes"].dtype == np.float64
        assert b["boxes"].shape == (len(a["boxes"]), 4)
        for s in SUBSETS:
            assert np.array_equal(a["keep"][s], b["keep"][s]) and b["keep"][s].dtype == np.int64
        for attr in ATTRIBUTES:
            assert (attr in a) == (attr in b)
            if attr in a:
                assert np.array_equal(a[attr], b[attr])


def test_real_val_counts(real):
    assert len(real) == 3226
    events = list(dict.fromkeys(img["event"] for img in real))
    assert len(events) == 61 and events[0] == "0--Parade"
    assert sum(len(img["boxes"]) for img in real) == 39708
    assert {s: sum(len(img["keep"][s]) for img in real) for s in SUBSETS} == {
        "easy": 7211,
        "medium": 13319,
        "hard": 31958,
    }
    assert {s: sum(len(img["keep"][s]) == 0 for img in real) for s in SUBSETS} == {
        "easy": 622,
        "medium": 207,
        "hard": 7,
    }
    first = real[0]
    assert (first["event"], first["file"]) == ("0--Parade", "0_Parade_marchingband_1_465")
    assert first["boxes"].shape == (126, 4)
    assert first["boxes"][0].tolist() == [345, 211, 4, 4]
    assert first["keep"]["hard"][:3].tolist() == [30, 31, 124]  # 1-based 31, 32, 125 in the file
    for img in real:  # the subsets nest: easy within medium within hard
        assert set(img["keep"]["easy"]) <= set(img["keep"]["medium"]) <= set(img["keep"]["hard"])
        assert all(len(img[a]) == len(img["boxes"]) for a in ATTRIBUTES)
    # annotated as is: one box of negative width, faces of zero width or height
    boxes = np.concatenate([img["boxes"] for img in real])
    assert (boxes[:, 2] < 0).sum() == 1 and (boxes[:, 2:] == 0).any()


def test_reader_matches_readme_indexing(real, real_dir):
    for subset in SUBSETS:
        raw = _readme_access(real_dir, subset)
        assert len(raw) == len(real)
        for img in real[::97]:
            boxes, keep = raw[(img["event"], img["file"])]
            assert np.array_equal(img["boxes"], boxes)
            assert np.array_equal(img["keep"][subset] + 1, keep.reshape(-1))


def test_round_trip_real_subset(real, real_dir, tmp_path):
    """Two real events written and read back, and written files shaped as the real ones."""
    images = [img for img in real if img["event"] in ("0--Parade", "1--Handshaking")]
    write_wider_gt_mats(str(tmp_path), images)
    _assert_same(images, read_wider_gt_mats(str(tmp_path)))
    for name in [GT_FILE, *SUBSET_FILES.values()]:
        ours, theirs = loadmat(str(tmp_path / name)), loadmat(os.path.join(real_dir, name))
        assert sorted(k for k in ours if not k.startswith("__")) == sorted(
            k for k in theirs if not k.startswith("__")
        )
        for key in ours:
            if key.startswith("__"):
                continue
            a, b = ours[key], theirs[key]
            assert (a.shape, a.dtype) == ((2, 1), b.dtype)
            if key != "event_list":  # (n, 1) cell per event, same nesting and leaf dtypes
                for j in range(3):
                    x, y = a[0][0][j][0], b[0][0][j][0]
                    assert (x.dtype, x.ndim) == (y.dtype, y.ndim) and x.shape[1:] == y.shape[1:]
    # the README's indexing reads the written files as it reads the real ones
    raw = _readme_access(str(tmp_path), "hard")
    assert raw[("0--Parade", "0_Parade_marchingband_1_465")][1].reshape(-1)[:3].tolist() == [
        31,
        32,
        125,
    ]


def test_round_trip_hand_built(tmp_path):
    """Float boxes, an image without faces, empty keep-lists, interleaved events, no attributes;
    a face count above 255 stores its keep-list as uint16 as the official files do."""
    many = np.column_stack([np.arange(300.0), np.zeros(300), np.ones(300), np.ones(300)])
    images = [
        {
            "event": "1--B",
            "file": "b_1",
            "boxes": np.array([[1.5, 2.25, 10.0, 12.0], [0, 0, 3, 4]]),
            "keep": {"easy": np.array([], dtype=np.int64), "medium": [1], "hard": [0, 1]},
        },
        {
            "event": "0--A",
            "file": "a_1",
            "boxes": np.zeros((0, 4)),
            "keep": {s: [] for s in SUBSETS},
        },
        {"event": "1--B", "file": "b_2", "boxes": many, "keep": {s: [299, 0] for s in SUBSETS}},
    ]
    write_wider_gt_mats(str(tmp_path), images)
    back = read_wider_gt_mats(str(tmp_path))
    # events in the order of their first image, images in order within an event
    expected = [images[0], images[2], images[1]]
    for img in expected:
        img["keep"] = {s: np.asarray(k, dtype=np.int64) for s, k in img["keep"].items()}
    _assert_same(expected, back)
    hard = loadmat(str(tmp_path / SUBSET_FILES["hard"]))["gt_list"]
    assert hard[0][0][1][0].dtype == np.uint16 and hard[0][0][1][0].ravel().tolist() == [300, 1]
    assert loadmat(str(tmp_path / GT_FILE))["face_bbx_list"][0][0][0][0].dtype == np.float64


def test_integral_boxes_written_as_int32(tmp_path):
    images = [
        {
            "event": "0--A",
            "file": "a",
            "boxes": [[1, 2, 3, 4]],
            "keep": {s: [0] for s in SUBSETS},
            "blur": [2],
        }
    ]
    write_wider_gt_mats(str(tmp_path), images)
    mat = loadmat(str(tmp_path / GT_FILE))
    assert mat["face_bbx_list"][0][0][0][0].dtype == np.int32
    assert "blur_label_list" in mat and "pose_label_list" not in mat
    assert read_wider_gt_mats(str(tmp_path))[0]["blur"].tolist() == [2]


def _one(**overrides):
    img = {"event": "0--A", "file": "a", "boxes": [[0, 0, 4, 4]], "keep": {s: [0] for s in SUBSETS}}
    img.update(overrides)
    return img


@pytest.mark.parametrize(
    "images, match",
    [
        ([], "no images"),
        ([_one(keep={"easy": [0], "medium": [0]})], "no 'hard'"),
        ([_one(keep={s: [1] for s in SUBSETS})], r"keep indices must be in \[0, 1\)"),
        ([_one(), _one()], r"image 1 \(0--A/a\) appears twice"),
        ([_one(boxes=[[0, 0, 4]])], r"boxes must be \(N, 4\)"),
        ([_one(blur=[1, 2])], "'blur' has 2 values for 1 faces"),
        ([_one(pose=[300])], r"'pose' must be in \[0, 255\]"),
    ],
)
def test_write_bad_inputs(tmp_path, images, match):
    with pytest.raises(ValueError, match=match):
        write_wider_gt_mats(str(tmp_path), images)


def test_read_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="wider_face_val.mat"):
        read_wider_gt_mats(str(tmp_path))
    a, b = tmp_path / "a", tmp_path / "b"
    write_wider_gt_mats(str(a), [_one(), _one(file="b")])
    write_wider_gt_mats(str(b), [_one(), _one(file="c")])
    # a subset file of another image list: the official code would pair keep-lists wrongly
    shutil.copy(b / SUBSET_FILES["medium"], a / SUBSET_FILES["medium"])
    with pytest.raises(ValueError, match="wider_medium_val.mat: file_list of event '0--A'"):
        read_wider_gt_mats(str(a))
    os.remove(a / SUBSET_FILES["easy"])
    with pytest.raises(FileNotFoundError, match="wider_easy_val.mat"):
        read_wider_gt_mats(str(a))
