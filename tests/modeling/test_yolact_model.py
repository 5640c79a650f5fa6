"""YOLACT on tiny CPU inputs: shapes, losses on odd GT, inference outputs, Fast NMS, crop."""

import numpy as np
import pytest
import torch
from detectron2.layers import batched_nms
from detectron2.modeling import build_model
from detectron2.modeling.matcher import Matcher
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage
from yolact_tiny import tiny_cfg

from d2ext.layers import assemble_masks
from d2ext.layers.prototype_masks import prototype_masks
from d2ext.modeling.yolact import (
    MaskIoUNet,
    ProtoNet,
    YOLACTLoss,
    crop_masks,
    fast_nms,
    standard_nms,
)
from d2ext.modeling.yolact.loss import downsample_mask_targets, match_with_forced_best


def make_input(
    h=96, w=112, boxes=((10, 12, 50, 60), (40, 30, 100, 90)), classes=(0, 2), polygons=False, seed=0
):
    g = torch.Generator().manual_seed(seed)
    image = (torch.rand(3, h, w, generator=g) * 255).to(torch.uint8)
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    if polygons:
        inst.gt_masks = PolygonMasks(
            [
                [np.array([x1, y1, x2, y1, x2, y2, x1, y2], dtype=np.float64)]
                for x1, y1, x2, y2 in boxes
            ]
        )
    else:
        m = torch.zeros(len(boxes), h, w, dtype=torch.bool)
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            m[i, int(y1) : int(y2), int(x1) : int(x2)] = True
        inst.gt_masks = BitMasks(m)
    return {
        "image": image,
        "instances": inst,
        "height": h,
        "width": w,
        "file_name": f"img{seed}.png",
    }


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_cfg())


def _losses(model, inputs):
    model.train()
    with EventStorage():
        losses = model(inputs)
    assert set(losses) == {"loss_box", "loss_cls", "loss_mask", "loss_sem_seg"}
    for k, v in losses.items():
        assert torch.isfinite(v), (k, v)
    return losses


def test_protonet_138_for_550():
    cfg = tiny_cfg()
    cfg.MODEL.YOLACT.PROTO_CONV_DIM = 8
    from detectron2.layers import ShapeSpec

    net = ProtoNet(cfg, ShapeSpec(channels=4))
    out = net(torch.randn(1, 4, 69, 69))
    assert out.shape == (1, 8, 138, 138) and out.min() >= 0
    assert [i for i, m in enumerate(net.net) if isinstance(m, torch.nn.Conv2d)] == [0, 2, 4, 8, 10]
    assert net.upsample_factor == 2
    # d2ext's extra upsampling stages: stride-2 prototypes, the original's layers keep their indices
    cfg.MODEL.YOLACT.PROTO_EXTRA_UPSAMPLE_DIMS = [6]
    net = ProtoNet(cfg, ShapeSpec(channels=4))
    out = net(torch.randn(1, 4, 69, 69))
    assert out.shape == (1, 8, 276, 276) and out.min() >= 0 and net.upsample_factor == 4
    convs = [(i, m.out_channels) for i, m in enumerate(net.net) if isinstance(m, torch.nn.Conv2d)]
    assert convs == [(0, 8), (2, 8), (4, 8), (8, 8), (12, 6), (14, 8)]


def test_backbone_levels(model):
    feats = model.backbone(torch.randn(1, 3, 128, 128))
    assert list(feats) == ["p3", "p4", "p5", "p6", "p7"]
    assert [f.shape[-1] for f in feats.values()] == [16, 8, 4, 2, 1]
    assert all(feats[p].min() >= 0 for p in ("p3", "p4", "p5"))  # ReLU after the pred convs


