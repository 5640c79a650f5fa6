"""UPSNet end to end on CPU with tiny inputs: train steps on edge-case batches, inference with no
detections, the semantic head's deformable conv, and D2's unchanged panoptic evaluator and
Visualizer on the model's outputs (the train mapper: tests/data/test_upsnet_mapper.py)."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances
from detectron2.utils.events import EventStorage
from panopticapi.utils import rgb2id
from PIL import Image

from d2ext import add_d2ext_config
from d2ext.modeling.upsnet import DeformConvWithOffset, UPSNet

S, T = 2, 3


CONFIG = os.path.join(
    os.path.dirname(__file__), "..", "..", "configs", "UPSNet", "upsnet_R_18_synth.yaml"
)
# a tiny UPSNet (small FPN and heads, few RoIs) with the paper's deformable semantic head
TINY = {
    "DATASETS.TRAIN": "()",
    "DATASETS.TEST": "()",
    "MODEL.ROI_HEADS.NUM_CLASSES": T,
    "MODEL.UPSNET.NUM_STUFF_CLASSES": S,
    "MODEL.FPN.OUT_CHANNELS": 32,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": 50,
    "MODEL.RPN.POST_NMS_TOPK_TEST": 50,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32,
    "MODEL.ROI_BOX_HEAD.FC_DIM": 64,
    "MODEL.ROI_MASK_HEAD.CONV_DIM": 32,
    "MODEL.UPSNET.SEM_SEG_HEAD.CONV_DIM": 16,
    "MODEL.UPSNET.SEM_SEG_HEAD.DEFORMABLE": True,
    "MODEL.UPSNET.ROI_SEM_SEG_LOSS_WEIGHT": 0.04,
    "MODEL.UPSNET.PANOPTIC.STUFF_AREA_LIMIT": 16,
}


def tiny_cfg(**opts):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(CONFIG)
    for key, value in {**TINY, **opts}.items():
        cfg.merge_from_list([key, value])
    return cfg


def _input(h, w, sem, masks, classes):
    inst = Instances((h, w))
    inst.gt_masks = BitMasks(masks)
    inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
    inst.gt_classes = torch.as_tensor(classes, dtype=torch.long)
    return {
        "image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8),
        "sem_seg": sem,
        "instances": inst,
        "file_name": f"img_{h}x{w}",
    }


def edge_case_batch():
    h, w = 64, 80
    # 1) stuff only, no instances
    stuff_only = _input(
        h, w, torch.randint(0, S, (h, w)), torch.zeros(0, h, w, dtype=torch.bool), []
    )
    # 2) things only (no stuff pixel), with a crowd region (thing label, no instance)
    sem = torch.full((h, w), S + 0)
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, :, :40] = True
    masks[1, :32, 40:] = True
    sem[masks[1]] = S + 2
    things_only = _input(h, w, sem, masks, [0, 2])  # rows 32: x 40: are a crowd of class 0
    # 3) mixed with ignored pixels
    sem = torch.randint(0, S, (h - 8, w))
    sem[:4] = 255
    masks = torch.zeros(3, h - 8, w, dtype=torch.bool)
    masks[0, 10:30, 10:30] = True
    masks[1, 20:50, 40:70] = True
    masks[2, 40:44, 2:6] = True
    for m, c in zip(masks, [1, 1, 2]):
        sem[m] = S + c
    mixed = _input(h - 8, w, sem, masks, [1, 1, 2])
    return [stuff_only, things_only, mixed]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_cfg())


def test_train_step_edge_cases(model):
    assert isinstance(model, UPSNet)
    model.train()
    with EventStorage():
        losses = model(edge_case_batch())
        for key in ("loss_sem_seg", "loss_sem_seg_roi", "loss_panoptic", "loss_mask", "loss_cls"):
            assert key in losses and torch.isfinite(losses[key]), key
        model.zero_grad()
        sum(losses.values()).backward()
    assert model.sem_seg_head.score.weight.grad.abs().sum() > 0
    assert model.roi_heads.mask_head.predictor.weight.grad.abs().sum() > 0
    # every image without instances: the panoptic loss still exists (stuff + unknown)
    with EventStorage():
        losses = model([edge_case_batch()[0]] * 2)
    assert torch.isfinite(losses["loss_panoptic"]) and losses["loss_panoptic"] > 0


def test_train_input_without_sem_seg_is_a_clear_error(model):
    model.train()
    x = edge_case_batch()[0]
    del x["sem_seg"]
    with pytest.raises(KeyError, match="img_64x80.*sem_seg"):
        model([x])


def test_inference_without_detections_gives_stuff_or_void(model):
    model.eval()
    model.panoptic_head.score_thresh = 1.01  # nothing passes
    try:
        with torch.no_grad():
            out = model(
                [
                    {
                        "image": torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8),
                        "height": 32,
                        "width": 40,
                    }
                ]
            )[0]
    finally:
        model.panoptic_head.score_thresh = 0.6
    pan, info = out["panoptic_seg"]
    assert pan.shape == (32, 40) and pan.dtype == torch.int32
    assert out["sem_seg"].shape == (S + T, 32, 40)
    assert isinstance(out["instances"], Instances)
    assert all(not s["isthing"] for s in info)
    assert set(pan.unique().tolist()) <= {0} | {s["id"] for s in info}
    for s in info:
        assert s["category_id"] in range(S) and s["area"] == int((pan == s["id"]).sum())


def test_deform_conv_starts_as_plain_conv():
    torch.manual_seed(0)
    conv = DeformConvWithOffset(4, 6)
    x = torch.randn(2, 4, 9, 7)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1))
    assert conv.conv_offset.weight.abs().sum() == 0


def test_outputs_work_with_d2_panoptic_evaluator_and_visualizer(tmp_path):
    from detectron2.data import (
        DatasetCatalog,
        DatasetMapper,
        MetadataCatalog,
        build_detection_test_loader,
    )
    from detectron2.evaluation import COCOPanopticEvaluator, inference_on_dataset
    from detectron2.utils.visualizer import Visualizer

    from d2ext.data.synthetic.register import register_synthetic_panoptic

    name = "upsnet_test_tiny_panoptic"
    register_synthetic_panoptic(name, root=str(tmp_path), num_images=2, image_size=(64, 64), seed=5)
    DatasetCatalog.get(name)  # generate
    meta = MetadataCatalog.get(name)
    cfg = tiny_cfg(
        **{
            "DATASETS.TRAIN": f"('{name}',)",
            "MODEL.ROI_HEADS.NUM_CLASSES": len(meta.thing_dataset_id_to_contiguous_id),
            "MODEL.UPSNET.NUM_STUFF_CLASSES": len(meta.stuff_dataset_id_to_contiguous_id),
            "MODEL.UPSNET.PANOPTIC.SCORE_THRESH": 0.0,  # untrained: let detections through
            "MODEL.UPSNET.PANOPTIC.STUFF_OVERRIDE_FRACTION": 0.0,
        }
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    num_stuff = cfg.MODEL.UPSNET.NUM_STUFF_CLASSES
    with torch.no_grad():  # untrained: make the semantic head favour things, so that instances win
        model.sem_seg_head.score.bias[:num_stuff] = -10.0
        model.sem_seg_head.score.bias[num_stuff:] = 10.0
    loader = build_detection_test_loader(
        DatasetCatalog.get(name), mapper=DatasetMapper(cfg, is_train=False)
    )
    evaluator = COCOPanopticEvaluator(name, str(tmp_path / "eval"))
    res = inference_on_dataset(model, loader, evaluator)
    assert set(res["panoptic_seg"]) >= {"PQ", "SQ", "RQ", "PQ_th", "PQ_st"}
    assert all(0.0 <= v <= 100.0 for v in res["panoptic_seg"].values())

    # the same evaluator on the panoptic head's output for semantic logits and detections made
    # from the ground truth: every segment must be found with its metadata category (stuff and
    # thing ids, segment ids and areas as D2 reads them), so PQ is exactly 100
    head, space = model.panoptic_head, model.panoptic_head.label_space
    oracle = COCOPanopticEvaluator(name, str(tmp_path / "oracle"))
    oracle.reset()
    for d in DatasetCatalog.get(name):
        gt = torch.from_numpy(rgb2id(np.asarray(Image.open(d["pan_seg_file_name"]).convert("RGB"))))
        sem = torch.full((space.num_stuff + space.num_things,) + tuple(gt.shape), -10.0)
        boxes, classes, masks = [], [], []
        for s in d["segments_info"]:
            region = gt == s["id"]
            label = space.semantic_label(s["category_id"], bool(s["isthing"]))
            sem[label][region] = 10.0
            if s["isthing"] and not s.get("iscrowd", 0):
                ys, xs = torch.nonzero(region, as_tuple=True)
                x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
                crop = region[y0:y1, x0:x1].float()[None, None]
                masks.append(
                    F.interpolate(crop, (28, 28), mode="bilinear", align_corners=False)[0, 0] * 20
                    - 10
                )
                boxes.append(torch.tensor([x0, y0, x1, y1], dtype=torch.float32))
                classes.append(label - space.num_stuff)
        assert boxes  # each image has things
        pan, info = head.inference(
            sem,
            torch.stack(boxes),
            torch.ones(len(boxes)),
            torch.tensor(classes),
            torch.stack(masks),
        )
        oracle.process([d], [{"panoptic_seg": (pan, info)}])
    assert oracle.evaluate()["panoptic_seg"] == {
        k: 100.0 for k in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")
    }

    with torch.no_grad():
        out = model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}])[0]
    pan, info = out["panoptic_seg"]
    assert any(s["isthing"] for s in info)
    vis = Visualizer(np.zeros((64, 64, 3), np.uint8), meta).draw_panoptic_seg(pan, info)
    assert vis.get_image().shape == (64, 64, 3)
