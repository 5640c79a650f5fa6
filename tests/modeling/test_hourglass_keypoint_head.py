"""HourglassKeypointHead in a stock D2 Keypoint R-CNN: end to end from the yacs config on CPU,
its Gaussian targets and image <-> heatmap mapping on hand cases, sub-pixel decoding, an overfit
of the head alone, and D2's COCO json conversion and Visualizer on its outputs."""

import math
import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import build_keypoint_head
from detectron2.structures import Boxes, Instances, Keypoints
from detectron2.utils.events import EventStorage
from detectron2.utils.visualizer import Visualizer

from d2ext import add_d2ext_config
from d2ext.modeling.common import HeatmapCodec
from d2ext.modeling.hourglass import HourglassKeypointHead

CONFIG = os.path.join(
    os.path.dirname(__file__),
    "..",
    "..",
    "configs",
    "Hourglass",
    "keypoint_rcnn_R_18_FPN_synth_hourglass_head.yaml",
)
STOCK_CONFIG = CONFIG.replace("_hourglass_head.yaml", ".yaml")
K = 17
# a tiny Keypoint R-CNN: narrow FPN and heads, few RoIs
TINY = {
    "DATASETS.TRAIN": "()",
    "DATASETS.TEST": "()",
    "MODEL.FPN.OUT_CHANNELS": 16,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": 40,
    "MODEL.RPN.POST_NMS_TOPK_TEST": 40,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 16,
    "MODEL.ROI_BOX_HEAD.FC_DIM": 32,
    "MODEL.ROI_KEYPOINT_HEAD.HOURGLASS.WIDTH": 16,
}


def _cfg(**opts):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list([str(v) for kv in {**TINY, **opts}.items() for v in kv])
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def _head(**kwargs):
    args = dict(num_keypoints=3, num_stacks=2, width=16, depth=2)
    return HourglassKeypointHead(ShapeSpec(channels=8, height=14, width=14), **{**args, **kwargs})


def _train_instances(boxes, keypoints, image_size=(200, 200)):
    inst = Instances(image_size)
    inst.proposal_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    keypoints = torch.as_tensor(keypoints, dtype=torch.float32).reshape(-1, 3, 3)
    inst.gt_keypoints = Keypoints(keypoints)
    return inst


def _person(x0, y0, w, h, generator):
    """One person's GT: its (1, 4) box and (1, 17, 3) keypoints inside it (some unlabelled)."""
    xy = torch.rand(K, 2, generator=generator) * torch.tensor([w, h]) + torch.tensor([x0, y0])
    v = torch.full((K, 1), 2.0)
    v[::5] = 0
    inst_kp = torch.cat([xy, v], dim=1)[None]
    return torch.tensor([[x0, y0, x0 + w, y0 + h]]), inst_kp


def test_registered_and_built_from_the_yaml():
    cfg = _cfg()
    head = build_keypoint_head(cfg, ShapeSpec(channels=16, height=14, width=14))
    assert isinstance(head, HourglassKeypointHead)
    assert (len(head.stacks), head.heatmap_size, head.num_keypoints) == (2, 56, K)
    assert head.codec.decode_mode == "dark" and head.codec.unbiased_encoding
    assert head.loss_normalizer == "visible"


