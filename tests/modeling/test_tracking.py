"""Mask-IoU track association (d2ext/modeling/common/tracking.py): exact IoU values, greedy vs
Hungarian on a matrix where they differ, the threshold and class rule, and the Tracker over
hand-built frames (a moving object keeps its id, a new one gets the next, a missed frame within
max_missed keeps the track, beyond it a new id; score filter, box-only models, size change)."""

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from d2ext.modeling.common import Tracker, mask_iou, match_by_iou, tracking

SIZE = (20, 30)


def _square(x, y, side=6):
    mask = torch.zeros(SIZE, dtype=torch.bool)
    mask[y : y + side, x : x + side] = True
    return mask


def _frame(squares, classes=None, scores=None, masks=True):
    """Instances of one frame: a ``side``-6 square mask at each (x, y) of ``squares``."""
    inst = Instances(SIZE)
    n = len(squares)
    boxes = torch.tensor([[x, y, x + 6, y + 6] for x, y in squares], dtype=torch.float32)
    inst.pred_boxes = Boxes(boxes.reshape(n, 4))
    inst.pred_classes = torch.tensor(classes if classes is not None else [0] * n)
    inst.scores = torch.tensor(scores if scores is not None else [0.9] * n)
    if masks:
        inst.pred_masks = (
            torch.stack([_square(x, y) for x, y in squares])
            if n
            else torch.zeros((0, *SIZE), dtype=torch.bool)
        )
    return inst


def _ids(tracker, *args, **kwargs):
    return tracker.update(_frame(*args, **kwargs)).pred_track_ids.tolist()


