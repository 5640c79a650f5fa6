"""DensePose chart branch inside a tiny R-18 FPN Mask R-CNN on CPU: a training step on random
images with DensePose ground truth (instances without data, points outside the proposal, a
background point, a missing coarse map), zero losses on the graph without any data, inference
with ``pred_densepose`` and per-box chart results, and a clear error on a bad part index."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from d2ext import add_d2ext_config
from d2ext.modeling.densepose import (
    DensePoseChartPredictorOutput,
    box_xyxy_to_int_xywh,
    densepose_chart_results,
)
from d2ext.structures import DensePoseData, DensePoseList

H, W = 96, 128
LOSSES = ("loss_densepose_U", "loss_densepose_V", "loss_densepose_I", "loss_densepose_S")


def tiny_cfg():
    cfg = get_cfg()
    add_d2ext_config(cfg)
    m = cfg.MODEL
    m.DEVICE = "cpu"
    m.BACKBONE.NAME = "build_resnet_fpn_backbone"
    m.BACKBONE.FREEZE_AT = 0
    m.RESNETS.DEPTH = 18
    m.RESNETS.RES2_OUT_CHANNELS = 64
    m.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    m.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    m.FPN.OUT_CHANNELS = 32
    m.ANCHOR_GENERATOR.SIZES = [[16], [32], [64], [128], [256]]
    m.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    m.RPN.POST_NMS_TOPK_TRAIN = m.RPN.POST_NMS_TOPK_TEST = 50
    m.RPN.PRE_NMS_TOPK_TRAIN = m.RPN.PRE_NMS_TOPK_TEST = 200
    m.ROI_HEADS.NAME = "DensePoseROIHeads"
    m.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    m.ROI_HEADS.NUM_CLASSES = 1
    m.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    m.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    m.ROI_HEADS.DETECTIONS_PER_IMAGE = 5
    m.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    m.ROI_BOX_HEAD.NUM_FC = 2
    m.ROI_BOX_HEAD.FC_DIM = 64
    m.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    m.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
    m.ROI_MASK_HEAD.NUM_CONV = 1
    m.ROI_MASK_HEAD.CONV_DIM = 16
    m.MASK_ON = True
    m.DENSEPOSE_ON = True
    dp = m.ROI_DENSEPOSE_HEAD
    dp.NUM_STACKED_CONVS = 2
    dp.CONV_HEAD_DIM = 32
    dp.DECODER_CONV_DIMS = 16
    dp.DECODER_NUM_CLASSES = 32
    dp.POOLER_RESOLUTION = 14
    dp.HEATMAP_SIZE = 56
    return cfg


def densepose(n: int, g: torch.Generator, segm: bool = True, part=None) -> DensePoseData:
    i = torch.randint(0, 25, (n,), generator=g)
    x = torch.rand(n, generator=g) * 256
    y = torch.rand(n, generator=g) * 256
    if n >= 3:
        i[0] = 0  # a background point: only the I loss sees it
        x[2], y[2] = 255.99, 0.0  # on the far edge: outside any proposal smaller than the box
    if part is not None:
        i[1] = part
    s = torch.randint(0, 15, (256, 256), generator=g, dtype=torch.uint8) if segm else None
    return DensePoseData(x, y, i, torch.rand(n, generator=g), torch.rand(n, generator=g), s)


def batch(items, seed: int = 0):
    """One image per list of DensePose annotations (None = a person without data)."""
    g = torch.Generator().manual_seed(seed)
    inputs = []
    for dps in items:
        boxes = []
        for _ in dps:
            x0, y0 = (
                torch.randint(0, W // 2, (1,), generator=g),
                torch.randint(0, H // 2, (1,), generator=g),
            )
            boxes.append([x0.item(), y0.item(), x0.item() + 40.0, y0.item() + 36.0])
        inst = Instances((H, W))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.gt_classes = torch.zeros(len(dps), dtype=torch.int64)
        masks = torch.zeros(len(dps), H, W, dtype=torch.bool)
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            masks[k, int(y0) : int(y1), int(x0) : int(x1)] = True
        inst.gt_masks = BitMasks(masks)
        inst.gt_densepose = DensePoseList(dps)
        image = (torch.rand(3, H, W, generator=g) * 255).to(torch.uint8)
        inputs.append({"image": image, "instances": inst, "height": H, "width": W})
    return inputs


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_cfg())


def test_training_step(model):
    g = torch.Generator().manual_seed(1)
    items = [
        [densepose(20, g), None],
        [densepose(12, g, segm=False), densepose(0, g), None],  # no coarse map; no points
    ]
    model.train()
    with EventStorage():
        losses = model(batch(items))
    for name in LOSSES + ("loss_mask", "loss_cls"):
        assert name in losses and torch.isfinite(losses[name]), name
    assert losses["loss_densepose_I"] > 0 and losses["loss_densepose_S"] > 0
    sum(losses.values()).backward()
    assert model.roi_heads.densepose_head.body_conv_fcn1.weight.grad.abs().sum() > 0
    assert model.roi_heads.decoder.p5[0].weight.grad.abs().sum() > 0


def test_batch_without_densepose_gives_zero_losses_on_graph(model):
    model.train()
    model.zero_grad()
    with EventStorage():
        losses = model(batch([[None, None], []]))
    for name in LOSSES:
        assert losses[name].item() == 0.0 and losses[name].requires_grad, name
    sum(losses[n] for n in LOSSES).backward()
    # every DensePose parameter is reached (DDP needs the same graph on every worker)
    for name, p in model.roi_heads.named_parameters():
        if name.startswith(("decoder.", "densepose_")):
            assert p.grad is not None and p.grad.abs().sum() == 0, name


def test_inference_attaches_pred_densepose(model):
    model.eval()
    with torch.no_grad():
        outputs = model([{"image": x["image"], "height": H, "width": W} for x in batch([[1], []])])
    for out in outputs:
        inst = out["instances"]
        assert len(inst) > 0
        dp = inst.pred_densepose
        assert isinstance(dp, DensePoseChartPredictorOutput) and len(dp) == len(inst)
        assert dp.coarse_segm.shape[1:] == (2, 56, 56)
        assert dp.fine_segm.shape[1:] == dp.u.shape[1:] == dp.v.shape[1:] == (25, 56, 56)
        results = densepose_chart_results(dp, inst.pred_boxes)
        for box, (labels, uv) in zip(inst.pred_boxes.tensor, results):
            _, _, w, h = box_xyxy_to_int_xywh(box)
            assert labels.shape == (max(h, 1), max(w, 1)) and labels.dtype == torch.int64
            assert uv.shape == (2, max(h, 1), max(w, 1))
            assert labels.min() >= 0 and labels.max() <= 24
            assert (uv[:, labels == 0] == 0).all()
    merged = Instances.cat([outputs[0]["instances"], outputs[1]["instances"]])
    assert len(merged.pred_densepose) == len(merged)


def test_inference_without_detections(model):
    model.eval()
    model.roi_heads.box_predictor.test_score_thresh = 1.1
    try:
        with torch.no_grad():
            out = model([{"image": batch([[]])[0]["image"]}])[0]["instances"]
    finally:
        model.roi_heads.box_predictor.test_score_thresh = 0.0
    assert len(out) == 0 and len(out.pred_densepose) == 0
    assert densepose_chart_results(out.pred_densepose, out.pred_boxes) == []


def test_unknown_part_index_is_named(model):
    g = torch.Generator().manual_seed(2)
    model.train()
    with (
        EventStorage(),
        pytest.raises(ValueError, match=r"image 1 .*part index 27 outside 0\.\.24"),
    ):
        model(batch([[densepose(10, g)], [densepose(10, g, part=27)]]))


def test_overfits_one_batch():
    """The branch's losses are wired to its outputs: on one fixed person with 8 annotated
    points, 50 Adam steps bring the part loss far below chance (ln 25 = 3.2: the random init
    starts in the hundreds, so a ratio would prove nothing) and the UV losses near zero."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    model.train()
    g = torch.Generator().manual_seed(3)
    inputs = batch([[densepose(8, g)]], seed=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    with EventStorage():
        for _ in range(50):
            losses = model(inputs)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
        losses = model(inputs)
    assert losses["loss_densepose_I"] < 1.0, losses
    assert losses["loss_densepose_U"] < 0.1 and losses["loss_densepose_V"] < 0.1, losses
