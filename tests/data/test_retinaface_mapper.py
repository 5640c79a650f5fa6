"""RetinaFace's training augmentation (``d2ext.data.transforms.retinaface``) against the
original's rules, and ``RetinaFaceMapper``'s output on faces, empty and grayscale images."""

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, Instances, Keypoints
from PIL import Image

from d2ext import add_d2ext_config
from d2ext.data import build_train_mapper
from d2ext.data.mappers import RetinaFaceMapper
from d2ext.data.transforms.retinaface import (
    INTERPOLATIONS,
    CV2ResizeTransform,
    PadToSquare,
    RandomInterpolationResize,
    RandomSquareFaceCrop,
    RetinaFaceColorDistort,
    crop_faces,
    distort_colors,
    matrix_iof,
    transform_faces,
)


def test_matrix_iof():
    boxes = np.array([[10, 10, 20, 20], [0, 0, 40, 10], [5, 5, 5, 9], [1, 1, 1.5, 1.5]], float)
    roi = np.array([[0, 0, 20, 20]], float)
    # inside, half inside, zero area (never inside), sub-pixel (area counted as 1)
    np.testing.assert_array_equal(matrix_iof(boxes, roi)[:, 0], [1.0, 0.5, 0.0, 0.25])


def test_crop_faces_centre_inside_clip_and_zero_area():
    roi = np.array([10, 10, 50, 50], float)
    boxes = np.array(
        [
            [20, 20, 30, 30],  # inside
            [0, 20, 30, 30],  # centre (15, 25) inside: clipped to x0 = 10
            [0, 20, 18, 30],  # centre (9, 25) outside
            [40, 40, 70, 80],  # centre (55, 60) outside
            [30, 5, 30, 25],  # zero width, centre inside: dropped (the original's NaN)
            [10, 20, 10.5, 30],  # clipped box keeps 0.5 px
        ],
        float,
    )
    keep, clipped = crop_faces(boxes, roi)
    assert keep.tolist() == [True, True, False, False, False, True]
    np.testing.assert_array_equal(clipped[1], [10, 20, 30, 30])
    np.testing.assert_array_equal(clipped[3], [40, 40, 50, 50])


def test_random_square_crop():
    image = np.zeros((60, 100, 3), np.uint8)
    boxes = np.array([[40, 20, 50, 30], [0, 0, 100, 60]], float)
    np.random.seed(0)
    crop = RandomSquareFaceCrop((0.3, 0.45, 0.6, 0.8, 1.0), 250)
    sides = set()
    for _ in range(50):
        t = crop.get_transform(image, boxes)
        assert isinstance(t, T.CropTransform) and t.w == t.h and (t.orig_w, t.orig_h) == (100, 60)
        sides.add(t.w)
        assert 0 <= t.x0 < 100 - t.w + (t.w == 100) and 0 <= t.y0 <= 60 - t.h
        roi = np.array([[t.x0, t.y0, t.x0 + t.w, t.y0 + t.h]], float)
        assert matrix_iof(boxes, roi).max() >= 1 and crop_faces(boxes, roi[0])[0].any()
    assert sides <= {18, 27, 36, 48, 60} and len(sides) > 2
    # no face fits in any square: the whole image (then padded to a square)
    wide = np.array([[0, 10, 100, 50]], float)
    assert isinstance(crop.get_transform(image, wide), T.NoOpTransform)
    assert isinstance(crop.get_transform(image, np.zeros((0, 4))), T.NoOpTransform)


def _original_convert(img, alpha=1.0, beta=0.0):
    """The original's in-place ``_convert``: float math, clipped, assigned into uint8."""
    tmp = img.astype(float) * alpha + beta
    tmp[tmp < 0] = 0
    tmp[tmp > 255] = 255
    img[:] = tmp


@pytest.mark.parametrize("contrast_first", [True, False])
def test_distort_colors_as_the_original(contrast_first):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    out = distort_colors(
        img, brightness=-40.7, contrast=1.45, contrast_first=contrast_first, saturation=1.3, hue=-17
    )
    ref = img.copy()
    _original_convert(ref, beta=-40.7)
    if contrast_first:
        _original_convert(ref, alpha=1.45)
    ref = cv2.cvtColor(ref, cv2.COLOR_BGR2HSV)
    _original_convert(ref[:, :, 1], alpha=1.3)
    ref[:, :, 0] = (ref[:, :, 0].astype(int) - 17) % 180
    ref = cv2.cvtColor(ref, cv2.COLOR_HSV2BGR)
    if not contrast_first:
        _original_convert(ref, alpha=1.45)
    np.testing.assert_array_equal(out, ref)
    # nothing drawn: still the HSV round trip; RGB images take the RGB conversions
    np.testing.assert_array_equal(
        distort_colors(img), cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2HSV), cv2.COLOR_HSV2BGR)
    )
    rgb = distort_colors(img[..., ::-1], hue=5, image_format="RGB")
    np.testing.assert_array_equal(rgb[..., ::-1], distort_colors(img, hue=5))