def test_anchors_square_quirk():
    for square in (False, True):
        m = build_model(tiny_cfg(SQUARE_ANCHORS=square))
        feats = [torch.zeros(1, 1, 16, 16)]
        (a,) = m.anchor_generator.forward_for_image_size(feats, (128, 128))
        wh = a.tensor[:3, 2:] - a.tensor[:3, :2]
        s = 8.0
        if square:
            exp = torch.tensor([[s, s], [s * 0.5**0.5] * 2, [s * 2**0.5] * 2])
        else:  # D2 h/w ratios [1, 2, 0.5]
            exp = torch.tensor([[s, s], [s * 0.5**0.5, s * 2**0.5], [s * 2**0.5, s * 0.5**0.5]])
        torch.testing.assert_close(wh, exp)
        torch.testing.assert_close(a.tensor[0, :2] + wh[0] / 2, torch.tensor([4.0, 4.0]))


def test_train_losses_bitmask_polygon_grayscale(model):
    gray = make_input(seed=2)
    gray["image"] = gray["image"][:1]
    losses = _losses(model, [make_input(), make_input(polygons=True, seed=1), gray])
    sum(losses.values()).backward()
    assert model.head.coeff_pred.weight.grad.abs().sum() > 0
    assert model.proto_net.net[0].weight.grad.abs().sum() > 0


def test_no_annotations_and_tiny_boxes(model):
    empty = make_input(boxes=(), classes=())
    tiny = make_input(boxes=((5, 5, 7, 30), (40, 40, 42, 42)), classes=(0, 1))
    for inputs in ([empty], [tiny], [empty, tiny]):
        losses = _losses(model, inputs)
        assert losses["loss_box"] == 0 and losses["loss_mask"] == 0  # tiny boxes were dropped
    losses = _losses(model, [empty, make_input()])
    assert losses["loss_box"] > 0 and losses["loss_mask"] > 0


def test_many_instances_sample_masks():
    """MASKS_TO_TRAIN: with more positives than that, the mask loss is computed on a random
    sample of that many, scaled by positives / sampled (the original's ``masks_to_train``)."""
    m = build_model(tiny_cfg(MASKS_TO_TRAIN=10))
    rng = np.random.RandomState(0)
    xy = rng.randint(0, 80, size=(130, 2))
    boxes = [(x, y, x + 12 + rng.randint(20), y + 12 + rng.randint(20)) for x, y in xy]
    _losses(m, [make_input(boxes=boxes, classes=rng.randint(0, 3, 130).tolist())])

    # 30 positive anchors over 4 GT masks: only the sampled 10 receive a mask-loss gradient
    g = torch.Generator().manual_seed(0)
    gt_boxes = torch.tensor(
        [[0.1, 0.1, 0.5, 0.6], [0.4, 0.2, 0.9, 0.7], [0.0, 0.5, 0.4, 1.0], [0.3, 0.3, 0.8, 0.9]]
    )
    gt_masks = torch.zeros(4, 64, 64)
    for i, (x1, y1, x2, y2) in enumerate((gt_boxes * 64).long().tolist()):
        gt_masks[i, y1:y2, x1:x2] = 1.0
    tgt = [
        {
            "boxes": gt_boxes,
            "classes": torch.tensor([0, 1, 2, 0]),
            "masks": gt_masks,
            "crowd_boxes": None,
        }
    ]
    cls_t = torch.zeros(1, 40, dtype=torch.long)
    cls_t[0, :30] = 1
    matches = torch.arange(40)[None] % 4
    protos = torch.rand(1, 8, 16, 16, generator=g)
    coeffs = torch.randn(1, 40, 8, generator=g, requires_grad=True)
    sampled, _ = m.loss._mask_loss(tgt, cls_t, matches, coeffs, protos)
    (grad,) = torch.autograd.grad(sampled, coeffs)
    used = grad[0].abs().sum(1) > 0
    assert used.sum() == 10 and not used[30:].any()
    # ... and the loss is theirs alone, times 30 / 10
    every = YOLACTLoss(tiny_cfg(MASKS_TO_TRAIN=100))
    only_used = torch.where(used[None], cls_t, torch.zeros_like(cls_t))
    ref, _ = every._mask_loss(tgt, only_used, matches, coeffs, protos)
    torch.testing.assert_close(sampled, ref * 3.0)
    (grad,) = torch.autograd.grad(every._mask_loss(tgt, cls_t, matches, coeffs, protos)[0], coeffs)
    assert (grad[0, :30].abs().sum(1) > 0).all()  # below MASKS_TO_TRAIN every positive counts


