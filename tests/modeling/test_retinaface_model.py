"""RetinaFace model pieces: anchors in the original's order, the original's matching quirks,
the OHEM loss, training on faces with and without landmarks and on face-free images, batched
inference, and bad inputs."""

import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, Keypoints
from detectron2.utils.events import EventStorage

from d2ext import add_d2ext_config
from d2ext.modeling.retinaface import match_anchors, retinaface_losses

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _cfg(**overrides):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "RetinaFace", "retinaface_mnet025_640.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    for k, v in overrides.items():
        node = cfg
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return cfg


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(_cfg())


def _instances(h, w, boxes, points=None):
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.zeros(len(inst.gt_boxes), dtype=torch.int64)
    if points is None:
        kp = torch.zeros(len(inst.gt_boxes), 5, 3)
    else:
        kp = torch.tensor(points, dtype=torch.float32).reshape(-1, 5, 3)
    inst.gt_keypoints = Keypoints(kp)
    return inst


def _face_points(x1, y1, x2, y2):
    """Five visible landmarks inside a box (eyes, nose, mouth corners)."""
    w, h = x2 - x1, y2 - y1
    rel = [(0.3, 0.35), (0.7, 0.35), (0.5, 0.55), (0.35, 0.75), (0.65, 0.75)]
    return [[x1 + a * w, y1 + b * h, 2.0] for a, b in rel]


