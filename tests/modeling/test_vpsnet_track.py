"""VPSNet track head and track memory on hand-built cases: targets, the CE loss, the inference
score, greedy conflict resolution, ids over a video and its reset, bad inputs, and an overfit of
the embedding on one fixed pair."""

import math

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes

from d2ext.config import add_d2ext_config
from d2ext.modeling.vpsnet import (
    TrackHead,
    TrackMemory,
    comprehensive_scores,
    match_logits,
    resolve_matches,
    track_targets,
)

ROI = ShapeSpec(channels=4, height=3, width=3)


def _head(**kwargs):
    torch.manual_seed(0)
    return TrackHead(ROI, **kwargs)


def test_from_config_layers():
    cfg = get_cfg()
    add_d2ext_config(cfg)
    head = TrackHead(cfg, ShapeSpec(channels=256, height=7, width=7))
    assert [(fc.in_features, fc.out_features) for fc in head.fcs] == [
        (256 * 49, 1024),
        (1024, 1024),
    ]
    assert head.match_coeff == (1.0, 2.0, 10.0) and head.loss_weight == 0.5


def test_embedding_relu_between_fcs_only():
    head = _head(num_fc=2, fc_dim=5)
    x = torch.randn(3, *head.input_shape)
    fc1, fc2 = head.fcs
    expected = fc2(torch.relu(fc1(x.flatten(1))))
    torch.testing.assert_close(head.embed(x), expected)
    assert (head.embed(x) < 0).any()  # no ReLU after the last FC


def test_match_logits_dummy_column():
    e = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    r = torch.tensor([[3.0, 1.0]])
    torch.testing.assert_close(match_logits(e, r), torch.tensor([[0.0, 5.0], [0.0, -1.0]]))
    assert match_logits(e, r[:0]).shape == (2, 1)


def test_track_targets_from_track_ids():
    targets, weights = track_targets(
        torch.tensor([7, 3, 9, 3]),
        torch.tensor([True, True, True, False]),
        torch.tensor([3, 7]),
    )
    assert targets.tolist() == [2, 1, 0, 0]
    assert weights.tolist() == [1.0, 1.0, 1.0, 0.0]
    # a reference frame without things (all left the view): every proposal is a new object
    targets, weights = track_targets(
        torch.tensor([7, 3]), torch.tensor([True, False]), torch.zeros(0, dtype=torch.long)
    )
    assert targets.tolist() == [0, 0] and weights.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="duplicate"):
        track_targets(torch.tensor([1]), torch.tensor([True]), torch.tensor([1, 1]))


def _ce(row, target):
    return -row[target] + math.log(sum(math.exp(v) for v in row))


def test_loss_equals_hand_computation():
    head = _head(loss_weight=0.5)
    img1 = [[0.0, 2.0, -1.0], [0.0, 0.5, 3.0], [0.0, 9.0, 9.0]]  # last row: background
    img2 = [[0.0, 1.5]]  # one foreground proposal: counted
    img3 = [[0.0]]  # no reference object: the only class is "new", CE 0
    logits = [torch.tensor(img1), torch.tensor(img2), torch.tensor(img3)]
    targets = [torch.tensor([1, 0, 0]), torch.tensor([1]), torch.tensor([0])]
    weights = [torch.tensor([1.0, 1.0, 0.0]), torch.tensor([1.0]), torch.tensor([1.0])]
    loss = head.losses(logits, targets, weights)["loss_match"]
    per_image = [(_ce(img1[0], 1) + _ce(img1[1], 0)) / 2, _ce(img2[0], 1), 0.0]
    assert loss.item() == pytest.approx(0.5 * sum(per_image) / 3, rel=1e-6)


def test_loss_with_no_proposal_is_zero_with_gradient():
    head = _head()
    logits = head(torch.zeros(0, *head.input_shape), torch.randn(2, *head.input_shape), [0], [2])
    assert logits[0].shape == (0, 3)
    loss = head.losses(logits, [torch.zeros(0, dtype=torch.long)], [torch.zeros(0)])["loss_match"]
    assert loss.item() == 0.0
    loss.backward()


def test_inference_score_formula():
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    scores = comprehensive_scores(
        logits,
        torch.tensor([0.5]),
        torch.tensor([[0.3, 0.6]]),
        torch.tensor([[True, False]]),
        match_coeff=(1.0, 2.0, 10.0),
        dummy_iou=0.0,
    )
    lse = math.log(1 + math.e + math.e**2)
    expected = [
        0 - lse + math.log(0.5) + 0 + 10,
        1 - lse + math.log(0.5) + 2 * 0.3 + 10,
        2 - lse + math.log(0.5) + 2 * 0.6 + 0,
    ]
    torch.testing.assert_close(scores[0], torch.tensor(expected))


def test_greedy_conflict_higher_score_wins():
    scores = torch.tensor(
        [
            [0.0, 5.0, 1.0],  # wants entry 0, loses it to the next detection
            [0.0, 7.0, 1.0],  # wants entry 0, higher: wins
            [9.0, 0.0, 0.0],  # new object
            [0.0, 1.0, 4.0],  # entry 1
            [0.0, 1.0, 4.0],  # entry 1 too, a tie: the earlier detection keeps it
            [-500.0, -200.0, -300.0],  # best is entry 0 but under the minimum score
        ]
    )
    matched, chose_new = resolve_matches(scores, min_score=-100.0)
    assert matched.tolist() == [-1, 0, -1, 1, -1, -1]
    assert chose_new.tolist() == [False, False, True, False, False, False]