def test_mask_iou_exact(monkeypatch):
    a = torch.stack([_square(0, 0), _square(3, 0), torch.zeros(SIZE, dtype=torch.bool)])
    b = torch.stack([_square(0, 0), _square(0, 3), torch.zeros(SIZE, dtype=torch.bool)])
    iou = mask_iou(a, b)
    # 6x6 squares shifted by 3 px: 18 shared pixels of 54; two empty masks: 0, not NaN
    expected = torch.tensor(
        [[1.0, 18 / 54, 0.0], [18 / 54, 9 / 63, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float32
    )
    assert torch.equal(iou, expected)
    # the pixels in chunks of 7 // 6 = 1 (a column of pixels at a time): the same counts
    monkeypatch.setattr(tracking, "_CHUNK_ELEMENTS", 7)
    assert torch.equal(mask_iou(a, b), expected)
    assert mask_iou(a[:0], b).shape == (0, 3)
    with pytest.raises(ValueError, match="different sizes"):
        mask_iou(a, b[:, :10])


def test_greedy_and_hungarian_differ():
    iou = np.array([[0.9, 0.8], [0.8, 0.1]])
    # greedy takes 0.9 first and leaves (1, 1) below the threshold; Hungarian: 0.8 + 0.8
    rows, cols = match_by_iou(iou, iou_threshold=0.5, method="greedy")
    assert rows.tolist() == [0] and cols.tolist() == [0]
    rows, cols = match_by_iou(iou, iou_threshold=0.5, method="hungarian")
    assert rows.tolist() == [1, 0] and cols.tolist() == [0, 1]


@pytest.mark.parametrize("method", ["greedy", "hungarian"])
def test_match_threshold_and_allowed(method):
    iou = torch.tensor([[0.5, 0.2], [0.0, 0.49], [0.7, 0.6]])
    rows, cols = match_by_iou(iou, iou_threshold=0.5, method=method)
    # IoU >= the threshold matches (0.5 exactly does, 0.49 not); greedy takes 0.7 first, which
    # blocks both other pairs; Hungarian prefers 0.5 + 0.6
    pairs = dict(zip(cols.tolist(), rows.tolist()))
    assert pairs == ({0: 2} if method == "greedy" else {0: 0, 1: 2})
    allowed = torch.tensor([[True, True], [True, True], [False, True]])
    rows, cols = match_by_iou(iou, iou_threshold=0.5, method=method, allowed=allowed)
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 0, 1: 2}
    rows, cols = match_by_iou(np.zeros((0, 3)), iou_threshold=0.5, method=method)
    assert rows.dtype == np.int64 and len(rows) == len(cols) == 0


def test_match_errors():
    with pytest.raises(ValueError, match="method"):
        match_by_iou(np.eye(2), iou_threshold=0.5, method="auction")
    with pytest.raises(ValueError, match="iou_threshold"):
        match_by_iou(np.eye(2), iou_threshold=0.0)
    with pytest.raises(ValueError, match="allowed"):
        match_by_iou(np.eye(2), iou_threshold=0.5, allowed=np.ones((2, 3), dtype=bool))


@pytest.mark.parametrize("method", ["greedy", "hungarian"])
def test_tracker_moving_new_and_empty(method):
    tracker = Tracker(iou_threshold=0.3, method=method, max_missed=0)
    assert _ids(tracker, [(0, 0), (20, 10)]) == [0, 1]
    # both move by 2 px (IoU 24/48 = 0.5), listed in the other order; a third object appears
    assert _ids(tracker, [(22, 10), (2, 0), (10, 12)]) == [1, 0, 2]
    # a frame without objects ends every track (max_missed=0): the objects come back as new
    assert _ids(tracker, []) == []
    assert tracker.track_ids == []
    assert _ids(tracker, [(2, 0)]) == [3]
    tracker.reset()
    assert _ids(tracker, [(2, 0), (20, 10)]) == [0, 1]


def test_tracker_keeps_missed_tracks():
    tracker = Tracker(max_missed=2)
    assert _ids(tracker, [(0, 0), (20, 10)]) == [0, 1]
    assert _ids(tracker, [(0, 0)]) == [0]  # object 1 missed once
    assert _ids(tracker, [(0, 0)]) == [0]  # twice: still alive
    assert sorted(tracker.track_ids) == [0, 1]
    assert _ids(tracker, [(0, 0), (21, 10)]) == [0, 1]  # back, matched to its last mask
    for _ in range(3):  # missed three times: gone
        _ids(tracker, [(0, 0)])
    assert _ids(tracker, [(0, 0), (20, 10)]) == [0, 2]


def test_tracker_threshold_and_class():
    tracker = Tracker(iou_threshold=0.5)
    _ids(tracker, [(0, 0)], classes=[1])
    assert _ids(tracker, [(3, 0)], classes=[1]) == [1]  # IoU 18/54 < 0.5: a new track
    assert _ids(tracker, [(3, 0)], classes=[2]) == [2]  # same place, another class: new track
    tracker = Tracker(iou_threshold=0.5, same_class=False)
    _ids(tracker, [(0, 0)], classes=[1])
    assert _ids(tracker, [(0, 0)], classes=[2]) == [0]


def test_tracker_min_score_boxes_and_errors():
    tracker = Tracker(min_score=0.5)
    assert _ids(tracker, [(0, 0), (0, 0)], scores=[0.9, 0.2]) == [0, -1]
    assert _ids(tracker, [(1, 0), (0, 0)], scores=[0.3, 0.8]) == [-1, 0]

    # box-only models: box IoU (D2's pairwise_iou)
    tracker = Tracker()
    assert _ids(tracker, [(0, 0), (20, 10)], masks=False) == [0, 1]
    assert _ids(tracker, [(20, 11), (1, 0)], masks=False) == [1, 0]
    with pytest.raises(ValueError, match="tracked by boxes"):
        _ids(tracker, [(0, 0)])

    tracker = Tracker()
    _ids(tracker, [(0, 0)])
    bigger = Instances((40, 30), pred_masks=torch.zeros((0, 40, 30), dtype=torch.bool))
    bigger.pred_classes = torch.zeros(0, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"frame 1 is 40x30 .* 20x30; call reset\(\)"):
        tracker.update(bigger)
    tracker.reset()
    assert tracker.update(bigger).pred_track_ids.tolist() == []
    with pytest.raises(ValueError, match="method"):
        Tracker(method="nearest")
    with pytest.raises(ValueError, match="max_missed"):
        Tracker(max_missed=-1)
