"""d2ext.data.mappers.TopDownLandmarkMapper: the affine crop in D2 continuous coordinates (pixel
exact where the warp is), flips that swap symmetric points, test-time boxes, and bad inputs
(points outside the crop, a 1x1 box, grayscale files, malformed boxes)."""

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image

from d2ext import add_d2ext_config
from d2ext.data import build_train_mapper
from d2ext.data.mappers import (
    AffineCropTransform,
    RandomLandmarkCrop,
    TopDownLandmarkMapper,
    crop_affine,
)
from d2ext.engine import Trainer

NAMES = ("left_eye", "right_eye", "nose")
FLIP = [1, 0, 2]  # D2's create_keypoint_hflip_indices for the flip map below


def _ann(box, keypoints, mode=BoxMode.XYXY_ABS, **extra):
    return {
        "bbox": list(box),
        "bbox_mode": mode,
        "category_id": 0,
        "iscrowd": 0,
        "keypoints": [float(v) for v in np.asarray(keypoints).ravel()],
        **extra,
    }


def _image(tmp_path, array, name="img.png"):
    path = str(tmp_path / name)
    Image.fromarray(array).save(path)
    return path


def _dict(path, shape, annotations=None):
    d = {"file_name": path, "height": shape[0], "width": shape[1], "image_id": 7}
    if annotations is not None:
        d["annotations"] = annotations
    return d


def _mapper(crop=(32, 32), flip=False, is_train=True, image_format="BGR", **jitter):
    augs = [RandomLandmarkCrop(crop, **jitter)]
    if flip:
        augs.append(T.RandomFlip(prob=1.0, horizontal=True))
    return TopDownLandmarkMapper(
        is_train,
        augmentations=augs,
        image_format=image_format,
        keypoint_hflip_indices=FLIP if flip else None,
    )


def _to_image(crop_to_image, xy):
    """(2, 3) affine applied to (K, 2) points."""
    return xy @ crop_to_image[:, :2].T + crop_to_image[:, 2]


@pytest.mark.parametrize("rotation", [0.0, 90.0, 180.0])
def test_bright_pixel_lands_where_its_keypoint_maps(rotation):
    """Scale 1 and a multiple of 90 degrees map pixel centres onto pixel centres, so the warp is
    a permutation of pixels: the one bright pixel must be exactly where the keypoint at its
    centre (j + 0.5, i + 0.5) maps, in the crop's D2 coordinates."""
    image = np.zeros((40, 50), np.uint8)
    image[13, 21] = 255
    # centre (20, 24), side 32 / padding 1 = the 32 px crop: scale 1
    matrix = crop_affine([4, 8, 36, 40], (32, 32), padding=1.0, rotation=rotation)
    transform = AffineCropTransform(matrix, 32, 32)
    crop = transform.apply_image(image)
    u, v = transform.apply_coords(np.array([[21.5, 13.5]]))[0]
    assert (u - 0.5, v - 0.5) == pytest.approx((round(u - 0.5), round(v - 0.5)), abs=1e-9)
    assert crop[round(v - 0.5), round(u - 0.5)] == 255
    assert crop.sum() == 255


def test_blob_centre_follows_its_keypoint_under_any_affine():
    """A smooth blob at a sub-pixel point, scaled 1.7x, rotated 37 degrees and shifted: the
    intensity centroid of the crop (in D2 coordinates, pixel centres at +0.5) is where the
    point maps. A half-pixel convention error would be off by >= 0.5 px."""
    h, w = 80, 100
    point = np.array([47.3, 38.8])
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    image = np.exp(-((xs - point[0]) ** 2 + (ys - point[1]) ** 2) / (2 * 2.5**2))
    matrix = crop_affine(
        [30, 20, 70, 60], (48, 48), padding=1.25, scale=0.6, rotation=37.0, shift=(0.05, -0.03)
    )
    transform = AffineCropTransform(matrix, 48, 48)
    crop = transform.apply_image(image.astype(np.float32)).astype(np.float64)
    cy, cx = np.mgrid[0:48, 0:48] + 0.5
    centroid = np.array([(crop * cx).sum(), (crop * cy).sum()]) / crop.sum()
    mapped = transform.apply_coords(point[None])[0]
    assert np.abs(centroid - mapped).max() < 0.02, (centroid, mapped)