def test_keypoint_rcnn_e2e_train_and_inference():
    torch.manual_seed(0)
    # every box scored above 0 is kept, so the untrained model's inference reaches the head
    model = build_model(_cfg(**{"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0}))
    assert isinstance(model.roi_heads.keypoint_head, HourglassKeypointHead)
    g = torch.Generator().manual_seed(0)
    inputs = []
    for n in (0, 2):  # an image without people and one with two
        inst = Instances((96, 128))
        boxes, kps = zip(*[_person(10 + 50 * i, 8, 40, 80, g) for i in range(n)]) if n else ([], [])
        inst.gt_boxes = Boxes(torch.cat(boxes) if n else torch.zeros(0, 4))
        inst.gt_classes = torch.zeros(n, dtype=torch.long)
        inst.gt_keypoints = Keypoints(torch.cat(kps) if n else torch.zeros(0, K, 3))
        inputs.append({"image": torch.rand(3, 96, 128) * 255, "instances": inst})
    model.train()
    with EventStorage():
        losses = model(inputs)
        assert "loss_keypoint" in losses
        assert all(torch.isfinite(v) for v in losses.values()), losses
        assert losses["loss_keypoint"].item() > 0
        sum(losses.values()).backward()
        head = model.roi_heads.keypoint_head
        grads = [p.grad for p in head.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in head.stacks[0].predictor.parameters())
        # a batch of empty images only: zero keypoint loss, still differentiable
        model.zero_grad()
        empty = [dict(inputs[0]), dict(inputs[0])]
        losses = model(empty)
        assert losses["loss_keypoint"].item() == 0.0
        sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model([{"image": x["image"]} for x in inputs])
    assert all(len(o["instances"]) > 0 for o in out)
    for o in out:
        inst = o["instances"]
        assert inst.pred_keypoints.shape == (len(inst), K, 3)
        assert inst.pred_keypoint_heatmaps.shape == (len(inst), K, 56, 56)
        assert torch.isfinite(inst.pred_keypoints).all()


def test_targets_hand_case():
    """Box 56 px wide: one heatmap pixel per image pixel, x_hm = x - x0 - 0.5."""
    head = _head(sigma=2.0, unbiased_encoding=True)
    box = [10.0, 20.0, 66.0, 76.0]
    # inside, left of the box, unlabelled
    keypoints = [[30.5, 40.5, 2], [5.0, 30.0, 2], [40.5, 50.5, 0]]
    target, weight = head.targets([_train_instances(box, keypoints)])
    assert target.shape == (1, 3, 56, 56)
    assert weight.tolist() == [[1.0, 0.0, 0.0]]
    peak = target[0, 0].flatten().argmax()
    assert (peak // 56, peak % 56) == (20, 20)  # (row, col) = (40.5 - 20 - 0.5, 30.5 - 10 - 0.5)
    assert target[0, 0, 20, 20] == 1.0
    assert target[0, 0, 20, 22].item() == pytest.approx(math.exp(-4 / 8))  # 2 px = 1 sigma
    assert target[0, 1:].abs().sum() == 0
    # a box twice as wide: heatmap pixel 7's centre is image x0 + 2 * 7.5 = 25; D2's boundary
    # rule keeps a keypoint exactly on the right/bottom edge
    keypoints = [[25.0, 28.5, 2], [122.0, 76.0, 2], [121.9, 75.9, 2]]
    target, weight = head.targets([_train_instances([10.0, 20.0, 122.0, 76.0], keypoints)])
    assert weight.tolist() == [[1.0, 1.0, 1.0]]
    assert target[0, 0, 8, 7] == 1.0
    # integer encoding: the Gaussian sits on the nearest pixel centre
    integer = _head(sigma=2.0, unbiased_encoding=False)
    target, _ = integer.targets([_train_instances(box, [[30.8, 40.2, 2]] * 3)])
    assert target[0, 0, 20, 20] == 1.0  # x_hm 20.3, y_hm 19.7


def test_degenerate_boxes_and_invisible_keypoints_give_zero_weight_not_nan():
    head = _head()
    head.train()
    x = torch.randn(2, 8, 14, 14)
    insts = [
        _train_instances([[10.0, 10.0, 10.0, 50.0]], [[10.0, 20.0, 2]] * 3),  # zero-width box
        _train_instances([[10.0, 10.0, 60.0, 50.0]], [[20.0, 20.0, 0]] * 3),  # all unlabelled
    ]
    with EventStorage():
        loss = head(x, insts)["loss_keypoint"]
    assert loss.item() == 0.0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
    # no RoI at all (no image has a positive proposal)
    empty = _train_instances(torch.zeros(0, 4), torch.zeros(0, 3, 3))
    with EventStorage():
        loss = head(torch.zeros(0, 8, 14, 14), [empty, empty])["loss_keypoint"]
    assert loss.item() == 0.0 and loss.requires_grad


def test_loss_normalizers_as_d2():
    torch.manual_seed(0)
    head = _head()
    inst = _train_instances([[0.0, 0.0, 56.0, 56.0]] * 2, [[10.0, 10.0, 2], [20, 30, 2]] * 3)
    x = torch.randn(2, 8, 14, 14)
    with EventStorage():
        maps = head.layers(x)
        per_valid = head.loss(maps, [inst])
        fixed = head.loss(maps, [inst], normalizer=100.0)
        target, weight = head.targets([inst])
    assert weight.sum() == 6
    assert fixed.item() == pytest.approx(per_valid.item() * 6 / 100)
    expected = sum(((m - target) ** 2).sum() for m in maps) / 2 / 6  # mean over stacks
    assert per_valid.item() == pytest.approx(expected.item(), rel=1e-6)
    # the yacs switch: #images * K * BATCH_SIZE_PER_IMAGE * POSITIVE_FRACTION, as D2's head
    cfg = _cfg(**{"MODEL.ROI_KEYPOINT_HEAD.NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS": False})
    built = build_keypoint_head(cfg, ShapeSpec(channels=16, height=14, width=14))
    assert built.loss_normalizer == K * 16 * 0.25


def test_initial_loss_is_pi_sigma_squared_comparable_to_d2s_cross_entropy():
    """Per valid keypoint the summed squared error of a ~0 initial map is the target's energy,
    pi sigma^2 (12.6 at sigma 2): the order of D2's cross-entropy of uniform logits, ln(56^2) =
    8.0 (a per-pixel mean would be 1/3136 of it)."""
    torch.manual_seed(0)
    inst = _train_instances([[0.0, 0.0, 56.0, 56.0]] * 2, [[28.0, 28.0, 2], [20, 30, 2]] * 3)
    with EventStorage():
        ours = _head(sigma=2.0)(torch.randn(2, 8, 14, 14), [inst])["loss_keypoint"].item()
    assert ours == pytest.approx(math.pi * 4.0, rel=0.05)
    assert 1 < ours / math.log(56**2) < 2


@pytest.mark.parametrize("decode", ["dark", "mmpose", "princeton"])
def test_image_heatmap_mapping_round_trips(decode):
    head = _head(decode=decode)
    boxes = torch.tensor([[10.0, 20.0, 66.0, 132.0], [3.5, 7.25, 40.0, 9.0]])
    points = torch.rand(2, 3, 2) * 100
    coords = head.to_heatmap_coords(points, boxes)
    torch.testing.assert_close(head.from_heatmap_coords(coords, boxes), points)
    # heatmap pixel 0's centre is image x0 + 0.5 * w / 56 in every codec convention
    centre = torch.full((2, 1, 2), head.codec.pixel_offset)
    torch.testing.assert_close(
        head.from_heatmap_coords(centre, boxes)[:, 0],
        boxes[:, :2] + 0.5 * (boxes[:, 2:] - boxes[:, :2]) / 56,
    )


def test_inference_decodes_a_subpixel_gaussian_to_image_coordinates():
    head = _head(decode="dark", sigma=2.0).eval()
    box = torch.tensor([[100.0, 50.0, 156.0, 162.0]])  # 1 image px per heatmap px in x, 2 in y
    xy_hm = torch.tensor([[[23.3, 31.7], [10.55, 40.2], [30.0, 12.85]]])
    maps, _ = HeatmapCodec((56, 56), 2.0, unbiased_encoding=True, decode="dark").encode(xy_hm)
    inst = Instances((300, 300))
    inst.pred_boxes = Boxes(box)
    head.inference(maps, [inst])
    expected = torch.stack(
        [100 + (xy_hm[..., 0] + 0.5) * 1.0, 50 + (xy_hm[..., 1] + 0.5) * 2.0], dim=-1
    )
    assert inst.pred_keypoints.shape == (1, 3, 3) and inst.pred_keypoints.dtype == torch.float32
    assert (inst.pred_keypoints[..., :2] - expected).abs().max() < 0.05
    torch.testing.assert_close(inst.pred_keypoints[..., 2], maps.flatten(2).amax(-1))
    assert (
        inst.pred_keypoint_heatmaps is not None and inst.pred_keypoint_heatmaps.shape == maps.shape
    )


def test_overfit_one_batch():
    """The head alone on fixed RoI features: the loss drops > 5x in 150 steps and the decoded
    keypoints land on the ground truth (train and test coordinate mappings agree)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    head = _head(num_keypoints=5)
    x = torch.randn(6, 8, 14, 14, generator=g)
    boxes = torch.tensor([[10.0, 20.0, 66.0, 76.0], [0.0, 0.0, 112.0, 56.0]]).repeat(3, 1)
    kp = torch.rand(6, 5, 2, generator=g) * 0.8 + 0.1  # inside the box, away from its edges
    kp = boxes[:, None, :2] + kp * (boxes[:, None, 2:] - boxes[:, None, :2])
    inst = Instances((200, 200))
    inst.proposal_boxes = Boxes(boxes)
    inst.gt_keypoints = Keypoints(torch.cat([kp, torch.full((6, 5, 1), 2.0)], dim=-1))
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    losses = []
    with EventStorage():
        for _ in range(150):
            loss = head(x, [inst])["loss_keypoint"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert min(losses[-5:]) < losses[0] / 5, (losses[0], losses[-5:])
    head.eval()
    pred = Instances((200, 200))
    pred.pred_boxes = Boxes(boxes)
    with torch.no_grad():
        (pred,) = head(x, [pred])
    assert (pred.pred_keypoints[..., :2] - kp).norm(dim=-1).mean() < 0.5


def test_outputs_feed_coco_json_and_visualizer():
    head = _head(num_keypoints=K, decode="dark").eval()
    x = torch.randn(2, 8, 14, 14)
    inst = Instances((120, 160))
    inst.pred_boxes = Boxes(torch.tensor([[10.0, 12.0, 70.0, 110.0], [80.0, 5.0, 150.0, 60.0]]))
    inst.scores = torch.tensor([0.9, 0.6])
    inst.pred_classes = torch.zeros(2, dtype=torch.long)
    empty = Instances((120, 160))
    empty.pred_boxes = Boxes(torch.zeros(0, 4))
    empty.scores = torch.zeros(0)
    empty.pred_classes = torch.zeros(0, dtype=torch.long)
    with torch.no_grad():
        inst, empty = head(x, [inst, empty])
    assert inst.pred_keypoints.shape == (2, K, 3) and inst.pred_keypoints.dtype == torch.float32
    assert empty.pred_keypoints.shape == (0, K, 3)
    keypoints = inst.pred_keypoints.clone()  # D2's conversion shifts them in place
    results = instances_to_coco_json(inst, img_id=7)
    assert [r["image_id"] for r in results] == [7, 7] and results[0]["category_id"] == 0
    coco_kp = np.asarray(results[1]["keypoints"]).reshape(K, 3)
    # COCOEvaluator's convention: D2 coordinates - 0.5
    np.testing.assert_allclose(coco_kp[:, :2], keypoints[1, :, :2].numpy() - 0.5)
    assert instances_to_coco_json(empty, img_id=8) == []
    image = np.zeros((120, 160, 3), dtype=np.uint8)
    inst.pred_keypoints = keypoints
    drawn = Visualizer(image).draw_instance_predictions(inst).get_image()
    assert drawn.shape == (120, 160, 3) and drawn.any()


def test_stock_and_hourglass_configs_differ_only_in_the_head():
    """The comparison's two configs: same model, data and budget but for the keypoint head."""

    def load(path):
        cfg = get_cfg()
        add_d2ext_config(cfg)
        cfg.merge_from_file(path)
        return cfg

    hourglass, stock = load(CONFIG), load(STOCK_CONFIG)
    assert stock.MODEL.ROI_KEYPOINT_HEAD.NAME == "KRCNNConvDeconvUpsampleHead"
    assert hourglass.MODEL.ROI_KEYPOINT_HEAD.NAME == "HourglassKeypointHead"
    stock.MODEL.ROI_KEYPOINT_HEAD.NAME = hourglass.MODEL.ROI_KEYPOINT_HEAD.NAME
    stock.MODEL.ROI_KEYPOINT_HEAD.HOURGLASS = hourglass.MODEL.ROI_KEYPOINT_HEAD.HOURGLASS
    stock.OUTPUT_DIR = hourglass.OUTPUT_DIR
    assert stock.dump() == hourglass.dump()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(depth=3), r"HOURGLASS.DEPTH=3.*28.*8"),
        (dict(decode="argmax"), r"MODEL.ROI_KEYPOINT_HEAD.HOURGLASS .*decode"),
        (dict(sigma=0.0), r"MODEL.ROI_KEYPOINT_HEAD.HOURGLASS .*sigma"),
        (dict(num_stacks=0), r"HOURGLASS.NUM_STACKS must be an int >= 1"),
    ],
)
def test_bad_settings_name_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _head(**kwargs)
