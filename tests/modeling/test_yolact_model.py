"""YOLACT on tiny CPU inputs: shapes, losses on odd GT, inference outputs, Fast NMS, crop."""
import copy
import os

import numpy as np
import pytest
import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.modeling.matcher import Matcher
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from d2ext import add_d2ext_config
from d2ext.layers import assemble_masks
from d2ext.modeling.yolact import MaskIoUNet, ProtoNet, YOLACTLoss, crop_masks, fast_nms, standard_nms
from d2ext.modeling.yolact.loss import downsample_mask_targets, match_with_forced_best

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def tiny_cfg(size=128, **yolact):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "YOLACT", "yolact_R_18_synth.yaml"))
    cfg.MODEL.YOLACT.INPUT_SIZE = size
    cfg.MODEL.YOLACT.NUM_CLASSES = 3
    cfg.MODEL.YOLACT.FPN_OUT_CHANNELS = 32
    cfg.MODEL.YOLACT.PROTO_CONV_DIM = 32
    cfg.MODEL.YOLACT.HEAD_CONV_DIM = 32
    cfg.MODEL.YOLACT.NUM_PROTOTYPES = 8
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[8], [16], [32], [64], [128]]
    cfg.MODEL.YOLACT.SCALE_JITTER = []  # tests that want it set it
    for k, v in yolact.items():
        cfg.MODEL.YOLACT[k] = v
    return cfg


