"""encode_masks against pycocotools' per-mask encoding (D2's instances_to_coco_json), on the
compiled run-length op and on its numpy reference (the ``eval_ops_route`` fixture)."""

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from d2ext.evaluation.rle import encode_masks


@pytest.fixture(autouse=True)
def _both_routes(eval_ops_route):
    """Every test runs on the compiled run-length op and on the numpy reference."""
    return eval_ops_route


def _reference(masks: np.ndarray):
    """D2's per-mask encoding (instances_to_coco_json)."""
    return [mask_util.encode(np.array(m[:, :, None], order="F", dtype="uint8"))[0] for m in masks]


@pytest.mark.parametrize("seed", range(4))
def test_random_masks_match_pycocotools(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        n, h, w = int(rng.integers(1, 5)), int(rng.integers(1, 23)), int(rng.integers(1, 23))
        p = rng.random()
        masks = rng.random((n, h, w)) < p
        if rng.random() < 0.3:  # long vertical runs crossing column breaks
            masks[:] = rng.random((n, 1, w)) < p
        assert encode_masks(torch.from_numpy(masks)) == _reference(masks), (n, h, w)


def test_blobs_at_image_size_and_edge_cases():
    h, w = 60, 83  # width not a multiple of 8
    yy, xx = np.ogrid[:h, :w]
    masks = np.stack(
        [
            (yy - 30) ** 2 + (xx - 40) ** 2 < 400,
            np.zeros((h, w), bool),  # empty mask
            np.ones((h, w), bool),  # full mask
            (xx == w - 1) | (yy == 0),  # last column and first row
            (xx < 8) & (yy > h - 3),
        ]
    )
    masks[4, 0, 0] = True  # starts with a 1: empty leading run
    assert encode_masks(torch.from_numpy(masks)) == _reference(masks)
    assert encode_masks(masks) == _reference(masks)  # numpy input


def test_dtypes_follow_d2_uint8_cast():
    rng = np.random.default_rng(0)
    probs = rng.random((3, 9, 16)).astype(np.float32) * 2  # D2 casts to uint8: 0.x -> 0, 1.x -> 1
    expect = _reference(probs.astype(np.uint8))
    assert encode_masks(torch.from_numpy(probs)) == expect
    assert encode_masks(torch.from_numpy(probs.astype(np.uint8) * 3)) == _reference(
        probs.astype(np.uint8)
    )


def test_empty_inputs():
    assert encode_masks(torch.zeros((0, 10, 12), dtype=torch.bool)) == []
    assert encode_masks(np.zeros((2, 0, 5), bool)) == _reference(np.zeros((2, 0, 5), bool))
    with pytest.raises(ValueError, match="N, H, W"):
        encode_masks(torch.zeros((10, 12), dtype=torch.bool))


def test_strided_and_flipped_inputs():
    rng = np.random.default_rng(7)
    masks = rng.random((4, 33, 47)) < 0.3
    flipped = masks[:, ::-1, ::2]  # negative and non-unit strides
    assert encode_masks(flipped) == _reference(np.ascontiguousarray(flipped))
    t = torch.from_numpy(masks).permute(0, 2, 1)  # a transposed view
    assert encode_masks(t) == _reference(np.ascontiguousarray(masks.transpose(0, 2, 1)))
