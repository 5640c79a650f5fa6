""":func:`d2ext.layers.paste_masks` as a drop-in for D2's ``paste_masks_in_image``: the cases of
D2's tests/layers/test_mask_ops.py (``test_paste_mask_scriptable``, the bool masks of
``test_crop_paste_consistency``), tracing, and the documented empty-output dtype."""

import numpy as np
import pytest
import torch
from detectron2.layers.mask_ops import paste_masks_in_image
from detectron2.structures import BitMasks, Boxes, PolygonMasks, polygons_to_bitmask
from detectron2.utils.testing import random_boxes
from test_mask_ops import assert_same_but_ties, paste_inputs, paste_values

from d2ext.layers import paste_masks
from d2ext.layers.mask_ops import paste_mask_values


def test_paste_masks_scriptable():
    """D2's ``test_paste_mask_scriptable`` with our function: scripted equals eager and D2."""
    scripted = torch.jit.script(paste_masks)
    torch.manual_seed(0)
    masks = torch.rand(10, 28, 28)
    boxes = Boxes(random_boxes(10, 100)).tensor
    out = paste_masks(masks, boxes, (150, 150))
    assert torch.equal(scripted(masks, boxes, (150, 150)), out)
    assert torch.equal(
        scripted(masks, boxes, (150, 150)), paste_masks_in_image(masks, boxes, (150, 150))
    )
    # the scripted function keeps the eager checks and behaviour
    assert scripted(masks[:0], boxes[:0], (20, 30)).shape == (0, 20, 30)
    outside = boxes.clone()
    outside[3] += 1000  # D2 fails on such a box; ours gives an empty mask, scripted too
    ref = scripted(masks, outside, (150, 150))
    assert torch.equal(ref, paste_masks(masks, outside, (150, 150))) and not ref[3].any()
    bad = boxes.clone()
    bad[2, 0] = float("nan")
    with pytest.raises(Exception, match=r"boxes must be finite; rows \[2\]"):
        scripted(masks, bad, (150, 150))
    with pytest.raises(Exception, match="threshold"):
        scripted(masks, boxes, (150, 150), -1.0)


def test_paste_masks_traced_keeps_dynamic_shapes():
    """Traced (``script_if_tracing``), the paste follows the number of masks and the boxes of
    each call, as D2's does."""
    masks, boxes = paste_inputs(3, img_hw=(40, 50), seed=1)
    traced = torch.jit.trace(lambda m, b: paste_masks(m, b, (40, 50)), (masks, boxes))
    masks, boxes = paste_inputs(7, img_hw=(40, 50), seed=2)
    assert torch.equal(traced(masks, boxes), paste_masks(masks, boxes, (40, 50)))
    assert torch.equal(traced(masks, boxes), paste_masks_in_image(masks, boxes, (40, 50)))


def _gt_masks():
    """Two objects in a 60 x 80 image: polygons, their bitmasks, XYXY boxes."""
    polys = [
        [np.array([10.0, 5.0, 50.0, 12.0, 44.0, 40.0, 14.0, 33.0])],
        [np.array([52.0, 20.0, 75.0, 24.0, 70.0, 55.0, 55.5, 50.0, 60.0, 35.0])],
    ]
    bitmasks = torch.stack([torch.from_numpy(polygons_to_bitmask(p, 60, 80)) for p in polys])
    boxes = torch.tensor([[10.0, 5.0, 50.0, 40.0], [52.0, 20.0, 75.0, 55.0]])
    return polys, bitmasks, boxes


@pytest.mark.parametrize("source", ["polygon", "roialign"])
def test_paste_masks_accepts_bool_and_uint8_masks(source):
    """As D2's ``test_crop_paste_consistency``: the bool (R, 28, 28) masks of D2's
    ``crop_and_resize`` pasted back; D2 casts non-float masks to float, so do we."""
    polys, bitmasks, boxes = _gt_masks()
    if source == "polygon":
        crops = PolygonMasks(polys).crop_and_resize(boxes, 28)
    else:
        crops = BitMasks(bitmasks).crop_and_resize(boxes, 28)
    assert crops.dtype == torch.bool
    d2 = paste_masks_in_image(crops, Boxes(boxes), (60, 80))
    values = paste_values(crops.float(), boxes, (60, 80))
    for masks in (crops, crops.to(torch.uint8), crops.float()):
        ours = paste_masks(masks, Boxes(boxes), (60, 80))
        assert_same_but_ties(ours, d2, values, 0.5)
    # the paste reconstructs the objects (D2 asserts IoU > 0.94 / 0.95 on COCO)
    inter = (ours & bitmasks).sum(dim=(1, 2)).float()
    union = (ours | bitmasks).sum(dim=(1, 2)).float()
    assert bool((inter / union > 0.85).all()), inter / union


def test_empty_paste_is_bool():
    """R == 0 gives a bool (0, H, W) tensor (D2: uint8 there, bool otherwise; documented)."""
    masks, boxes = paste_inputs(2)
    for empty in (masks[:0], masks[:0] > 0.5, masks[:0].to(torch.uint8)):
        out = paste_masks(empty, boxes[:0], (20, 30))
        assert out.dtype == torch.bool and out.shape == (0, 20, 30)
        assert torch.jit.script(paste_masks)(empty, boxes[:0], (20, 30)).dtype == torch.bool
    assert paste_masks_in_image(masks[:0], boxes[:0], (20, 30)).dtype == torch.uint8  # D2's
    assert paste_masks(masks, boxes, (0, 30)).shape == (2, 0, 30)


def test_paste_mask_values_is_d2s_paste_before_the_threshold():
    masks, boxes = paste_inputs(6, img_hw=(61, 83), seed=4)
    values = paste_mask_values(masks, boxes, (61, 83))
    assert values.shape == (6, 61, 83) and values.dtype == torch.float32
    assert torch.equal(values >= 0.5, paste_masks_in_image(masks, boxes, (61, 83)))
    # any float map (UPSNet pastes logits), sampled in its own dtype on D2's float32 grid
    pasted = paste_mask_values(masks.double(), boxes, (61, 83))
    assert pasted.dtype == torch.float64
    torch.testing.assert_close(pasted, values.double(), rtol=0, atol=1e-5, equal_nan=True)