def test_memory_conflict_loser_becomes_new_after_dummy_choosers():
    mem = TrackMemory()
    e = torch.eye(3) * 10
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    cls = torch.tensor([0])
    assert mem.update(e[:1], box, cls, torch.tensor([0.9])).tolist() == [0]
    # det 0 and det 2 both look like entry 0; det 2 overlaps it more and wins, det 0 becomes new
    # after det 1, which chose "new" outright (the original numbers the choosers first)
    boxes = torch.tensor([[3.0, 3.0, 13.0, 13.0], [50.0, 50, 60, 60], [1.0, 1, 11, 11]])
    ids = mem.update(e[[0, 1, 0]], Boxes(boxes), torch.tensor([0, 1, 0]), torch.full((3,), 0.9))
    assert ids.tolist() == [2, 1, 0]
    assert len(mem) == 3
    # the entry now holds the winner's box
    torch.testing.assert_close(mem.boxes[0], boxes[2])


def _frame(names, objects, shift):
    emb = torch.stack([objects[n][0] for n in names])
    boxes = torch.stack([objects[n][1] + shift for n in names])
    classes = torch.tensor([objects[n][2] for n in names])
    return emb, boxes, classes, torch.full((len(names),), 0.8)


def test_memory_ids_stable_over_three_frames_and_reset():
    objects = {
        "A": (torch.tensor([10.0, 0, 0, 0]), torch.tensor([0.0, 0, 20, 20]), 0),
        "B": (torch.tensor([0.0, 10, 0, 0]), torch.tensor([40.0, 0, 60, 20]), 0),
        "C": (torch.tensor([0.0, 0, 10, 0]), torch.tensor([0.0, 40, 20, 60]), 1),
    }
    mem = _head(fc_dim=4).new_memory()
    assert mem.update(*_frame(["A", "B"], objects, 0.0)).tolist() == [0, 1]
    # reordered and moved; then A is missing for a frame and C (another class) is new
    assert mem.update(*_frame(["B", "A"], objects, 1.0)).tolist() == [1, 0]
    assert mem.update(*_frame(["C", "B"], objects, 2.0)).tolist() == [2, 1]
    # A was not seen in the last frame: the memory keeps every object of the video
    assert mem.update(*_frame(["A", "C"], objects, 3.0)).tolist() == [0, 2]
    assert len(mem) == 3
    mem.reset()
    assert len(mem) == 0
    assert mem.update(*_frame(["C"], objects, 0.0)).tolist() == [0]


def test_memory_empty_inputs():
    mem = TrackMemory()
    empty = (torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0))
    assert mem.update(*empty).shape == (0,)
    assert len(mem) == 0
    mem.update(
        torch.randn(2, 4), torch.tensor([[0.0, 0, 5, 5]] * 2), torch.tensor([0, 1]), torch.ones(2)
    )
    # a frame without detections leaves the memory as it is
    assert mem.update(*empty).shape == (0,) and len(mem) == 2


def test_bad_inputs_give_clear_errors():
    head = _head()
    with pytest.raises(ValueError, match="RoI features must be"):
        head.embed(torch.zeros(2, 4, 7, 7))
    with pytest.raises(ValueError, match="reference images"):
        head(torch.zeros(1, *head.input_shape), torch.zeros(1, *head.input_shape), [1], [1, 0])
    mem = TrackMemory()
    mem.update(torch.randn(1, 4), torch.tensor([[0.0, 0, 5, 5]]), torch.tensor([0]), torch.ones(1))
    with pytest.raises(ValueError, match="embedding size"):
        mem.update(
            torch.randn(1, 3), torch.tensor([[0.0, 0, 5, 5]]), torch.tensor([0]), torch.ones(1)
        )
    with pytest.raises(ValueError, match="do not describe"):
        mem.update(torch.randn(2, 4), torch.zeros(1, 4), torch.tensor([0, 0]), torch.ones(2))
    with pytest.raises(ValueError, match="scores"):
        mem.update(torch.randn(1, 4), torch.zeros(1, 4), torch.tensor([0]), torch.ones(2))
    with pytest.raises(ValueError, match="one per image"):
        head.losses([], [], [])


def test_overfit_one_pair_then_track_with_it():
    torch.manual_seed(0)
    head = TrackHead(ROI, fc_dim=32)
    ref = torch.randn(2, *head.input_shape)  # reference GT objects 0 and 1
    # proposals: object 1 (noisy), object 0 (noisy), an object not in the reference, background
    props = torch.stack(
        [
            ref[1] + 0.1 * torch.randn_like(ref[1]),
            ref[0] + 0.1 * torch.randn_like(ref[0]),
            torch.randn_like(ref[0]),
            torch.randn_like(ref[0]),
        ]
    )
    targets, weights = track_targets(
        torch.tensor([11, 10, 12, 0]),
        torch.tensor([True, True, True, False]),
        torch.tensor([10, 11]),
    )
    assert targets.tolist() == [2, 1, 0, 0]
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    first = None
    for _ in range(150):
        logits = head(props, ref, [4], [2])
        loss = head.losses(logits, [targets], [weights])["loss_match"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.02 * first
    with torch.no_grad():
        assert head(props, ref, [4], [2])[0][:3].argmax(dim=1).tolist() == [2, 1, 0]
        # the learned embedding links the pair in the memory: disjoint boxes, one class, so the
        # match term alone decides
        mem = head.new_memory()
        far = torch.tensor([[0.0, 0, 10, 10], [100.0, 0, 110, 10]])
        assert mem.update(head.embed(ref), far, torch.zeros(2), torch.ones(2)).tolist() == [0, 1]
        boxes = torch.tensor([[0.0, 50, 10, 60], [50.0, 50, 60, 60], [100.0, 50, 110, 60]])
        ids = mem.update(head.embed(props[:3]), boxes, torch.zeros(3), torch.ones(3))
        assert ids.tolist() == [1, 0, 2]