def test_mask_targets_binarised_or_soft():
    """The original's targets are bilinear + binarised; MASK_SOFT_TARGETS gives the covered
    fraction of each prototype pixel, whose upsampled 0.5 level follows a sub-pixel boundary."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disks = torch.stack(
        [
            ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)
            for cy, cx, r in [(20.3, 30.7, 5.0), (41.0, 17.5, 7.5)]
        ]
    )
    hard, soft = (
        downsample_mask_targets(disks, (16, 16)),
        downsample_mask_targets(disks, (16, 16), soft=True),
    )
    assert hard.shape == soft.shape == (2, 16, 16)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    assert ((soft > 0) & (soft < 1)).any() and (soft >= 0).all() and (soft <= 1).all()
    # the covered fraction: area is preserved exactly at an integer stride
    torch.testing.assert_close(soft.sum(dim=(1, 2)) * 16, disks.sum(dim=(1, 2)).float())

    # the mask the loss asks for, decoded as at test time (bilinear up, > 0.5), fits the object better
    def iou(t):
        up = (
            torch.nn.functional.interpolate(
                t[None], (64, 64), mode="bilinear", align_corners=False
            )[0]
            > 0.5
        )
        return ((up & disks).sum(dim=(1, 2)) / (up | disks).sum(dim=(1, 2))).tolist()

    assert all(s > h for s, h in zip(iou(soft), iou(hard)))
    assert downsample_mask_targets(
        torch.zeros(0, 64, 64, dtype=torch.bool), (16, 16), soft=True
    ).shape == (0, 16, 16)
    # wired from the config into the loss, and the loss trains with it
    m = build_model(tiny_cfg(MASK_SOFT_TARGETS=True))
    assert (
        m.loss.soft_mask_targets
        and not build_model(tiny_cfg(MASK_SOFT_TARGETS=False)).loss.soft_mask_targets
    )
    assert _losses(m, [make_input()])["loss_mask"] > 0


def test_mask_iou_targets_loss_and_rescoring():
    """YOLACT++ re-scoring: targets are the IoU of the binarised cropped prediction with the
    prototype-size GT (only for GT masks above MASK_IOU_MIN_GT_AREA), the loss trains the net
    and reaches the masks, and test scores are class scores x the predicted IoU."""
    cfg = tiny_cfg(MASK_IOU_ON=True, MASK_IOU_NET_CHANNELS=[4, 8], MASK_IOU_MIN_GT_AREA=10.0)
    loss = YOLACTLoss(cfg)
    # one image, 16 x 16 prototypes, two positives: GT boxes are 8x8 (64 px) and 2x2 (4 px)
    boxes = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 0.125, 0.125]])
    gt = torch.zeros(2, 16, 16)
    gt[0, 4:12, 4:12] = 1
    gt[1, 0:2, 0:2] = 1
    protos = torch.zeros(1, 2, 16, 16)
    protos[0, 0, 4:12, 4:8] = 10.0  # the left half of GT 0 (its IoU: 0.5)
    protos[0, 1] = 10.0
    coeffs = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], requires_grad=True)
    cls_t = torch.tensor([[2, 3]])
    tgt = [{"boxes": boxes, "classes": torch.tensor([1, 2]), "masks": gt, "crowd_boxes": None}]
    _, (inputs, iou_t, classes) = loss._mask_loss(
        tgt, cls_t, torch.tensor([[0, 1]]), coeffs, protos
    )
    assert inputs.shape == (1, 16, 16) and classes.tolist() == [1]
    torch.testing.assert_close(iou_t, torch.tensor([0.5]))
    net = MaskIoUNet(cfg)
    out = loss._mask_iou_loss(net, inputs, iou_t, classes)
    assert out > 0
    # the masks are not detached (as the original): the coefficients are in the graph
    torch.autograd.grad(out, [coeffs] + list(net.parameters()), allow_unused=False)
    # nothing large enough: a zero loss that still touches the net's parameters
    zero = loss._mask_iou_loss(net, inputs[:0], iou_t[:0], classes[:0])
    assert zero.item() == 0.0 and zero.requires_grad

    m = build_model(cfg)
    m.train()
    with EventStorage():
        losses = m([make_input()])
    assert set(losses) == {"loss_box", "loss_cls", "loss_mask", "loss_sem_seg", "loss_mask_iou"}
    assert all(torch.isfinite(v) for v in losses.values())
    m.eval()
    x = make_input()
    with torch.no_grad():
        (res,) = m([x])
        m.mask_iou_net, net = None, m.mask_iou_net
        (raw,) = m([x])
    inst, ref = res["instances"], raw["instances"]
    assert len(inst) == len(ref) > 0 and torch.equal(inst.pred_masks, ref.pred_masks)
    images = m.preprocess_image([x])
    m.mask_iou_net = net
    with torch.no_grad():
        _, protos, deltas, logits, coeffs, anchors = m.forward_raw(images)
        _, classes, _, keep = m.detect(deltas[0], torch.softmax(logits[0], -1), anchors)
        rel = ref.pred_boxes.tensor / torch.tensor([112.0, 96.0, 112.0, 96.0])
        iou = net(crop_masks(prototype_masks(protos[0], coeffs[0, keep]), rel)[:, None])
    torch.testing.assert_close(inst.scores, ref.scores * iou.gather(1, classes[:, None]).squeeze(1))
    m.score_threshold = 1.0  # no detections: the re-scoring runs on an empty batch
    with torch.no_grad():
        (res,) = m([x])
    assert len(res["instances"]) == 0 and res["instances"].scores.shape == (0,)
    # the unpadded stride-2 convs need prototypes of >= 2^(n+1) - 1 px
    with pytest.raises(ValueError, match="MASK_IOU_NET_CHANNELS"):
        build_model(tiny_cfg(MASK_IOU_ON=True))


def test_missing_instances_and_bad_images(model):
    x = make_input()
    del x["instances"]
    model.train()
    with EventStorage(), pytest.raises(ValueError, match="img0.png"):
        model([x])
    bad = make_input(seed=5)
    bad["image"] = bad["image"][:2]
    model.eval()
    with pytest.raises(ValueError, match="img5.png"):
        model([bad])


def test_inference_fields_and_empty():
    torch.manual_seed(0)
    m = build_model(tiny_cfg()).eval()
    x = make_input()
    x["height"], x["width"] = 60, 70
    with torch.no_grad():
        (res,) = m([x])
    inst = res["instances"]
    assert inst.image_size == (60, 70)
    assert (
        len(inst) > 0
        and inst.pred_masks.shape[1:] == (60, 70)
        and inst.pred_masks.dtype == torch.bool
    )
    assert inst.pred_boxes.tensor[:, 2].max() <= 70 and inst.pred_boxes.tensor[:, 3].max() <= 60
    m.score_threshold = 1.0
    with torch.no_grad():
        (res,) = m([x])
    inst = res["instances"]
    assert len(inst) == 0
    assert inst.pred_masks.shape == (0, 60, 70) and inst.pred_masks.dtype == torch.bool
    assert (
        inst.pred_boxes.tensor.shape == (0, 4)
        and inst.scores.shape == (0,)
        and inst.pred_classes.shape == (0,)
    )
    m.nms_type = "standard"
    m.score_threshold = 0.05
    with torch.no_grad():
        (res,) = m([x])
    assert res["instances"].pred_masks.dtype == torch.bool
    # standard NMS: D2's batched_nms over the (anchor, class) pairs above the score threshold,
    # the top-k per class, then the best max_detections; at IoU 0.05 suppression is frequent
    # enough that Fast NMS (an already-suppressed box suppresses others) keeps other boxes
    m.nms_threshold = 0.05
    with torch.no_grad():
        (res,) = m([x])
        m.nms_type = "fast"
        (res_fast,) = m([x])
        _, _, deltas, logits, _, anchors = m.forward_raw(m.preprocess_image([x]))
    probs = torch.softmax(logits[0], -1)[:, 1:]
    boxes = m.box2box_transform.apply_deltas(deltas[0], anchors.tensor)
    idx, classes = [], []
    for c in range(probs.shape[1]):
        above = torch.nonzero(probs[:, c] > m.score_threshold).squeeze(1)
        idx.append(above[probs[above, c].argsort(descending=True)[: m.topk_candidates]])
        classes.append(torch.full_like(idx[-1], c))
    idx, classes = torch.cat(idx), torch.cat(classes)
    scores = probs[idx, classes]
    keep = batched_nms(boxes[idx], scores, classes, m.nms_threshold)[: m.max_detections_per_image]
    inst = res["instances"]
    assert len(inst) == len(keep) > 1 and len(set(classes[keep].tolist())) > 1
    assert torch.equal(inst.pred_classes, classes[keep])
    torch.testing.assert_close(inst.scores, scores[keep])
    ref_boxes = Boxes(boxes[idx[keep]] / m.input_size * torch.tensor([70.0, 60.0, 70.0, 60.0]))
    ref_boxes.clip((60, 70))
    torch.testing.assert_close(inst.pred_boxes.tensor, ref_boxes.tensor)
    fast = res_fast["instances"]
    assert len(fast) != len(keep) or not torch.equal(fast.pred_boxes.tensor, inst.pred_boxes.tensor)


def test_fast_nms_differs_from_greedy_on_chains():
    # A > B > C, A~B and B~C overlap, A and C do not: greedy NMS keeps A and C, Fast NMS lets
    # the already-suppressed B suppress C (the paper's accepted approximation)
    boxes = torch.tensor([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]], dtype=torch.float32)
    scores = torch.tensor([[0.9, 0.8, 0.7]])
    idx, cls, sc = fast_nms(boxes, scores, iou_threshold=0.3)
    assert idx.tolist() == [0] and cls.tolist() == [0]
    idx, cls, sc = standard_nms(boxes, scores, iou_threshold=0.3)
    assert sorted(idx.tolist()) == [0, 2]
    # per class: the same boxes in another class are not suppressed; global top-k by score
    idx, cls, sc = fast_nms(
        boxes,
        torch.tensor([[0.9, 0.8, 0.7], [0.1, 0.2, 0.95]]),
        iou_threshold=0.3,
        max_detections=2,
    )
    assert idx.tolist() == [2, 0] and cls.tolist() == [1, 0]
    idx, _, _ = fast_nms(boxes[:0], torch.zeros(2, 0))
    assert idx.numel() == 0


def test_standard_nms_keeps_classes_apart_with_negative_coordinates():
    """Unclipped decoded boxes reach past the image's top-left corner; a box of another class
    must never suppress (D2's batched_nms offsets assume coordinates >= 0)."""
    boxes = torch.tensor([[60.0, 60.0, 110.0, 110.0], [-60.0, -60.0, 5.0, 5.0]])
    scores = torch.tensor([[0.9, 0.0], [0.0, 0.8]])
    idx, cls, _ = standard_nms(boxes, scores, iou_threshold=0.3, score_threshold=0.05)
    assert idx.tolist() == [0, 1] and cls.tolist() == [0, 1]


def test_fast_nms_orders_tied_scores_by_candidate_index():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [80.0, 0, 90, 10]])
    scores = torch.tensor([[0.5, 0.5, 0.5]])
    idx, _, _ = fast_nms(boxes, scores, iou_threshold=0.5)
    assert idx.tolist() == [0, 1, 2]


