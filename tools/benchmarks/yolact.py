"""YOLACT speed cases: end-to-end inference against stock D2 Mask R-CNN, Fast NMS against
D2's standard NMS."""

import os
from typing import List

import torch
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model

from d2ext.config import add_d2ext_config

from . import BenchRow, register_benchmark, time_fn

_CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


def _zero_init_residuals(model: torch.nn.Module) -> None:
    """Random deep ResNets with identity FrozenBN statistics blow activations up (Mask R-CNN then
    keeps almost no finite, non-empty box); zeroing each block's last norm scale makes the
    untrained blocks identities so both models produce their full number of detections."""
    for name, m in model.backbone.bottom_up.named_modules():
        if isinstance(m, FrozenBatchNorm2d) and name.endswith(("conv2.norm", "conv3.norm")):
            m.weight.zero_()


def _cfg(path: str, depth: int, device: str):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(os.path.join(_CONFIGS, path))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    cfg.MODEL.RESNETS.DEPTH = depth
    if depth < 50:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    return cfg


@register_benchmark("yolact_e2e")
def yolact_vs_mask_rcnn(device: str, quick: bool) -> List[BenchRow]:
    """YOLACT vs stock Mask R-CNN inference, same ResNet, 550x550 input, 100 detections each."""
    depth = 18 if quick else 50
    y = _cfg("YOLACT/Base-YOLACT.yaml", depth, device)
    # random weights: score threshold 0 so both models output (and paste) the full 100 masks
    y.MODEL.YOLACT.SCORE_THRESH_TEST = 0.0
    m = _cfg("Base/Base-RCNN-FPN.yaml", depth, device)
    m.MODEL.MASK_ON = True
    m.MODEL.ROI_HEADS.NUM_CLASSES = 80
    m.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    m.INPUT.MIN_SIZE_TEST = m.INPUT.MAX_SIZE_TEST = 550
    torch.manual_seed(0)
    yolact, mask_rcnn = build_model(y).eval(), build_model(m).eval()
    for model in (yolact, mask_rcnn):
        _zero_init_residuals(model)
    image = (torch.rand(3, 550, 550) * 255).to(torch.uint8)
    inputs = [{"image": image, "height": 550, "width": 550}]

    def run(model):
        with torch.no_grad():
            out = model(inputs)[0]["instances"]
        return len(out)

    n_y, n_m = run(yolact), run(mask_rcnn)
    # a GPU inference takes milliseconds: more repetitions for a stable median
    iters = 2 if quick else (20 if str(device).startswith("cuda") else 5)
    t_m = time_fn(lambda: run(mask_rcnn), iters=iters, device=device)
    t_y = time_fn(lambda: run(yolact), iters=iters, device=device)
    return [
        BenchRow(
            name=f"R-{depth} 550x550 inference, 1 image",
            anchor="D2 Mask R-CNN R-FPN",
            anchor_s=t_m,
            ours_s=t_y,
            target=1.5,
            extra={"detections (ours/anchor)": f"{n_y}/{n_m}"},
        )
    ]


@register_benchmark("yolact_fast_nms")
def fast_vs_standard_nms(device: str, quick: bool) -> List[BenchRow]:
    """Fast NMS vs D2 batched_nms on YOLACT candidates (80 classes, per-class top-200)."""
    from d2ext.modeling.yolact import fast_nms, standard_nms

    g = torch.Generator().manual_seed(0)
    num_cand, num_classes = 2000, 80
    xy = torch.rand(num_cand, 2, generator=g) * 500
    wh = torch.rand(num_cand, 2, generator=g) * 100 + 10
    boxes = torch.cat([xy, xy + wh], 1).to(device)
    scores = (
        torch.softmax(torch.randn(num_cand, num_classes + 1, generator=g) * 3, 1)[:, 1:]
        .t()
        .contiguous()
        .to(device)
    )
    kw = dict(iou_threshold=0.5, top_k=200, max_detections=100, score_threshold=0.05)
    iters = 5 if quick else 20
    t_std = time_fn(lambda: standard_nms(boxes, scores, **kw), iters=iters, device=device)
    t_fast = time_fn(lambda: fast_nms(boxes, scores, **kw), iters=iters, device=device)
    return [
        BenchRow(
            name=f"{num_cand} candidates x {num_classes} classes, top-200/class",
            anchor="D2 batched_nms (standard NMS)",
            anchor_s=t_std,
            ours_s=t_fast,
        )
    ]
