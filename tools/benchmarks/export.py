"""Exported ONNX models under onnxruntime against the same models in PyTorch eager, end to end,
on CPU with the same number of threads (``tools/benchmark.py --threads N`` sets both).

Rows: YOLACT R-50 FPN at 550 on a 480 x 640 image, RetinaFace mnet0.25 on a VGA (480 x 640)
image, a 2-stack width-256 Stacked Hourglass on one 256 x 256 crop. Anchor: the eager model
called as D2 calls it (``model([{"image": chw}])``; the landmark model on its mapper's input
dict), under ``torch.no_grad``. Ours: ``session.run`` on the same pixels plus
:meth:`outputs_to_instances` (the ``Instances`` the eager call returns). Target: >= 1.3x.

Before timing, both must agree: same number of detections, boxes / keypoints within 1e-2 px,
scores within 1e-4 (boxes: 50-layer networks in two runtimes), YOLACT masks on >= 99.99% of pixels. Weights: RetinaFace the parity
fixture's (``../shared/fixtures/retinaface``, 750 detections) when present; otherwise, and for
YOLACT and the hourglass, seeded random weights; YOLACT's score threshold 0 so the full 100
detections (and their masks) are made, as a trained model on a crowded image.
"""

import os
import tempfile
from typing import Dict, List

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from d2ext.config import add_d2ext_config
from d2ext.export import build_export_wrapper, export_onnx, onnx_session, run_onnx

from . import BenchRow, register_benchmark, time_fn
from .retinaface import _model_and_image as retinaface_model_and_image

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HEIGHT, WIDTH = 480, 640
TARGET = 1.3


def _cfg(path: str, **opts):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(os.path.join(_REPO, "configs", path))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.merge_from_list([x for kv in opts.items() for x in kv])
    return cfg


def _yolact():
    cfg = _cfg("YOLACT/yolact_R_50_FPN_550.yaml", **{"MODEL.YOLACT.SCORE_THRESH_TEST": 0.0})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    # random init saturates the softmax (logit std ~19: thousands of scores exactly 1.0, tied);
    # a tenth of the class and box head weights spreads the scores as a trained model's
    with torch.no_grad():
        for conv in (model.head.cls_logits, model.head.bbox_pred):
            conv.weight.mul_(0.1)
            conv.bias.mul_(0.1)
    image = torch.randint(0, 256, (3, HEIGHT, WIDTH), dtype=torch.uint8)
    return model, [{"image": image}], (image.float()[None],)


def _retinaface():
    model, image, note = retinaface_model_and_image("cpu")
    chw = image.permute(2, 0, 1).contiguous()
    return model, [{"image": chw}], (chw.float()[None],), note


def _hourglass():
    cfg = _cfg(
        "Hourglass/hourglass_8x256_mpii.yaml",
        **{"MODEL.HOURGLASS.NUM_STACKS": 2, "MODEL.LANDMARK.FLIP_TEST": False},
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    h, w = model.crop_size
    crops = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8)
    affine = torch.tensor([[[2.0, 0.0, 10.0], [0.0, 2.0, 20.0]]])
    record = {
        "crops": crops,
        "crop_to_image": affine,
        "boxes": torch.tensor([[10.0, 20.0, 10.0 + 2 * w, 20.0 + 2 * h]]),
        "height": 2 * h + 40,
        "width": 2 * w + 20,
    }
    return model, [record], (crops.float(), affine)


def _fields(inst) -> Dict[str, torch.Tensor]:
    out = {"scores": inst.scores}
    if inst.has("pred_boxes"):
        out["boxes"] = inst.pred_boxes.tensor
    if inst.has("pred_keypoints"):
        out["keypoints"] = inst.pred_keypoints
    if inst.has("pred_masks"):
        out["masks"] = inst.pred_masks
    return out


