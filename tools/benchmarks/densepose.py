"""Cost of the DensePose chart branch at inference: Mask R-CNN R-18 FPN with the branch against
the same detector without it, per 192x192 image, and the cost of converting its outputs to part
labels and UV.

Models: ``configs/DensePose/densepose_rcnn_R_18_FPN_synth.yaml`` (ours, with the branch) and
``mask_rcnn_R_18_FPN_synth_densepose_off.yaml`` (anchor, ``MODEL.DENSEPOSE_ON False``), seeded
random weights, eval mode; every parameter and buffer of the anchor is copied from ours, so
backbone, RPN, box and mask heads are identical and the only difference is the branch (decoder,
pooler, head, predictor). Random weights give hundreds of candidate boxes: with
``ROI_HEADS.SCORE_THRESH_TEST 0`` and ``TEST.DETECTIONS_PER_IMAGE`` = N (20) both models return
exactly N detections per image, and before timing they must return the same boxes (within
1e-4 px), scores and classes, so the branch runs on the same N boxes the anchor outputs.

Images: the first images of ``synth_densepose_mini_val`` (1-4 articulated figures each), rendered
in memory by ``render_densepose_image`` from that dataset's seed (the same pixels as its PNG
files), as the (3, 192, 192) uint8 BGR tensor D2's mapper hands the model.

Row 1. Both sides: ``model([{"image": chw, "height": 192, "width": 192}])`` under
``torch.no_grad``, one image per call, for each image in turn; time per image = median loop
time / number of images. Ours includes the branch's decoder, 28x28 ROIAlign of the N boxes, head
and predictor (112x112 outputs in ``pred_densepose``). The "speed-up" column is anchor / ours,
below 1: it measures what the branch costs, so the row has no target.

Row 2. Both sides: ours with the branch as in row 1; ours adds ``densepose_chart_results``
(``pred_densepose`` resized to each truncated box, labels and UV per detection, the evaluator's
and visualiser's conversion) for the N detections of each image, timed in the same loop. Again a
cost (< 1), no target; "extra" gives the conversion alone, timed on the stored outputs.
"""

import os
from typing import List

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from d2ext.config import add_d2ext_config
from d2ext.data.synthetic import builtin_spec
from d2ext.data.synthetic.densepose_figures import render_densepose_image
from d2ext.modeling.densepose import densepose_chart_results

from . import BenchRow, register_benchmark, time_fn

_CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "DensePose")
WITH_BRANCH = "densepose_rcnn_R_18_FPN_synth.yaml"
WITHOUT_BRANCH = "mask_rcnn_R_18_FPN_synth_densepose_off.yaml"
DATASET = "synth_densepose_mini_val"
DETECTIONS = 20


def _model(config: str, device: str) -> torch.nn.Module:
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(os.path.join(_CONFIGS, config))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    # random weights: threshold 0 leaves far more than N candidates, so both keep exactly N
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = DETECTIONS
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _images(num: int, device: str) -> List[dict]:
    """The first ``num`` images of :data:`DATASET` as model inputs (CHW uint8 BGR)."""
    spec = builtin_spec(DATASET)
    height, width = spec.image_size
    inputs = []
    for i in range(num):
        rgb, _ = render_densepose_image(spec.seed, i, height, width, spec.max_objects)
        chw = torch.from_numpy(rgb[:, :, ::-1].copy()).permute(2, 0, 1).contiguous()
        inputs.append({"image": chw.to(device), "height": height, "width": width})
    return inputs


@register_benchmark("densepose_branch")
def bench_densepose_branch(device: str, quick: bool) -> List[BenchRow]:
    """DensePose R-18 FPN 192 px inference with the chart branch vs without (cost, < 1x)."""
    ours, anchor = _model(WITH_BRANCH, device), _model(WITHOUT_BRANCH, device)
    shared = ours.state_dict()
    missing, unexpected = anchor.load_state_dict(
        {k: v for k, v in shared.items() if k in anchor.state_dict()}, strict=False
    )
    if missing or unexpected:
        raise KeyError(f"densepose_branch: anchor keys missing {missing}, unexpected {unexpected}")
    inputs = _images(2 if quick else 8, device)

    def run(model) -> List:
        with torch.no_grad():
            return [model([x])[0]["instances"] for x in inputs]

    def run_and_convert() -> List:
        return [densepose_chart_results(x.pred_densepose, x.pred_boxes) for x in run(ours)]

    worst = 0.0
    for i, (a, b) in enumerate(zip(run(ours), run(anchor))):
        if len(a) != DETECTIONS or len(b) != DETECTIONS:
            raise AssertionError(
                f"densepose_branch: image {i} of {DATASET} gives {len(a)} detections with the "
                f"branch, {len(b)} without; both must give TEST.DETECTIONS_PER_IMAGE {DETECTIONS}"
            )
        diff = (a.pred_boxes.tensor - b.pred_boxes.tensor).abs().max().item()
        if diff > 1e-4 or not torch.equal(a.pred_classes, b.pred_classes):
            raise AssertionError(
                f"densepose_branch: image {i} of {DATASET}: boxes differ by {diff:.2e} px (or "
                "classes differ) with and without the branch; the detectors must be identical"
            )
        worst = max(worst, diff, (a.scores - b.scores).abs().max().item())
        if len(a.pred_densepose) != DETECTIONS:
            raise AssertionError(f"densepose_branch: image {i}: pred_densepose rows != N")
    side = run(ours)[0].pred_densepose.fine_segm.shape[-1]

    n = len(inputs)
    warmup = 0 if quick else 1  # the checks above already ran every path once
    iters = 2 if quick else (20 if str(device).startswith("cuda") else 5)
    t_anchor = time_fn(lambda: run(anchor), warmup=warmup, iters=iters, device=device) / n
    t_ours = time_fn(lambda: run(ours), warmup=warmup, iters=iters, device=device) / n
    t_convert = time_fn(run_and_convert, warmup=warmup, iters=iters, device=device) / n
    outputs = run(ours)
    t_convert_only = (
        time_fn(
            lambda: [densepose_chart_results(x.pred_densepose, x.pred_boxes) for x in outputs],
            warmup=warmup,
            iters=iters,
            device=device,
        )
        / n
    )
    extra = {
        "N detections/image": str(DETECTIONS),
        "images": f"{n} of {DATASET}",
        "max |diff| boxes/scores": f"{worst:.1e}",
    }
    return [
        BenchRow(
            name=f"R-18 FPN 192x192, 1 image, N={DETECTIONS}: with the DensePose branch",
            anchor="same detector without the branch (DENSEPOSE_ON False)",
            anchor_s=t_anchor,
            ours_s=t_ours,
            target=None,  # a cost measurement: ratio < 1 is the branch's price
            extra=dict(extra, **{"branch ms/image": f"{(t_ours - t_anchor) * 1e3:.2f}"}),
        ),
        BenchRow(
            name=f"same + densepose_chart_results of the N {side}x{side} outputs",
            anchor="with the branch, network only (no conversion)",
            anchor_s=t_ours,
            ours_s=t_convert,
            target=None,  # a cost measurement
            extra={
                "N detections/image": str(DETECTIONS),
                "conversion alone ms/image": f"{t_convert_only * 1e3:.2f}",
            },
        ),
    ]
