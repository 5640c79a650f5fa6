"""UPSNet panoptic head against hand-built cases: the logit formula (incl. unknown), mask
matching targets, detection selection, mask removal and the panoptic-seg output."""

import pytest
import torch

from d2ext.data import PanopticLabelSpace
from d2ext.modeling.upsnet import (
    UPSNetPanopticHead,
    panoptic_logits,
    panoptic_targets,
    remove_overlapping_masks,
    select_panoptic_detections,
)
from d2ext.modeling.upsnet.panoptic_head import box_regions

S, T = 2, 2


def test_box_regions_cover_overlapped_pixels():
    r = box_regions(torch.tensor([[0.5, 1.0, 2.2, 2.0]]), 4, 4)[0]
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1:2, 0:3] = True  # columns 0..2 are overlapped, only row 1
    assert torch.equal(r, expected)


def test_unknown_logit_hand_computed():
    # 2 x 4 image, S = 1 stuff, T = 2 things; both rows equal
    sem = torch.tensor([[0.0] * 4, [1, 2, 3, 4], [4, 3, 2, 1]])[:, None].expand(-1, 2, -1)
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 4.0, 2.0]])  # A: x 0-1, B: x 2-3
    classes = torch.tensor([0, 1])
    masks = torch.tensor([[[0.5, 0.5], [0.5, 0.5]], [[1.0, -1.0], [1.0, -1.0]]])
    out = panoptic_logits(sem, boxes, classes, masks, num_stuff=1)
    assert out.shape == (1 + 2 + 1, 2, 4)
    row = lambda *v: torch.tensor([list(v)] * 2)  # noqa: E731
    # thing_i = Y_i (its class's semantic logit inside its box) + X_i (its pasted mask logits)
    torch.testing.assert_close(out[1], row(1.5, 2.5, 0.0, 0.0))
    torch.testing.assert_close(out[2], row(0.0, 0.0, 3.0, 0.0))
    # unknown = max thing logit [4, 3, 3, 4] - max_i Y_i [1, 2, 2, 1]
    torch.testing.assert_close(out[3], row(3.0, 1.0, 1.0, 3.0))
    # only A: max_i Y_i = [1, 2, 0, 0] (Y is 0 outside the box)
    out = panoptic_logits(sem, boxes[:1], classes[:1], masks[:1], num_stuff=1)
    torch.testing.assert_close(out[2], row(3.0, 1.0, 3.0, 4.0))


def test_panoptic_logits_match_definition_with_overlapping_boxes():
    torch.manual_seed(0)
    h, w = 5, 7
    sem = torch.randn(S + T, h, w)
    # integer boxes with mask side == box side: pasting reproduces the mask values exactly
    boxes = torch.tensor([[0.0, 0.0, 3.0, 3.0], [2.0, 1.0, 5.0, 4.0]])
    classes = torch.tensor([1, 0])
    masks = torch.randn(2, 3, 3)
    out = panoptic_logits(sem, boxes, classes, masks, S)
    ys = []
    for i in range(2):
        x0, y0, x1, y1 = [int(v) for v in boxes[i].tolist()]
        y = torch.zeros(h, w)
        y[y0:y1, x0:x1] = sem[S + classes[i], y0:y1, x0:x1]
        x = torch.zeros(h, w)
        x[y0:y1, x0:x1] = masks[i]
        torch.testing.assert_close(out[S + i], y + x)
        ys.append(y)
    torch.testing.assert_close(out[:S], sem[:S])
    torch.testing.assert_close(out[S + 2], sem[S:].max(0).values - torch.maximum(*ys))
    no_unknown = panoptic_logits(sem, boxes, classes, masks, S, unknown=False)
    torch.testing.assert_close(no_unknown, out[:-1])


def test_panoptic_logits_without_instances():
    sem = torch.randn(S + T, 3, 5)
    out = panoptic_logits(
        sem, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4, 4), S
    )
    assert out.shape == (S + 1, 3, 5)
    torch.testing.assert_close(out[S], sem[S:].max(0).values)


def test_mask_matching_targets_dropped_instance_becomes_unknown():
    ig = 255
    sem = torch.tensor(
        [
            [0, 0, 2, 2, 3, 3],
            [1, 1, 2, 2, 3, 3],
            [1, ig, 3, 3, 2, 2],  # (2, 4:6): a crowd region (thing label, no instance mask)
        ]
    )
    masks = torch.zeros(3, 3, 6, dtype=torch.bool)
    masks[0, 0:2, 2:4] = True  # instance 0 (class 0 -> label 2)
    masks[1, 0:2, 4:6] = True  # instance 1 (class 1 -> label 3)
    masks[2, 2, 2:4] = True  # instance 2 (class 1)
    keep = torch.tensor([2, 0])  # instance 1 dropped
    tgt = panoptic_targets(sem, masks[keep], S, unknown=True)
    expected = torch.tensor(
        [
            [0, 0, S + 1, S + 1, S + 2, S + 2],  # instance 0 is the 2nd kept; dropped -> unknown
            [1, 1, S + 1, S + 1, S + 2, S + 2],
            [1, ig, S + 0, S + 0, S + 2, S + 2],  # crowd -> unknown
        ]
    )
    assert torch.equal(tgt, expected)
    tgt = panoptic_targets(sem, masks[keep], S, unknown=False)
    assert torch.equal(tgt, torch.where(expected == S + 2, torch.tensor(ig), expected))