def test_16800_anchors_at_640_in_the_original_order(model):
    feats = [torch.zeros(1, 1, 640 // s, 640 // s) for s in (8, 16, 32)]
    anchors = torch.cat([b.tensor for b in model.anchor_generator(feats)])
    assert anchors.shape == (16800, 4)
    # level 0, cell (row 0, col 0): sizes 16 then 32 centred at (4, 4); then cell (0, 1)
    expected = torch.tensor([[-4.0, -4, 12, 12], [-12, -12, 20, 20], [4, -4, 20, 12]])
    assert torch.equal(anchors[:3], expected)
    # row-major: the anchor after the first row of level 0 is row 1, col 0
    assert torch.equal(anchors[160], torch.tensor([-4.0, 4, 12, 20]))
    # level boundaries: 2 x 80 x 80, then 2 x 40 x 40 (stride 16, sizes 64 / 128)
    assert torch.equal(anchors[12800], torch.tensor([-24.0, -24, 40, 40]))
    assert torch.equal(anchors[12800 + 3200], torch.tensor([-112.0, -112, 144, 144]))


def test_matching_reproduces_the_original_quirks():
    # 3 faces x 4 anchors
    iou = torch.tensor(
        [
            [0.50, 0.30, 0.00, 0.00],  # face 0: anchor 0 above 0.35, best anchor 0
            [0.00, 0.25, 0.00, 0.10],  # face 1: best 0.25 < 0.35 -> forced onto anchor 1
            [
                0.00,
                0.00,
                0.00,
                0.15,
            ],  # face 2: best 0.15 < 0.2 -> not forced, but re-assigns anchor 3
        ]
    )
    labels = torch.tensor([1, -1, 1])
    matched, anchor_labels = match_anchors(iou, labels, 0.35, 0.2)
    assert matched.tolist() == [0, 1, 0, 2]
    # anchor 3's overlap stays 0.15 < 0.35: background although re-assigned to face 2
    assert anchor_labels.tolist() == [1, -1, 0, 0]
    # a shared best anchor goes to the LAST face (the original's sequential loop)
    iou2 = torch.tensor([[0.6, 0.1], [0.5, 0.1]])
    matched, anchor_labels = match_anchors(iou2, torch.tensor([1, -1]), 0.35, 0.2)
    assert matched.tolist() == [1, 0] and anchor_labels.tolist() == [-1, 0]
    # no face reaches 0.2: the whole image is background, even anchors above 0.35 of nothing
    matched, anchor_labels = match_anchors(
        torch.tensor([[0.1, 0.15]]), torch.tensor([1]), 0.35, 0.2
    )
    assert anchor_labels.tolist() == [0, 0]


def test_ohem_takes_seven_negatives_per_positive_per_image():
    torch.manual_seed(0)
    b, a = 2, 100
    cls = torch.randn(b, a, 2, requires_grad=True)
    labels = torch.zeros(b, a, dtype=torch.int64)
    labels[0, :3] = 1  # 3 positives in image 0, none in image 1
    box_t, lm_t = torch.zeros(b, a, 4), torch.zeros(b, a, 10)
    losses = retinaface_losses(
        cls, torch.zeros(b, a, 4), torch.zeros(b, a, 10), labels, box_t, lm_t, neg_pos_ratio=7
    )
    # expected: CE of the 3 positives + the 21 highest background losses of image 0 / 3
    logp = torch.log_softmax(cls.detach(), -1)
    bg = -logp[0, 3:, 0]
    expected = (-logp[0, :3, 1].sum() + bg.sort(descending=True).values[:21].sum()) / 3
    assert torch.allclose(losses["loss_cls"], expected, atol=1e-6)
    losses["loss_cls"].backward()
    assert cls.grad[1].abs().sum() == 0  # the positive-free image contributes nothing


def test_training_step_with_and_without_landmarks_and_empty_images(model):
    model.train()
    img = torch.randint(0, 255, (3, 128, 128), dtype=torch.uint8)
    with_lm = _instances(128, 128, [[20, 20, 70, 80]], [_face_points(20, 20, 70, 80)])
    without_lm = _instances(128, 128, [[60, 30, 110, 90]])
    empty = _instances(128, 128, [])
    with EventStorage():
        losses = model(
            [{"image": img, "instances": with_lm}, {"image": img, "instances": without_lm},
             {"image": img, "instances": empty}]
        )  # fmt: skip
        assert set(losses) == {"loss_bbox", "loss_cls", "loss_landmark"}
        assert all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
        # faces without landmarks only: positives for box and class, no landmark loss
        model.zero_grad()
        losses = model([{"image": img, "instances": without_lm}])
        assert losses["loss_landmark"] == 0 and losses["loss_bbox"] > 0
        # only face-free images: zero losses that keep the graph (DDP-safe)
        losses = model([{"image": img, "instances": empty}])
        total = sum(losses.values())
        assert total == 0 and total.requires_grad
        total.backward()


def test_tiny_and_border_faces_train_without_nan(model):
    """A 2x3 px face (below every anchor's forced-match IoU: trained as background, as the
    original) and a face half outside the image: finite losses."""
    model.train()
    img = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    tiny = _instances(64, 64, [[30, 30, 32, 33]], [_face_points(30, 30, 32, 33)])
    border = _instances(64, 64, [[-20, 10, 20, 50]], [_face_points(-20, 10, 20, 50)])
    with EventStorage():
        for inst in (tiny, border):
            losses = model([{"image": img, "instances": inst}])
            assert all(torch.isfinite(v) for v in losses.values()), losses


def test_zero_area_face_is_a_clear_error(model):
    model.train()
    img = torch.zeros(3, 64, 64, dtype=torch.uint8)
    with EventStorage(), pytest.raises(ValueError, match="zero or negative size"):
        model([{"image": img, "instances": _instances(64, 64, [[10, 10, 10, 30]])}])


def test_overfits_one_batch():
    torch.manual_seed(0)
    m = build_model(_cfg())
    m.train()
    img = torch.full((3, 128, 128), 90, dtype=torch.uint8)
    img[:, 30:90, 40:90] = 200  # a bright "face"
    box = [40, 30, 90, 90]
    batch = [{"image": img, "instances": _instances(128, 128, [box], [_face_points(*box)])}]
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    with EventStorage():
        first = None
        for _ in range(40):
            losses = m(batch)
            total = sum(losses.values())
            first = first if first is not None else total.item()
            opt.zero_grad()
            total.backward()
            opt.step()
    assert total.item() < 0.3 * first, (first, total.item())
    # BN running stats of 40 steps lag the weights: make them this batch's exact statistics
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None
    with torch.no_grad(), EventStorage():
        m(batch)
    m.eval()
    with torch.no_grad():
        det = m([{"image": img}])[0]["instances"]
    top = det.pred_boxes.tensor[0]
    assert torch.allclose(top, torch.tensor(box, dtype=torch.float32), atol=6), top


def test_batched_inference_equals_one_at_a_time(model):
    model.eval()
    torch.manual_seed(1)
    big = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)
    small = torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)
    with torch.no_grad():
        batched = model([{"image": big}, {"image": small}])
        alone = model([{"image": big}])
    # the largest image is not padded: its single-image result (up to float rounding of a
    # batch-of-2 convolution)
    b0, a0 = batched[0]["instances"], alone[0]["instances"]
    assert len(b0) == len(a0)
    assert torch.allclose(b0.pred_boxes.tensor, a0.pred_boxes.tensor, atol=1e-4)
    assert torch.allclose(b0.scores, a0.scores, atol=1e-6)
    assert batched[1]["instances"].image_size == (64, 96)
    # the small image keeps only the anchors of its own ceil(h / s) x ceil(w / s) maps
    valid = model._unpadded_anchors((96, 128), [(96, 128), (64, 96)], 2 * (12 * 16 + 6 * 8 + 3 * 4))
    assert valid[0].all()
    assert int(valid[1].sum()) == 2 * (8 * 12 + 4 * 6 + 2 * 3)
    with torch.no_grad():
        cls, box, lm, anchors = model.forward_raw(
            (torch.stack([big, big]).float() - model.pixel_mean) / model.pixel_std
        )
    model.score_threshold = 0.0
    padded = model.inference(cls, box, lm, anchors, [(96, 128), (64, 96)], (96, 128))[1]
    kept_anchor_centres = padded.pred_boxes.tensor  # decoded, but from valid anchors only
    assert len(padded) > 0 and len(kept_anchor_centres) <= int(valid[1].sum())
    # limits <= 0: every candidate above the threshold survives top-k, every NMS survivor is kept
    model.topk_candidates, model.max_detections_per_image = 0, 0
    unlimited = model.inference(cls, box, lm, anchors, [(96, 128)])[0]
    model.topk_candidates, model.max_detections_per_image = 5000, 750
    assert len(unlimited) >= len(model.inference(cls, box, lm, anchors, [(96, 128)])[0]) > 0
    model.score_threshold = 0.02
    # requested output size: coordinates scaled by it
    with torch.no_grad():
        scaled = model([{"image": big, "height": 192, "width": 256}])[0]["instances"]
    assert scaled.image_size == (192, 256)
    assert torch.allclose(scaled.pred_boxes.tensor, 2 * alone[0]["instances"].pred_boxes.tensor)
    assert torch.allclose(
        scaled.pred_keypoints[..., :2], 2 * alone[0]["instances"].pred_keypoints[..., :2]
    )


