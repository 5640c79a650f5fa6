"""Overfit one tiny batch: proves the box, class and mask losses are wired to the right outputs
(the masks assembled at inference must match the GT with IoU > 0.9)."""

import time

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances
from detectron2.utils.events import EventStorage
from test_yolact_model import tiny_cfg


def _scene(size=96):
    yy, xx = np.mgrid[:size, :size]
    masks = [
        (xx >= 6) & (xx < 48) & (yy >= 6) & (yy < 51),  # rectangle
        (xx - 66) ** 2 / 22.0**2 + (yy - 30) ** 2 / 16.0**2 <= 1,  # ellipse
        (yy >= 56) & (yy < 90) & (xx >= 20) & (xx - 20 <= (yy - 56) * 1.6),  # triangle
    ]
    colors = [(220, 40, 40), (40, 200, 60), (50, 60, 230)]
    img = np.full((size, size, 3), 90, np.uint8)
    for m, c in zip(masks, colors):
        img[m] = c
    inst = Instances((size, size))
    m = torch.from_numpy(np.stack(masks))
    inst.gt_masks = BitMasks(m)
    inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
    inst.gt_classes = torch.tensor([0, 1, 2])
    return {"image": torch.from_numpy(img).permute(2, 0, 1).contiguous(), "instances": inst}, m


@pytest.mark.slow  # 110 training iterations
def test_overfit_one_batch():
    torch.manual_seed(0)
    t0 = time.perf_counter()
    cfg = tiny_cfg(size=128, NUM_PROTOTYPES=8)
    cfg.MODEL.RESNETS.NORM = "GN"  # no running statistics: train and eval behave the same
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[12], [24], [48], [96], [192]]
    model = build_model(cfg)
    x, gt = _scene()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [90], 0.1)
    model.train()
    with EventStorage():
        for it in range(110):
            losses = model([x])
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
            sched.step()
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        inst = model([x])[0]["instances"]
    for c in range(3):
        pred = inst[inst.pred_classes == c]
        assert len(pred), f"class {c} not detected"
        best = pred.pred_masks[pred.scores.argmax()]
        iou = (best & gt[c]).sum().item() / (best | gt[c]).sum().item()
        assert iou > 0.9, (c, iou, {k: float(v.detach()) for k, v in losses.items()})
    print(f"overfit took {time.perf_counter() - t0:.1f}s")