def test_keypoints_crop_and_back_exactly(tmp_path):
    """gt_keypoints are the crop transform of the image keypoints, and crop_to_image takes them
    back to the image (float32 exact up to rounding), with random scale, rotation and shift."""
    path = _image(tmp_path, np.random.RandomState(0).randint(0, 255, (60, 80, 3), np.uint8))
    kps = np.array([[20.3, 25.1, 2], [31.7, 26.0, 2], [26.2, 35.9, 1]])
    d = _dict(path, (60, 80), [_ann([15, 18, 38, 42], kps), _ann([50, 5, 70, 30], kps + 30)])
    np.random.seed(0)
    out = _mapper(scale_range=(0.7, 1.3), rotation=30.0, shift=0.1)(d)
    assert out["crops"].shape == (2, 3, 32, 32) and out["crops"].dtype == torch.uint8
    assert out["crop_to_image"].shape == (2, 2, 3)
    torch.testing.assert_close(
        out["boxes"], torch.tensor([[15.0, 18.0, 38.0, 42.0], [50.0, 5.0, 70.0, 30.0]])
    )
    gt = out["gt_keypoints"].numpy()
    assert gt.shape == (2, 3, 3)
    back = _to_image(out["crop_to_image"][0].numpy(), gt[0, :, :2])
    np.testing.assert_allclose(back, kps[:, :2], atol=1e-4)
    np.testing.assert_array_equal(gt[0, :, 2], [2, 2, 1])
    assert (out["height"], out["width"], out["image_id"]) == (60, 80, 7)
    assert "annotations" not in out


def test_flip_swaps_the_pairs_and_mirrors(tmp_path):
    path = _image(tmp_path, np.random.RandomState(1).randint(0, 255, (60, 80, 3), np.uint8))
    kps = np.array([[20.3, 25.1, 2], [31.7, 26.0, 2], [26.2, 35.9, 1]])
    d = _dict(path, (60, 80), [_ann([15, 18, 38, 42], kps)])
    plain, flipped = _mapper(flip=False)(d), _mapper(flip=True)(d)
    assert torch.equal(flipped["crops"], plain["crops"].flip(-1))
    a, b = plain["gt_keypoints"][0], flipped["gt_keypoints"][0]
    for k, j in enumerate(FLIP):
        assert b[k, 0] == pytest.approx(32 - a[j, 0].item(), abs=1e-5)  # x -> w - x
        assert b[k, 1:].tolist() == pytest.approx(a[j, 1:].tolist(), abs=1e-5)
    # the flipped crop's points go back to the image points of their mirrored names
    back = _to_image(flipped["crop_to_image"][0].numpy(), b[:, :2].numpy())
    np.testing.assert_allclose(back, kps[FLIP, :2], atol=1e-4)


def test_points_outside_the_crop_are_unlabelled(tmp_path):
    path = _image(tmp_path, np.zeros((60, 80, 3), np.uint8))
    kps = np.array([[20.0, 25.0, 2], [75.0, 55.0, 2], [-3.0, 10.0, 1]])  # 2 far outside the box
    out = _mapper()(_dict(path, (60, 80), [_ann([15, 18, 30, 32], kps)]))
    gt = out["gt_keypoints"][0]
    assert gt[0, 2] == 2 and gt[1:].abs().sum() == 0  # v = 0 and, D2's convention, x = y = 0