def test_color_distort_augmentation():
    img = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.random.seed(3)
    outs = [RetinaFaceColorDistort().get_transform(img).apply_image(img) for _ in range(20)]
    assert all(o.dtype == np.uint8 and o.shape == img.shape for o in outs)
    assert len({o.tobytes() for o in outs}) > 10
    with pytest.raises(ValueError, match="uint8"):
        distort_colors(img.astype(np.float32))


def test_pad_and_resize():
    img = np.full((30, 50, 3), 7, np.uint8)
    t = PadToSquare((104, 117, 123.4)).get_transform(img)
    out = t.apply_image(img)
    assert out.shape == (50, 50, 3) and out.dtype == np.uint8
    assert (out[:30] == 7).all() and (out[30:] == [104, 117, 123]).all()
    np.testing.assert_array_equal(t.apply_coords(np.array([[3.5, 4.0]])), [[3.5, 4.0]])
    assert isinstance(PadToSquare((0, 0, 0)).get_transform(out), T.NoOpTransform)
    img = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    for interp in INTERPOLATIONS:
        r = CV2ResizeTransform(40, 40, 16, 16, interp)
        np.testing.assert_array_equal(
            r.apply_image(img), cv2.resize(img, (16, 16), interpolation=interp)
        )
        np.testing.assert_array_equal(r.apply_coords(np.array([[10.0, 20.0]])), [[4.0, 8.0]])
    np.random.seed(0)
    drawn = {RandomInterpolationResize(16).get_transform(img).interp for _ in range(50)}
    assert drawn == set(INTERPOLATIONS)


def test_transform_faces_crop_flip_resize_exact():
    boxes = np.array([[20, 20, 30, 30], [5, 22, 25, 40], [0, 0, 8, 8], [30, 11, 30, 20]], float)
    landmarks = np.zeros((4, 5, 2))
    landmarks[0] = [[22, 23], [28, 23], [25, 26], [22.5, 28], [27.5, 28]]
    landmarks[1] = [[9, 25], [20, 25], [15, 30], [3, 35], [21, 50]]  # partly outside the crop
    crop = T.CropTransform(10, 10, 30, 30, 60, 60)
    tfms = T.TransformList([crop, T.HFlipTransform(30), T.ResizeTransform(30, 30, 60, 60)])
    keep, out_boxes, out_lm = transform_faces(tfms, boxes, landmarks)
    # face 2 has its centre outside the crop, face 3 is zero-width (dropped, not NaN)
    assert keep.tolist() == [True, True, False, False]
    # crop: -10, clip to [0, 30]; flip: 30 - x; resize: x 2
    np.testing.assert_array_equal(out_boxes[0], [20, 20, 40, 40])
    np.testing.assert_array_equal(out_boxes[1], [30, 24, 60, 60])  # clipped at the crop's x0
    np.testing.assert_array_equal(
        out_lm[0], 2 * (np.array([30, 0]) + [-1, 1] * (landmarks[0] - 10))
    )
    # landmarks leaving the crop are clamped into it (the original), then transformed
    np.testing.assert_array_equal(out_lm[1], [[60, 30], [40, 30], [50, 40], [60, 50], [38, 60]])


def _write_image(tmp_path, shape, name="a.png"):
    path = str(tmp_path / name)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def _face(xywh, landmarks=None):
    kps = np.zeros((5, 3))
    if landmarks is not None:
        kps[:, :2], kps[:, 2] = landmarks, 2
    return {
        "bbox": list(xywh),
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": 0,
        "iscrowd": 0,
        "keypoints": kps.reshape(-1).tolist(),
    }


