"""d2ext.data.transforms: SSD's photometric distortion, zoom-out and IoU-constrained crop as D2
augmentations, each on its own (the YOLACT mapper's use of them: test_yolact_mapper.py)."""

import numpy as np
from detectron2.data import transforms as T

from d2ext.data.transforms import Expand, PhotometricDistort, RandomSampleCrop, centers_inside


def test_ssd_augmentation_parts():
    rng_img = np.random.default_rng(0).integers(0, 255, size=(50, 80, 3)).astype(np.uint8)
    # zoom-out: the canvas is filled with the per-channel mean, the image copied at the offset
    np.random.seed(3)  # an offset inside the canvas on both axes: canvas on every side
    t = Expand(fill=[1.0, 2.0, 3.0], prob=1.0).get_transform(rng_img)
    out = t.apply_image(rng_img)
    assert out.shape[0] >= 50 and out.shape[1] >= 80 and out.dtype == np.float32
    assert t.y0 > 0 and t.x0 > 0 and out.shape[0] > t.y0 + 50 and out.shape[1] > t.x0 + 80
    assert np.array_equal(out[t.y0 : t.y0 + 50, t.x0 : t.x0 + 80], rng_img)
    canvas = np.ones(out.shape[:2], dtype=bool)
    canvas[t.y0 : t.y0 + 50, t.x0 : t.x0 + 80] = False
    assert (out[canvas] == [1.0, 2.0, 3.0]).all()
    np.testing.assert_allclose(
        t.apply_box(np.array([[0.0, 0.0, 10.0, 10.0]])), [[t.x0, t.y0, t.x0 + 10, t.y0 + 10]]
    )
    # crop: with boxes it keeps at least one object centre; without boxes it does nothing
    boxes = np.array([[5.0, 5.0, 30.0, 25.0], [40.0, 10.0, 75.0, 45.0]])
    crops = 0
    for seed in range(30):
        np.random.seed(seed)
        t = RandomSampleCrop().get_transform(rng_img, boxes)
        if isinstance(t, T.CropTransform):
            crops += 1
            assert t.w >= 0.3 * 80 - 1 and t.h >= 0.3 * 50 - 1 and 0.5 <= t.h / t.w <= 2.0 + 1e-6
            assert centers_inside(t.apply_box(boxes), t.h, t.w).any()
    assert crops > 0
    assert isinstance(RandomSampleCrop().get_transform(rng_img, np.zeros((0, 4))), T.NoOpTransform)
    # photometric: float32 output of the same shape; with no step drawn it is a no-op
    np.random.seed(3)
    ts = [PhotometricDistort().get_transform(rng_img) for _ in range(20)]
    changed = [t for t in ts if not isinstance(t, T.NoOpTransform)]
    assert changed and all(t.apply_image(rng_img).shape == rng_img.shape for t in changed)
    hsv_only = PhotometricDistort(
        brightness_delta=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue_delta=0.0
    )
    for _ in range(10):  # identity parameters: the HSV round trip keeps the pixels
        t = hsv_only.get_transform(rng_img)
        np.testing.assert_allclose(
            np.asarray(t.apply_image(rng_img), np.float32), rng_img, atol=0.05
        )