def test_image_without_detections(model):
    """No anchor above the score threshold: empty Instances with (0, 5, 3) landmarks."""
    model.eval()
    model.score_threshold = 1.0
    try:
        with torch.no_grad():
            out = model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}])[0]["instances"]
    finally:
        model.score_threshold = 0.02
    assert len(out) == 0 and out.pred_keypoints.shape == (0, 5, 3)
    coder = model.landmark_coder
    assert coder.get_deltas(torch.zeros(0, 4), torch.zeros(0, 5, 2)).shape == (0, 10)


def test_without_landmark_branch():
    m = build_model(_cfg(**{"MODEL.RETINAFACE.LANDMARK_ON": False}))
    assert m.landmark_head is None
    m.train()
    img = torch.zeros(3, 64, 64, dtype=torch.uint8)
    box = [10, 10, 50, 50]
    with EventStorage():
        losses = m([{"image": img, "instances": _instances(64, 64, [box], [_face_points(*box)])}])
    assert set(losses) == {"loss_bbox", "loss_cls"}
    m.eval()
    with torch.no_grad():
        out = m([{"image": img}])[0]["instances"]
    assert not out.has("pred_keypoints")


def test_bad_inputs(model):
    model.eval()
    with pytest.raises(ValueError, match=r"image shape \(1, 32, 32\)"):
        model([{"image": torch.zeros(1, 32, 32, dtype=torch.uint8)}])
    with pytest.raises(ValueError, match="IN_FEATURES"):
        build_model(_cfg(**{"MODEL.RETINAFACE.IN_FEATURES": ["stage1", "stage9", "stage3"]}))