def test_crop_masks_matches_assemble_masks():
    g = torch.Generator().manual_seed(0)
    protos = torch.rand(4, 20, 24, generator=g)
    coeffs = torch.rand(5, 4, generator=g) * 2 - 1
    boxes = torch.tensor(
        [
            [0.1, 0.2, 0.5, 0.6],
            [0.0, 0.0, 1.0, 1.0],
            [0.33, 0.41, 0.37, 0.45],
            [0.9, 0.1, 0.6, 0.3],
            [0.2, 0.2, 0.21, 0.9],
        ]
    )
    ours = crop_masks(prototype_masks(protos, coeffs), boxes) > 0.5
    ref = assemble_masks(protos, coeffs, boxes, (20, 24))
    assert torch.equal(ours, ref)
    m = torch.rand(2, 8, 8, requires_grad=True)
    crop_masks(m, torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])).sum().backward()
    assert m.grad[0, :5, :5].eq(1).all() and m.grad[0, 6:, 6:].eq(0).all()


def test_forced_matching_and_crowd():
    loss = YOLACTLoss(tiny_cfg())
    anchors = Boxes(
        torch.tensor(
            [[0, 0, 10, 10], [0, 0, 40, 40], [50, 50, 60, 60], [100, 100, 140, 140]],
            dtype=torch.float32,
        )
    )
    gt = Boxes(
        torch.tensor([[0, 0, 11, 11], [45, 45, 70, 70]], dtype=torch.float32)
    )  # 2nd: IoU 0.16 with anchor 2
    cls_t, matches = loss.label_anchors(anchors, gt, torch.tensor([1, 2]), None)
    assert (
        cls_t.tolist() == [2, 0, 3, 0] and matches[2] == 1
    )  # the weak GT is forced onto its best anchor
    crowd = Boxes(torch.tensor([[95, 95, 150, 150]], dtype=torch.float32))
    cls_t, _ = loss.label_anchors(anchors, gt, torch.tensor([1, 2]), crowd)
    assert cls_t.tolist() == [2, 0, 3, -1]
    m, lab = match_with_forced_best(Matcher([0.4, 0.5], [0, -1, 1]), torch.zeros(0, 4))
    assert lab.tolist() == [0, 0, 0, 0]


