"""Synthetic DensePose figures (``d2ext.data.synthetic.densepose_figures``): determinism, the
DensePose-COCO keys against the drawn parts, the analytic charts, mirror consistency with the
builtin symmetry table, and the ``synth_densepose_*`` builtins."""

import dataclasses
import time

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

import d2ext.data.synthetic  # noqa: F401  (registers the builtins)
from d2ext.data.densepose_coco import annotation_to_densepose_data
from d2ext.data.densepose_flip import POINT_LABEL_SYMMETRIES, flip_iuv, synthetic_uv_symmetry
from d2ext.data.synthetic.densepose_figures import (
    FINE_TO_COARSE,
    Figure,
    figure_labels,
    render_densepose_image,
    sample_figure,
    scene_labels,
)

H = W = 192


@pytest.fixture(scope="module")
def images():
    return [render_densepose_image(0, i, H, W) for i in range(12)]


def test_deterministic(images):
    img, anns = render_densepose_image(0, 3, H, W)
    assert np.array_equal(img, images[3][0]) and anns == images[3][1]
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    assert not np.array_equal(render_densepose_image(1, 3, H, W)[0], img)


def test_annotations_are_densepose_coco(images):
    n_people = n_dp = 0
    for _, anns in images:
        for a in anns:
            n_people += 1
            x0, y0, w, h = a["bbox"]
            assert 0 <= x0 and x0 + w <= W and 0 <= y0 and y0 + h <= H and a["area"] > 0
            assert a["segmentation"] and a["category_id"] == 1 and a["iscrowd"] == 0
            if "dp_x" not in a:
                assert a["area"] < 120
                continue
            n_dp += 1
            d = annotation_to_densepose_data(a)
            assert 90 <= len(d.x) <= 100
            assert d.x.min() >= 0 and d.x.max() < 256 and d.y.min() >= 0 and d.y.max() < 256
            assert d.i.min() >= 1 and d.i.max() <= 24
            assert d.u.min() >= 0 and d.u.max() <= 1 and d.v.min() >= 0 and d.v.max() <= 1
            # the coarse map agrees with the points' parts (up to cell sampling at borders)
            coarse = d.segm[d.y.long(), d.x.long()].numpy()
            assert (coarse == FINE_TO_COARSE[d.i.numpy()]).mean() > 0.85
    assert n_people >= 20 and n_dp >= 15


def test_points_carry_the_exact_labels_of_their_position():
    rng = np.random.default_rng(5)
    figures = [sample_figure(rng, H, W) for _ in range(3)]
    x, y = rng.uniform(0, W, 5000), rng.uniform(0, H, 5000)
    who, part, u, v = scene_labels(figures, x, y)
    assert (who > 0).any()
    top = figure_labels(figures[-1], x, y)[0] > 0
    assert (who[top] == 3).all()  # the last figure is in front


def test_capsule_and_head_charts():
    fig = Figure(
        capsules=np.array([[50.0, 20.0, 50.0, 60.0, 8.0]]),  # a vertical limb, proximal on top
        parts=np.array([17]),
        head=(150.0, 50.0, 10.0, 0.0, -1.0),
        facing=1,
        palette=np.zeros((25, 3), np.uint8),
    )
    x = np.array([50.0, 50.0, 54.0, 46.0, 150.0, 155.0, 145.0, 150.0])
    y = np.array([20.0, 60.0, 40.0, 40.0, 50.0, 50.0, 50.0, 40.0])
    part, u, v = figure_labels(fig, x, y)
    assert part.tolist() == [17, 17, 17, 17, 23, 24, 23, 23]
    np.testing.assert_allclose(u, [0, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 1.0])
    # limb: V = 0.5 + 0.5 * cross(d, p - a) / r with d = (0, 1): 4 px to the image right -> 0.25
    # head (up = (0, -1)): image right is the person's left (24) for a figure facing the camera
    np.testing.assert_allclose(v, [0.5, 0.5, 0.25, 0.75, 1.0, 0.5, 0.5, 1.0])


def _mirror(fig: Figure) -> Figure:
    caps = fig.capsules.copy()
    caps[:, [0, 2]] = W - caps[:, [0, 2]]
    cx, cy, r, ux, uy = fig.head
    sym = np.asarray(POINT_LABEL_SYMMETRIES)
    return dataclasses.replace(
        fig, capsules=caps, parts=sym[fig.parts], head=(W - cx, cy, r, -ux, uy)
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mirror_image_is_the_symmetry_table(seed):
    """Mirroring a figure maps each part to DensePose's mirror part with U kept and V reversed:
    the builtin table reproduces it up to the original's 1/255 quantisation."""
    fig = sample_figure(np.random.default_rng(seed), H, W)
    rng = np.random.default_rng(100 + seed)
    x, y = rng.uniform(0, W, 20000), rng.uniform(0, H, 20000)
    part, u, v = figure_labels(fig, x, y)
    part_m, u_m, v_m = figure_labels(_mirror(fig), W - x, y)
    on = part > 0
    assert on.sum() > 100
    sym = np.asarray(POINT_LABEL_SYMMETRIES)
    assert np.array_equal(part_m, sym[part])
    np.testing.assert_allclose(u_m[on], u[on], atol=1e-9)
    np.testing.assert_allclose(v_m[on], 1 - v[on], atol=1e-9)
    i2, u2, v2 = flip_iuv(
        torch.from_numpy(part[on]),
        torch.from_numpy(u[on]),
        torch.from_numpy(v[on]),
        synthetic_uv_symmetry(),
    )
    assert np.array_equal(i2.numpy(), part_m[on])
    assert np.abs(u2.numpy() - u_m[on]).max() <= 1 / 255 + 1e-6
    assert np.abs(v2.numpy() - v_m[on]).max() <= 1 / 255 + 1e-6


def test_builtin_datasets():
    name = "synth_densepose_mini_val"
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "densepose" and meta.thing_classes == ["person"]
    start = time.perf_counter()
    dicts = DatasetCatalog.get(name)
    assert time.perf_counter() - start < 30
    assert len(dicts) == 8 and dicts[0]["file_name"].endswith(".png") and dicts[0]["height"] == H
    anns = [a for d in dicts for a in d["annotations"]]
    assert all(a["category_id"] == 0 for a in anns)
    assert any("dp_x" in a for a in anns)
    assert "synth_densepose_train" in DatasetCatalog.list()