@pytest.mark.parametrize("n,expected", [(0, 0), (1, 1), (2, 1), (10, 7)])
def test_sample_instances_keeps_fraction_at_least_one(n, expected):
    head = UPSNetPanopticHead(label_space=PanopticLabelSpace.identity(T, S))
    idx = head.sample_instances(n)
    assert len(idx) == expected and len(set(idx.tolist())) == expected
    assert all(0 <= i < n for i in idx.tolist())


def test_select_panoptic_detections_class_agnostic_nms():
    # 3 proposals, 2 classes (+ background last)
    boxes = torch.tensor(
        [
            [0, 0, 10, 10, 0, 0, 10, 10],
            [1, 1, 11, 11, 1, 1, 11, 11],  # overlaps proposal 0
            [20, 20, 30, 30, 20, 20, 30, 30],
        ],
        dtype=torch.float32,
    )
    scores = torch.tensor([[0.9, 0.05, 0.05], [0.02, 0.8, 0.18], [0.5, 0.1, 0.4]])
    b, s, c = select_panoptic_detections(boxes, scores, (40, 40), 0.6, 0.5, 100)
    # proposal 1 (class 1) is suppressed by proposal 0 (class 0) although classes differ;
    # proposal 2 is below 0.6
    assert c.tolist() == [0] and s.tolist() == [pytest.approx(0.9)]
    assert b.tensor.tolist() == [[0, 0, 10, 10]]


@pytest.mark.parametrize("box_dim", [4, 8])  # agnostic, class-specific
def test_select_panoptic_detections_without_proposals(box_dim):
    b, s, c = select_panoptic_detections(
        torch.zeros(0, box_dim), torch.zeros(0, 3), (40, 40), 0.6, 0.5, 100
    )
    assert b.tensor.shape == (0, 4) and s.shape == (0,) and c.shape == (0,)


def test_remove_overlapping_masks_same_class_only():
    m = torch.zeros(4, 5, 10, dtype=torch.bool)
    m[0, :, 0:5] = True  # score 0.9, class 0
    m[1, :, 3:8] = True  # 40% inside mask 0, class 0 -> dropped
    m[2, :, 3:8] = True  # same mask but class 1 -> kept
    # m[3] empty -> dropped
    keep = remove_overlapping_masks(
        m, torch.tensor([0.9, 0.8, 0.7, 0.95]), torch.tensor([0, 0, 1, 0]), 0.3
    )
    assert keep.tolist() == [0, 2]


def _head(**kw):
    space = PanopticLabelSpace(thing_ids=(0, 1), stuff_ids=(2, 3))  # one joint id space
    return UPSNetPanopticHead(label_space=space, stuff_area_limit=4, **kw)


def test_inference_without_detections_is_all_stuff_or_void():
    h, w = 6, 8
    sem = torch.full((S + T, h, w), -5.0)
    sem[0, :, :4] = 5.0  # stuff 0 on the left half
    sem[1, :, 4:] = 5.0  # stuff 1 on the right half
    sem[3, 5, 6:] = 9.0  # a thing without detection wins 2 px: unknown -> void
    pan, info = _head().inference(
        sem,
        torch.zeros(0, 4),
        torch.zeros(0),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, 28, 28),
    )
    assert pan.dtype == torch.int32 and pan.shape == (h, w)
    assert all(not s["isthing"] for s in info)
    assert sorted(s["category_id"] for s in info) == [2, 3]  # metadata ids of stuff 0 and 1
    by_cat = {s["category_id"]: s["id"] for s in info}
    assert (pan[:, :4] == by_cat[2]).all() and (pan[:5, 4:] == by_cat[3]).all()
    assert (pan[5, 6:] == 0).all()
    for s in info:
        assert s["area"] == int((pan == s["id"]).sum())


def test_inference_small_stuff_becomes_void_and_instances_are_pasted():
    h, w = 8, 8
    sem = torch.zeros(S + T, h, w)
    sem[0] = 3.0
    sem[1, 0, 0:2] = 6.0  # stuff 1 covers 2 px < stuff_area_limit 4 -> void
    sem[S + 1, 4:8, 4:8] = 4.0  # thing class 1 semantic evidence in the box
    boxes = torch.tensor([[4.0, 4.0, 8.0, 8.0]])
    pan, info = _head(stuff_override_fraction=0.0).inference(
        sem, boxes, torch.tensor([0.9]), torch.tensor([1]), torch.full((1, 4, 4), 2.0)
    )
    things = [s for s in info if s["isthing"]]
    assert len(things) == 1 and things[0]["category_id"] == 1
    assert (pan[4:, 4:] == things[0]["id"]).all()
    assert (pan[0, 0:2] == 0).all()
    assert [s["category_id"] for s in info if not s["isthing"]] == [2]


def test_inference_instance_on_stuff_is_overridden():
    h, w = 8, 8
    sem = torch.zeros(S + T, h, w)
    sem[0] = 3.0  # the semantic head says stuff 0 everywhere
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    args = (sem, boxes, torch.tensor([0.9]), torch.tensor([0]), torch.full((1, 4, 4), 9.0))
    _, info = _head(stuff_override_fraction=0.5).inference(*args)
    assert not any(s["isthing"] for s in info)
    _, info = _head(stuff_override_fraction=0.0).inference(*args)
    assert any(s["isthing"] for s in info)