def test_ohem_three_negatives_per_positive():
    loss = YOLACTLoss(tiny_cfg())
    logits = torch.randn(1, 50, 4)
    cls_t = torch.zeros(1, 50, dtype=torch.long)
    cls_t[0, :2] = 1
    cls_t[0, 2:5] = -1
    pos = cls_t > 0
    ref_rank = (torch.logsumexp(logits, 2) - logits[:, :, 0])[0, 5:]
    hard = (ref_rank.topk(6).indices + 5).tolist()
    sel = []
    orig = torch.nn.functional.cross_entropy

    def spy(x, t, **kw):
        sel.append((x, t))
        return orig(x, t, **kw)

    torch.nn.functional.cross_entropy = spy
    try:
        out = loss._ohem_cls_loss(logits, cls_t, pos, pos.sum(1))
    finally:
        torch.nn.functional.cross_entropy = orig
    mask = torch.zeros(50, dtype=torch.bool)
    mask[:2] = True
    mask[hard] = True
    # one cross-entropy over the 2 positives and the 6 hardest negatives (never the ignored 2:5)
    assert len(sel) == 1
    assert torch.equal(sel[0][0], logits[0, mask]) and torch.equal(sel[0][1], cls_t[0, mask])
    torch.testing.assert_close(out, orig(logits[0, mask], cls_t[0, mask], reduction="sum"))


def test_head_anchor_count_must_match_the_generator():
    from d2ext.modeling.yolact import YOLACTHead
    from d2ext.modeling.yolact.meta_arch import YOLACT

    cfg = tiny_cfg()
    kwargs = YOLACT.from_config(cfg)
    shapes = [kwargs["backbone"].output_shape()[f] for f in kwargs["head_in_features"]]
    kwargs["head"] = YOLACTHead(cfg, shapes, 2)  # the generator makes 3 (aspect ratios) per cell
    with pytest.raises(ValueError, match="head predicts 2 anchors per location"):
        YOLACT(**kwargs)