def make_input(h=96, w=112, boxes=((10, 12, 50, 60), (40, 30, 100, 90)), classes=(0, 2), polygons=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = (torch.rand(3, h, w, generator=g) * 255).to(torch.uint8)
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    if polygons:
        inst.gt_masks = PolygonMasks([[np.array([x1, y1, x2, y1, x2, y2, x1, y2], dtype=np.float64)] for x1, y1, x2, y2 in boxes])
    else:
        m = torch.zeros(len(boxes), h, w, dtype=torch.bool)
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            m[i, int(y1):int(y2), int(x1):int(x2)] = True
        inst.gt_masks = BitMasks(m)
    return {"image": image, "instances": inst, "height": h, "width": w, "file_name": f"img{seed}.png"}


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
    m = build_model(tiny_cfg(MASKS_TO_TRAIN=10))
    rng = np.random.RandomState(0)
    xy = rng.randint(0, 80, size=(130, 2))
    boxes = [(x, y, x + 12 + rng.randint(20), y + 12 + rng.randint(20)) for x, y in xy]
    _losses(m, [make_input(boxes=boxes, classes=rng.randint(0, 3, 130).tolist())])


def test_mask_targets_binarised_or_soft():
    """The original's targets are bilinear + binarised; MASK_SOFT_TARGETS gives the covered
    fraction of each prototype pixel, whose upsampled 0.5 level follows a sub-pixel boundary."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disks = torch.stack([((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) for cy, cx, r in [(20.3, 30.7, 5.0), (41.0, 17.5, 7.5)]])
    hard, soft = downsample_mask_targets(disks, (16, 16)), downsample_mask_targets(disks, (16, 16), soft=True)
    assert hard.shape == soft.shape == (2, 16, 16)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    assert ((soft > 0) & (soft < 1)).any() and (soft >= 0).all() and (soft <= 1).all()
    # the covered fraction: area is preserved exactly at an integer stride
    torch.testing.assert_close(soft.sum(dim=(1, 2)) * 16, disks.sum(dim=(1, 2)).float())
    # the mask the loss asks for, decoded as at test time (bilinear up, > 0.5), fits the object better
    def iou(t):
        up = torch.nn.functional.interpolate(t[None], (64, 64), mode="bilinear", align_corners=False)[0] > 0.5
        return ((up & disks).sum(dim=(1, 2)) / (up | disks).sum(dim=(1, 2))).tolist()
    assert all(s > h for s, h in zip(iou(soft), iou(hard)))
    assert downsample_mask_targets(torch.zeros(0, 64, 64, dtype=torch.bool), (16, 16), soft=True).shape == (0, 16, 16)
    # wired from the config into the loss, and the loss trains with it
    m = build_model(tiny_cfg(MASK_SOFT_TARGETS=True))
    assert m.loss.soft_mask_targets and not build_model(tiny_cfg(MASK_SOFT_TARGETS=False)).loss.soft_mask_targets
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
    _, (inputs, iou_t, classes) = loss._mask_loss(tgt, cls_t, torch.tensor([[0, 1]]), coeffs, protos)
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
        iou = net(crop_masks(torch.sigmoid(torch.einsum("khw,nk->nhw", protos[0], coeffs[0, keep])), rel)[:, None])
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
    m = build_model(tiny_cfg()).eval()
    x = make_input()
    x["height"], x["width"] = 60, 70
    with torch.no_grad():
        (res,) = m([x])
    inst = res["instances"]
    assert inst.image_size == (60, 70)
    assert len(inst) > 0 and inst.pred_masks.shape[1:] == (60, 70) and inst.pred_masks.dtype == torch.bool
    assert inst.pred_boxes.tensor[:, 2].max() <= 70 and inst.pred_boxes.tensor[:, 3].max() <= 60
    m.score_threshold = 1.0
    with torch.no_grad():
        (res,) = m([x])
    inst = res["instances"]
    assert len(inst) == 0
    assert inst.pred_masks.shape == (0, 60, 70) and inst.pred_masks.dtype == torch.bool
    assert inst.pred_boxes.tensor.shape == (0, 4) and inst.scores.shape == (0,) and inst.pred_classes.shape == (0,)
    m.nms_type = "standard"
    m.score_threshold = 0.05
    with torch.no_grad():
        (res,) = m([x])
    assert res["instances"].pred_masks.dtype == torch.bool


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
    idx, cls, sc = fast_nms(boxes, torch.tensor([[0.9, 0.8, 0.7], [0.1, 0.2, 0.95]]), iou_threshold=0.3, max_detections=2)
    assert idx.tolist() == [2, 0] and cls.tolist() == [1, 0]
    idx, _, _ = fast_nms(boxes[:0], torch.zeros(2, 0))
    assert idx.numel() == 0


def test_crop_masks_matches_assemble_masks():
    g = torch.Generator().manual_seed(0)
    protos = torch.rand(4, 20, 24, generator=g)
    coeffs = torch.rand(5, 4, generator=g) * 2 - 1
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.33, 0.41, 0.37, 0.45], [0.9, 0.1, 0.6, 0.3], [0.2, 0.2, 0.21, 0.9]])
    ours = crop_masks(torch.sigmoid(torch.einsum("khw,nk->nhw", protos, coeffs)), boxes) > 0.5
    ref = assemble_masks(protos, coeffs, boxes, (20, 24))
    assert torch.equal(ours, ref)
    m = torch.rand(2, 8, 8, requires_grad=True)
    crop_masks(m, torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])).sum().backward()
    assert m.grad[0, :5, :5].eq(1).all() and m.grad[0, 6:, 6:].eq(0).all()


def test_forced_matching_and_crowd():
    loss = YOLACTLoss(tiny_cfg())
    anchors = Boxes(torch.tensor([[0, 0, 10, 10], [0, 0, 40, 40], [50, 50, 60, 60], [100, 100, 140, 140]], dtype=torch.float32))
    gt = Boxes(torch.tensor([[0, 0, 11, 11], [45, 45, 70, 70]], dtype=torch.float32))  # 2nd: IoU 0.16 with anchor 2
    cls_t, matches = loss.label_anchors(anchors, gt, torch.tensor([1, 2]), None)
    assert cls_t.tolist() == [2, 0, 3, 0] and matches[2] == 1  # the weak GT is forced onto its best anchor
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
        sel.append(t)
        return orig(x, t, **kw)

    torch.nn.functional.cross_entropy = spy
    try:
        out = loss._ohem_cls_loss(logits, cls_t, pos, pos.sum(1))
    finally:
        torch.nn.functional.cross_entropy = orig
    mask = torch.zeros(50, dtype=torch.bool)
    mask[:2] = True
    mask[hard] = True
    torch.testing.assert_close(out, orig(logits[0, mask], cls_t[0, mask], reduction="sum"))


def test_dataset_mapper_stretch_and_crowd(tmp_path):
    from PIL import Image

    from detectron2.structures import BoxMode

    from d2ext.data import build_train_mapper

    path = str(tmp_path / "a.png")
    Image.fromarray(np.zeros((60, 90, 3), np.uint8)).save(path)
    anns = [
        {"bbox": [10, 10, 30, 20], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 0,
         "segmentation": [[10, 10, 40, 10, 40, 30, 10, 30]]},
        {"bbox": [45, 0, 45, 60], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 1,
         "segmentation": [[45, 0, 90, 0, 90, 60, 45, 60]]},
    ]
    cfg = tiny_cfg()
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.MODEL.YOLACT.SSD_AUGMENTATION = False  # deterministic: resize only
    mapper = build_train_mapper(cfg)
    out = mapper({"file_name": path, "height": 60, "width": 90, "image_id": 0, "annotations": anns})
    assert out["image"].shape == (3, 128, 128)
    inst = out["instances"]
    assert len(inst) == 1 and isinstance(inst.gt_masks, BitMasks) and inst.gt_masks.tensor.shape[1:] == (128, 128)
    torch.testing.assert_close(out["crowd_boxes"].tensor, torch.tensor([[64.0, 0.0, 128.0, 128.0]]))
    m = build_model(cfg)
    with EventStorage():
        losses = m([out])
    assert all(torch.isfinite(v) for v in losses.values())


def _shapes_image(tmp_path, h=120, w=160):
    """A flat image with three rectangles (polygons) and their annotations."""
    from PIL import Image

    from detectron2.structures import BoxMode

    img = np.full((h, w, 3), 90, np.uint8)
    rects = [(10, 10, 50, 40), (70, 30, 140, 100), (20, 70, 45, 110)]
    anns = []
    for k, (x1, y1, x2, y2) in enumerate(rects):
        img[y1:y2, x1:x2] = (40 * k + 60, 200 - 40 * k, 120)
        anns.append({"bbox": [x1, y1, x2 - x1, y2 - y1], "bbox_mode": BoxMode.XYWH_ABS, "category_id": k,
                     "iscrowd": 0, "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]]})
    path = str(tmp_path / "shapes.png")
    Image.fromarray(img).save(path)
    return {"file_name": path, "height": h, "width": w, "image_id": 0, "annotations": anns}


def test_ssd_augmentation_keeps_boxes_masks_and_images_consistent(tmp_path):
    """The original's SSD augmentation through D2's annotation code: every output box is inside
    the S x S image and tight around its mask, objects only disappear through the crop, and the
    photometric / zoom-out / crop steps all happen over a few draws."""
    from d2ext.data import build_train_mapper

    record = _shapes_image(tmp_path)
    default = get_cfg()
    add_d2ext_config(default)
    assert default.MODEL.YOLACT.SSD_AUGMENTATION  # the original's recipe is the default
    cfg = tiny_cfg(size=96)
    assert not cfg.MODEL.YOLACT.SSD_AUGMENTATION  # ... except in the CPU-budget synthetic config
    cfg.MODEL.YOLACT.SSD_AUGMENTATION = True
    mapper = build_train_mapper(cfg)
    counts, means = set(), set()
    for seed in range(40):
        np.random.seed(seed)
        out = mapper(copy.deepcopy(record))
        assert out["image"].shape == (3, 96, 96) and torch.isfinite(out["image"].float()).all()
        inst = out["instances"]
        counts.add(len(inst))
        means.add(round(float(out["image"].float().mean()), 1))
        boxes = inst.gt_boxes.tensor
        assert (boxes >= 0).all() and (boxes <= 96).all()
        for box, mask in zip(boxes, inst.gt_masks.tensor):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert len(ys) > 0
            # the mask lies within its (clipped) box, up to the resize's rounding
            assert xs.min() >= box[0] - 2 and xs.max() <= box[2] + 1 and ys.min() >= box[1] - 2 and ys.max() <= box[3] + 1
    assert max(counts) == 3 and min(counts) < 3  # the crop drops objects whose centre it leaves out
    assert len(means) > 10  # photometric distortion and zoom-out change the pixels


def test_ssd_augmentation_parts():
    from detectron2.data import transforms as T

    from d2ext.modeling.yolact.augmentation import Expand, PhotometricDistort, RandomSampleCrop, centers_inside

    rng_img = np.random.default_rng(0).integers(0, 255, size=(50, 80, 3)).astype(np.uint8)
    # zoom-out: the canvas is filled with the per-channel mean, the image copied at the offset
    np.random.seed(1)
    t = Expand(fill=[1.0, 2.0, 3.0], prob=1.0).get_transform(rng_img)
    out = t.apply_image(rng_img)
    assert out.shape[0] >= 50 and out.shape[1] >= 80 and out.dtype == np.float32
    assert np.array_equal(out[t.y0 : t.y0 + 50, t.x0 : t.x0 + 80], rng_img)
    if t.y0 > 0:
        assert (out[0, 0] == [1.0, 2.0, 3.0]).all()
    np.testing.assert_allclose(t.apply_box(np.array([[0.0, 0.0, 10.0, 10.0]])), [[t.x0, t.y0, t.x0 + 10, t.y0 + 10]])
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
    hsv_only = PhotometricDistort(brightness_delta=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue_delta=0.0)
    for _ in range(10):  # identity parameters: the HSV round trip keeps the pixels
        t = hsv_only.get_transform(rng_img)
        np.testing.assert_allclose(np.asarray(t.apply_image(rng_img), np.float32), rng_img, atol=0.05)


def test_scale_jitter_rescales_objects_and_keeps_annotations_consistent(tmp_path):
    """MODEL.YOLACT.SCALE_JITTER: D2's ResizeScale + FixedSizeCrop before the S x S stretch;
    objects change size, boxes stay tight around their masks, the padding is the mean pixel."""
    from d2ext.data import build_train_mapper

    record = _shapes_image(tmp_path)
    cfg = tiny_cfg(size=96)
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.MODEL.YOLACT.SCALE_JITTER = [0.5, 1.5]
    mapper = build_train_mapper(cfg)
    widths, padded = set(), 0
    for seed in range(30):
        np.random.seed(seed)
        out = mapper(copy.deepcopy(record))
        assert out["image"].shape == (3, 96, 96)
        inst = out["instances"]
        if len(inst) == 0:  # the crop cut every object's centre away
            continue
        boxes = inst.gt_boxes.tensor
        assert (boxes >= 0).all() and (boxes <= 96).all()
        for box, mask in zip(boxes, inst.gt_masks.tensor):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert xs.min() >= box[0] - 1 and xs.max() <= box[2] and ys.min() >= box[1] - 1 and ys.max() <= box[3]
        widths.add(round(float(boxes[0, 2] - boxes[0, 0])))
        if (out["image"][:, -1, -1] == 127).all():  # scale < 1: bottom-right padding, the mean 127.5 as uint8
            padded += 1
    assert len(widths) > 5 and padded > 0
    cfg.MODEL.YOLACT.SCALE_JITTER = [1.5, 0.5]
    with pytest.raises(ValueError, match="SCALE_JITTER"):
        build_train_mapper(cfg)


def test_mapper_image_without_annotations(tmp_path):
    from d2ext.data import build_train_mapper

    record = _shapes_image(tmp_path)
    record["annotations"] = []
    mapper = build_train_mapper(tiny_cfg(size=64, SSD_AUGMENTATION=True))
    for seed in range(5):
        np.random.seed(seed)
        out = mapper(copy.deepcopy(record))
        assert out["image"].shape == (3, 64, 64) and len(out["instances"]) == 0


def test_crop_drops_objects_whose_centre_it_cuts_away(tmp_path):
    """After a crop, objects with their centre outside are dropped (the original), not clipped
    (D2); without a crop nothing is dropped."""
    from detectron2.data import transforms as T

    from d2ext.modeling.yolact import YOLACTDatasetMapper

    class FixedCrop(T.Augmentation):
        def get_transform(self, image):
            return T.CropTransform(0, 0, 60, 60)

    record = _shapes_image(tmp_path)  # boxes (10,10,50,40), (70,30,140,100), (20,70,45,110)
    record["annotations"][1]["bbox"] = [40, 30, 100, 70]  # overlaps the crop, centre (90, 65) outside
    kw = dict(is_train=True, image_format="BGR", use_instance_mask=True, instance_mask_format="bitmask")
    cropped = YOLACTDatasetMapper(augmentations=[FixedCrop()], **kw)(copy.deepcopy(record))["instances"]
    assert cropped.gt_classes.tolist() == [0]  # (20,70,45,110) is outside, (40,30,..) centre outside
    kept = YOLACTDatasetMapper(augmentations=[T.NoOpTransform()], **kw)(copy.deepcopy(record))["instances"]
    assert kept.gt_classes.tolist() == [0, 1, 2]