def test_one_pixel_box_gives_a_valid_crop(tmp_path):
    image = np.zeros((20, 20, 3), np.uint8)
    image[10, 10] = 200
    path = _image(tmp_path, image)
    box = [10.0, 10.0, 11.0, 11.0]
    out = _mapper()(_dict(path, (20, 20), [_ann(box, [[10.5, 10.5, 2]] * 3)]))
    gt = out["gt_keypoints"][0]
    assert torch.isfinite(out["crop_to_image"]).all()
    # the pixel fills the crop's middle (1.25 px across 32: 25.6 crop px per image px)
    assert gt[:, :2].tolist() == [[16.0, 16.0]] * 3 and (gt[:, 2] == 2).all()
    # crop pixels 15 and 16 sample within 1/51 px of the bright pixel's centre (bilinear)
    assert (out["crops"][0, :, 15:17, 15:17] >= 180).all()
    assert (out["crops"][0, :, 0, 0] < 50).all()  # 0.6 px from its centre: mostly dark
    # a zero-size box is widened to 1 px instead of a singular warp
    out = _mapper()(_dict(path, (20, 20), [_ann([10.5, 10.5, 10.5, 10.5], [[10.5, 10.5, 2]] * 3)]))
    assert torch.isfinite(out["crop_to_image"]).all() and out["crops"].shape == (1, 3, 32, 32)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_grayscale_files_are_read_in_the_input_format(tmp_path, suffix):
    gray = np.tile(np.arange(0, 240, 6, dtype=np.uint8), (30, 1))  # (30, 40)
    path = _image(tmp_path, gray, "gray" + suffix)
    assert Image.open(path).mode == "L"
    d = _dict(path, (30, 40), [_ann([5, 5, 25, 25], [[10, 10, 2]] * 3)])
    bgr = _mapper(is_train=False)(d)["crops"]
    assert bgr.shape == (1, 3, 32, 32)
    assert torch.equal(bgr[:, 0], bgr[:, 1]) and torch.equal(bgr[:, 1], bgr[:, 2])
    assert bgr.float().std() > 10  # the gradient survives
    single = _mapper(is_train=False, image_format="L")(d)["crops"]
    assert single.shape == (1, 1, 32, 32)


def test_test_mode_boxes(tmp_path):
    path = _image(tmp_path, np.zeros((30, 40, 3), np.uint8))
    mapper = _mapper(is_train=False)
    # no annotations: the whole image as one box
    whole = mapper(_dict(path, (30, 40)))
    assert whole["boxes"].tolist() == [[0.0, 0.0, 40.0, 30.0]] and "gt_keypoints" not in whole
    np.testing.assert_allclose(
        _to_image(whole["crop_to_image"][0].numpy(), np.array([[16.0, 16.0]])), [[20.0, 15.0]]
    )
    # an empty annotation list: no instance
    empty = mapper(_dict(path, (30, 40), []))
    assert empty["crops"].shape == (0, 3, 32, 32) and empty["crop_to_image"].shape == (0, 2, 3)
    # annotation boxes in their order (XYWH converted), crowd ones dropped
    anns = [
        _ann([5, 6, 10, 8], [[7, 8, 2]] * 3, mode=BoxMode.XYWH_ABS),
        _ann([0, 0, 40, 30], [[7, 8, 2]] * 3, iscrowd=1),
        _ann([20, 2, 30, 12], [[25, 7, 2]] * 3),
    ]
    out = mapper(_dict(path, (30, 40), anns))
    assert out["boxes"].tolist() == [[5.0, 6.0, 15.0, 14.0], [20.0, 2.0, 30.0, 12.0]]
    assert out["gt_keypoints"].shape == (2, 3, 3)


def test_test_mode_has_no_jitter(tmp_path):
    path = _image(tmp_path, np.random.RandomState(2).randint(0, 255, (60, 80, 3), np.uint8))
    cfg = _cfg()
    mapper = TopDownLandmarkMapper(cfg, is_train=False)
    d = _dict(path, (60, 80), [_ann([15, 18, 38, 42], [[20, 25, 2]] * 3)])
    runs = [mapper(d) for _ in range(3)]
    assert all(torch.equal(r["crops"], runs[0]["crops"]) for r in runs)
    assert isinstance(Trainer.build_test_mapper(cfg).mapper, TopDownLandmarkMapper)


def test_bad_records_name_the_file(tmp_path):
    path = _image(tmp_path, np.zeros((30, 40, 3), np.uint8))
    bad_box = _dict(path, (30, 40), [_ann([10, 10, 5, float("nan")], [[7, 8, 2]] * 3)])
    with pytest.raises(ValueError, match=r"img\.png: annotation 0 has a malformed bbox"):
        _mapper()(bad_box)
    no_kps = _dict(path, (30, 40), [{**_ann([5, 5, 9, 9], []), "keypoints": None}])
    del no_kps["annotations"][0]["keypoints"]
    with pytest.raises(ValueError, match=r"img\.png: an annotation has no 'keypoints'"):
        _mapper()(no_kps)
    with pytest.raises(ValueError, match="first augmentation must be a RandomLandmarkCrop"):
        TopDownLandmarkMapper(True, augmentations=[T.RandomFlip()], image_format="BGR")
    with pytest.raises(ValueError, match="scale_range"):
        RandomLandmarkCrop((32, 32), scale_range=(1.2, 0.8))