def test_mapper_mirror_swaps_landmarks_exactly(tmp_path):
    path = _write_image(tmp_path, (40, 40, 3))
    lm = np.array([[12.25, 10], [20.5, 10], [16, 14], [13, 18.75], [19, 18]])
    mapper = RetinaFaceMapper(
        augmentations=[T.RandomFlip(prob=1.0), RandomInterpolationResize(40)],
        image_format="BGR",
    )
    faces = [_face([10, 5, 12, 16], lm), _face([30, 30, 5, 5])]
    out = mapper({"file_name": path, "height": 40, "width": 40, "annotations": faces})
    inst = out["instances"]
    torch.testing.assert_close(
        inst.gt_boxes.tensor, torch.tensor([[18.0, 5, 30, 21], [5, 30, 10, 35]])
    )
    flipped = np.stack([40 - lm[:, 0], lm[:, 1], np.full(5, 2.0)], 1)[[1, 0, 2, 4, 3]]
    np.testing.assert_array_equal(inst.gt_keypoints.tensor[0].numpy(), flipped)
    assert (inst.gt_keypoints.tensor[1] == 0).all()  # no landmarks: v = 0, x = y = 0
    image = Image.open(path).convert("RGB")
    np.testing.assert_array_equal(
        out["image"].numpy(), np.asarray(image)[:, ::-1, ::-1].transpose(2, 0, 1)
    )


def _cfg(size=64):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.INPUT.DATASET_MAPPER_NAME = "RetinaFaceMapper"
    cfg.INPUT.RETINAFACE.TRAIN_SIZE = size
    cfg.MODEL.PIXEL_MEAN = [104.0, 117.0, 123.0]
    return cfg


def test_mapper_outputs(tmp_path):
    mapper = build_train_mapper(_cfg(64))
    assert isinstance(mapper, RetinaFaceMapper)
    np.testing.assert_array_equal(mapper.keypoint_hflip_indices, [1, 0, 2, 4, 3])
    path = _write_image(tmp_path, (90, 120, 3))
    lm = np.array([[30, 30], [40, 30], [35, 35], [31, 40], [39, 40]], float)
    faces = [
        _face([25, 22, 20, 24], lm),
        _face([-5, 60, 20, 20], lm + [-28, 35]),  # partly outside the image
        _face([100, 10, 2, 3]),  # tiny
        _face([70, 70, 0, 10]),  # zero width: never reaches the model
    ]
    record = {"file_name": path, "height": 90, "width": 120, "image_id": "a", "annotations": faces}
    np.random.seed(0)
    for _ in range(30):
        out = mapper(record)
        assert out["image"].shape == (3, 64, 64) and out["image"].dtype == torch.uint8
        inst = out["instances"]
        assert isinstance(inst, Instances) and inst.image_size == (64, 64)
        assert isinstance(inst.gt_boxes, Boxes) and isinstance(inst.gt_keypoints, Keypoints)
        assert inst.gt_keypoints.tensor.shape == (len(inst), 5, 3)
        assert inst.gt_classes.dtype == torch.int64 and (inst.gt_classes == 0).all()
        assert 1 <= len(inst) <= 3 and "annotations" not in out
        b = inst.gt_boxes.tensor
        assert ((b[:, 2:] - b[:, :2]) > 0).all()  # no zero-area box: no log(0) target
        v = inst.gt_keypoints.tensor[..., 2]
        assert set(v.unique().tolist()) <= {0.0, 2.0}
    assert record["annotations"] is faces and len(faces) == 4  # the input is not modified


def test_mapper_empty_and_grayscale_images(tmp_path):
    mapper = build_train_mapper(_cfg(32))
    gray = _write_image(tmp_path, (50, 70), "gray.png")
    for shape, path in (((50, 70), gray), ((40, 30, 3), _write_image(tmp_path, (40, 30, 3)))):
        out = mapper({"file_name": path, "height": shape[0], "width": shape[1], "annotations": []})
        assert out["image"].shape == (3, 32, 32)
        inst = out["instances"]
        assert len(inst) == 0 and inst.gt_boxes.tensor.shape == (0, 4)
        assert inst.gt_keypoints.tensor.shape == (0, 5, 3) and inst.gt_classes.dtype == torch.int64
    # the grayscale face image maps as 3 equal channels
    out = mapper(
        {"file_name": gray, "height": 50, "width": 70,
         "annotations": [_face([10, 10, 20, 20])]}
    )  # fmt: skip
    img = out["image"]
    assert len(out["instances"]) == 1 and (img[0] == img[1]).all() and (img[1] == img[2]).all()


def test_mapper_test_time_is_d2s(tmp_path):
    cfg = _cfg(32)
    mapper = RetinaFaceMapper(cfg, is_train=False)
    path = _write_image(tmp_path, (40, 60, 3))
    out = mapper(
        {"file_name": path, "height": 40, "width": 60, "annotations": [_face([1, 2, 3, 4])]}
    )
    assert "instances" not in out and out["image"].shape[0] == 3