def _agreement(name: str, eager, exported) -> str:
    """Raises unless eager and exported Instances agree (the module docstring's tolerances).
    Detections are paired by nearest box first: scores within float rounding of each other may
    come out in either order."""
    if len(eager) != len(exported):
        raise AssertionError(f"{name}: {len(eager)} eager vs {len(exported)} exported detections")
    if len(eager) and eager.has("pred_boxes"):
        cost = torch.cdist(eager.pred_boxes.tensor.double(), exported.pred_boxes.tensor.double())
        if eager.has("pred_classes"):
            cost += 1e9 * (eager.pred_classes[:, None] != exported.pred_classes[None, :])
        order = cost.argmin(dim=1)
        if len(set(order.tolist())) != len(order):
            raise AssertionError(f"{name}: eager detections do not pair one-to-one")
        exported = exported[order]
    a, b = _fields(eager), _fields(exported)
    worst = {}
    for key in a:
        x, y = a[key], b[key]
        if key == "masks":
            same = (x == y).float().mean().item() if x.numel() else 1.0
            if same < 0.9999:
                raise AssertionError(f"{name}: masks agree on {same:.6f} of pixels")
            worst[key] = f"{same * 100:.4f}% equal"
            continue
        diff = (x.double() - y.double()).abs().max().item() if x.numel() else 0.0
        tol = 1e-4 if key == "scores" else 1e-2
        if diff > tol:
            raise AssertionError(f"{name}: {key} differ by {diff:.2e} (> {tol})")
        worst[key] = f"{diff:.1e}"
    return ", ".join(f"{k} {v}" for k, v in worst.items())


def _row(name: str, model, eager_inputs, graph_inputs, quick: bool, note=None) -> BenchRow:
    wrapper = build_export_wrapper(model)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(wrapper, graph_inputs, os.path.join(tmp, "model.onnx"))
        size_mb = os.path.getsize(path) / 2**20
        session, meta = onnx_session(path, num_threads=threads)
    record = eager_inputs[0]
    image_size = (record["height"], record["width"]) if "crops" in record else None
    image_size = image_size or tuple(record["image"].shape[-2:])
    kwargs = {"boxes": record["boxes"]} if "crops" in record else {}

    def eager():
        with torch.no_grad():
            return model(eager_inputs)[0]["instances"]

    def ours():
        outputs = {k: torch.from_numpy(v) for k, v in run_onnx(session, meta, graph_inputs).items()}
        return type(wrapper).outputs_to_instances(outputs, [image_size], meta, **kwargs)[0]

    eager_inst, ours_inst = eager(), ours()
    agreement = _agreement(name, eager_inst, ours_inst)
    iters = 2 if quick else 10
    t_eager = time_fn(eager, warmup=1, iters=iters)
    t_ours = time_fn(ours, warmup=1, iters=iters)
    extra = {
        "threads": str(threads),
        "onnx MB": f"{size_mb:.1f}",
        "detections": str(len(eager_inst)),
        "max |diff|": agreement,
    }
    if note:
        extra["weights"] = note
    return BenchRow(
        name=f"{name}, end to end",
        anchor="PyTorch eager, same weights",
        anchor_s=t_eager,
        ours_s=t_ours,
        target=TARGET,
        extra=extra,
    )


@register_benchmark("export_onnxruntime")
def bench_export_onnxruntime(device: str, quick: bool) -> List[BenchRow]:
    """YOLACT R-50 550, RetinaFace mnet0.25 VGA, 2-stack hourglass 256: onnxruntime vs eager."""
    if device != "cpu":
        raise ValueError("export_onnxruntime compares CPU runtimes: run it with --device cpu")
    rows = [_row("YOLACT R-50 FPN 550, 640x480 image", *_yolact(), quick=quick)]
    model, eager_inputs, graph_inputs, note = _retinaface()
    rows.append(
        _row("RetinaFace mnet0.25, 640x480", model, eager_inputs, graph_inputs, quick, note)
    )
    rows.append(_row("Stacked Hourglass 2x256, one 256x256 crop", *_hourglass(), quick=quick))
    return rows