def _cfg(dataset="test_landmark_mapper_meta", flip_map=(("left_eye", "right_eye"),)):
    if dataset not in DatasetCatalog.list():
        DatasetCatalog.register(dataset, lambda: [])
        meta = MetadataCatalog.get(dataset)
        meta.set(thing_classes=["face"], keypoint_names=NAMES)
        if flip_map is not None:
            meta.set(keypoint_flip_map=flip_map)
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.INPUT.DATASET_MAPPER_NAME = "TopDownLandmarkMapper"
    cfg.INPUT.LANDMARK.CROP_SIZE = (32, 48)
    cfg.DATASETS.TRAIN = (dataset,)
    return cfg


def test_from_config(tmp_path):
    cfg = _cfg()
    mapper = build_train_mapper(cfg)
    assert isinstance(mapper, TopDownLandmarkMapper) and mapper.keypoint_hflip_indices == FLIP
    crop, flip = mapper.augmentations.augs
    assert crop.crop_size == (32, 48) and crop.box_padding == 1.25
    assert (crop.scale_range, crop.rotation, crop.shift) == ((0.75, 1.25), 30.0, 0.0)
    assert isinstance(flip, T.RandomFlip) and flip.prob == 0.5
    test = TopDownLandmarkMapper(cfg, is_train=False)
    assert len(test.augmentations.augs) == 1
    assert (test.augmentations.augs[0].scale_range, test.augmentations.augs[0].rotation) == (
        (1.0, 1.0),
        0.0,
    )
    # crops of (h, w) = (32, 48): a square box becomes 1.5x wider than tall, then padded
    path = _image(tmp_path, np.zeros((60, 80, 3), np.uint8))
    out = test(_dict(path, (60, 80), [_ann([20, 20, 40, 40], [[30, 30, 2]] * 3)]))
    assert out["crops"].shape == (1, 3, 32, 48)
    corners = _to_image(out["crop_to_image"][0].numpy(), np.array([[0.0, 0.0], [48.0, 32.0]]))
    np.testing.assert_allclose(corners, [[30 - 18.75, 30 - 12.5], [30 + 18.75, 30 + 12.5]])


def test_flip_needs_flip_metadata():
    cfg = _cfg("test_landmark_mapper_no_flip_meta", flip_map=None)
    with pytest.raises(ValueError, match="INPUT.LANDMARK.FLIP_PROB.*keypoint_flip_map"):
        build_train_mapper(cfg)
    cfg.INPUT.LANDMARK.FLIP_PROB = 0.0
    assert build_train_mapper(cfg).keypoint_hflip_indices is None


def test_random_crop_samples_within_its_ranges():
    aug = RandomLandmarkCrop((32, 32), scale_range=(0.5, 2.0), rotation=20.0, shift=0.1)
    image, box = np.zeros((50, 50, 3), np.uint8), np.array([[10.0, 10.0, 30.0, 30.0]])
    np.random.seed(0)
    scales, angles = [], []
    for _ in range(200):
        m = aug.get_transform(image, box).matrix
        s = np.hypot(*m[0, :2])  # crop px per image px: 32 / (25 * scale)
        scales.append(32 / (25 * s))
        angles.append(np.degrees(np.arctan2(m[0, 1], m[0, 0])))
    assert 0.5 <= min(scales) < 0.6 and 1.9 < max(scales) <= 2.0
    assert -20 <= min(angles) < -18 and 18 < max(angles) <= 20


def test_cv2_keeps_single_channel_axis():
    t = AffineCropTransform(crop_affine([0, 0, 8, 8], (16, 16)), 16, 16)
    assert t.apply_image(np.zeros((8, 8, 1), np.uint8)).shape == (16, 16, 1)
    assert t.apply_segmentation(np.zeros((8, 8), np.uint8)).shape == (16, 16)
