"""RetinaFace MobileNet-0.25 at VGA (640 x 480): our end-to-end D2 inference against the same
converted weights run the way biubug6/Pytorch_Retinaface's ``detect.py`` runs them, and a batch
of 8 images in one forward against the same 8 one at a time.

Row 1, one image. Ours: ``model([{"image": chw}])`` under ``torch.no_grad`` on a (3, 480, 640)
uint8 BGR tensor (what D2's mapper hands the model): normalisation (``preprocess_image``), the
network, D2's anchors, softmax, score filter 0.02, top 5000, box decoding, NMS 0.4 with the
original's +1 areas, keep 750, landmark decoding and the ``Instances`` of the output. Anchor, from
the (480, 640, 3) uint8 BGR numpy array that ``cv2.imread`` gives, every step ``detect.py`` takes
for an image: ``np.float32``, minus (104, 117, 123), HWC -> CHW, ``torch.from_numpy`` (and to the
device); the same network in the original's channels-first memory format (our ``forward_raw``
with ``channels_last`` off, whose D2 anchors it discards) and softmax: same weights; the original's ``PriorBox`` rebuilt for the image (a Python loop over every
cell and min size, relative cx, cy, w, h; ours below skips its one-element lists, so it costs at
most the original's); its torch ``decode`` / ``decode_landm`` with variances (0.1, 0.2), scaled
to pixels; ``.cpu().numpy()``; numpy score filter > 0.02, ``argsort`` top 5000, ``py_cpu_nms``
0.4 (legacy +1 areas), keep 750. Target: ours <= 0.8x its time (1.25x). Before timing, both must
give the same detections: same count, boxes and landmarks within 1e-3 px, scores within 1e-5.

Row 2, throughput. Ours both sides: 8 different VGA images (the fixture image flipped and
shifted) in one call ``model(inputs)`` against ``model([x])`` for each of the same 8; speed-up =
images/s ratio, target 1.3x. Before timing, the batched detections must equal the
one-at-a-time ones (same counts; boxes, landmarks and scores allclose 1e-3).

Weights: the official mobilenet0.25 weights of the parity fixture (``../shared/fixtures/
retinaface``, README there; random init with BN statistics) converted by
``convert_official_retinaface_state_dict``, on its image; they give the full 750 detections, so
both NMS run at their worst. Without the fixture the case runs with seeded random weights on a
random image and says so in "extra".

Row 3, only with ``D2EXT_BENCH_RETINAFACE_TRAINED=<checkpoint>`` (a ``tools/train_net.py`` output
of ``configs/RetinaFace/retinaface_mnet025_synth.yaml``): row 2 with those trained weights on the
first 8 ``synth_face_scenes_val`` images resized to VGA, where the scores cut the candidates and
NMS no longer dominates.
"""

import copy
import itertools
import math
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from torch.nn import functional as F

from d2ext.config import add_d2ext_config
from d2ext.modeling.retinaface import convert_official_retinaface_state_dict

from . import BenchRow, register_benchmark, time_fn

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURE = os.path.join(
    _REPO, "..", "shared", "fixtures", "retinaface", "mnet025_parity_seed0_480x640.pt"
)
HEIGHT, WIDTH, BATCH = 480, 640, 8
# biubug6's cfg_mnet and detect.py settings (our config's defaults, asserted equal by the
# parity test): priors, variances, mean, confidence, top-k, NMS, keep-top-k
MIN_SIZES, STEPS, VARIANCES = ((16, 32), (64, 128), (256, 512)), (8, 16, 32), (0.1, 0.2)
MEAN_BGR = (104, 117, 123)
CONFIDENCE, TOP_K, NMS_THRESHOLD, KEEP_TOP_K = 0.02, 5000, 0.4, 750


def original_priors(height: int, width: int) -> torch.Tensor:
    """The original's ``PriorBox(cfg, (height, width)).forward()`` (clip off): (A, 4) cx, cy,
    w, h relative to the image, row-major per level with both sizes per cell, built in Python."""
    values = []
    for sizes, step in zip(MIN_SIZES, STEPS):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        for i, j in itertools.product(range(rows), range(cols)):
            for size in sizes:
                cx, cy = (j + 0.5) * step / width, (i + 0.5) * step / height
                values += [cx, cy, size / width, size / height]
    return torch.Tensor(values).view(-1, 4)


def original_decode(loc: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """``utils/box_utils.decode``: (A, 4) deltas on relative cx, cy, w, h priors -> relative
    XYXY, through centre / size as the original computes it."""
    centres = priors[:, :2] + loc[:, :2] * VARIANCES[0] * priors[:, 2:]
    sizes = priors[:, 2:] * torch.exp(loc[:, 2:] * VARIANCES[1])
    boxes = torch.cat((centres, sizes), 1)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def original_decode_landm(pre: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """``utils/box_utils.decode_landm``: (A, 10) deltas -> relative x, y of the five points."""
    points = [
        priors[:, :2] + pre[:, 2 * k : 2 * k + 2] * VARIANCES[0] * priors[:, 2:] for k in range(5)
    ]
    return torch.cat(points, dim=1)


def py_cpu_nms(dets: np.ndarray, thresh: float) -> List[int]:
    """Fast R-CNN's numpy NMS as the original ships it: greedy by score, IoU with the legacy
    ``+1`` on widths, heights and areas; a box is dropped when its IoU exceeds ``thresh``."""
    x1, y1, x2, y2, scores = (dets[:, k] for k in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(best)
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[best] + areas[rest] - inter)
        order = rest[iou <= thresh]
    return keep


def original_detect(model, image_bgr: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``detect.py`` on one (H, W, 3) uint8 BGR image with ``model``'s network: dets (N, 5)
    x1, y1, x2, y2, score and landmarks (N, 10), pixels, float32 numpy."""
    img = np.float32(image_bgr)
    height, width, _ = img.shape
    scale = torch.Tensor([width, height] * 2).to(model.device)
    img -= MEAN_BGR
    img = torch.from_numpy(img.transpose(2, 0, 1)).unsqueeze(0).to(model.device)
    cls, loc, landms, _ = model.forward_raw(img)
    conf = F.softmax(cls, dim=-1)  # the original's network ends with it in test phase
    priors = original_priors(height, width).to(model.device)
    boxes = (original_decode(loc[0], priors) * scale).cpu().numpy()
    scores = conf[0][:, 1].cpu().numpy()
    landms = original_decode_landm(landms[0], priors) * torch.Tensor([width, height] * 5).to(
        model.device
    )
    landms = landms.cpu().numpy()
    inds = np.where(scores > CONFIDENCE)[0]
    boxes, landms, scores = boxes[inds], landms[inds], scores[inds]
    order = scores.argsort()[::-1][:TOP_K]
    boxes, landms, scores = boxes[order], landms[order], scores[order]
    dets = np.hstack((boxes, scores[:, np.newaxis])).astype(np.float32, copy=False)
    keep = py_cpu_nms(dets, NMS_THRESHOLD)
    return dets[keep][:KEEP_TOP_K], landms[keep][:KEEP_TOP_K]


def _model_and_image(device: str) -> Tuple[torch.nn.Module, torch.Tensor, Optional[str]]:
    """Our model (eval, on ``device``) with the fixture's converted weights and its (H, W, 3)
    uint8 BGR image, or seeded random ones and a note saying so."""
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(os.path.join(_REPO, "configs", "RetinaFace", "retinaface_mnet025_640.yaml"))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    # detect.py's limits (the config's WIDER protocol, as test_widerface.py, has none)
    cfg.MODEL.RETINAFACE.TOPK_CANDIDATES_TEST = TOP_K
    cfg.MODEL.RETINAFACE.DETECTIONS_PER_IMAGE = KEEP_TOP_K
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    if not os.path.exists(FIXTURE):
        image = torch.randint(0, 256, (HEIGHT, WIDTH, 3), dtype=torch.uint8)
        # BN statistics of this image, as the fixture's random model has its own: with torch's
        # identity statistics most features die and thousands of anchors tie on one score,
        # whose order then differs between numpy's and torch's sorts
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one batch, its statistics
        with torch.no_grad():
            x = image.permute(2, 0, 1).to(device).float() - model.pixel_mean
            model.train().forward_raw(x[None] / model.pixel_std)
        model.eval()
        return model, image, f"random weights and image (no fixture at {os.path.normpath(FIXTURE)})"
    fx = torch.load(FIXTURE, map_location="cpu", weights_only=False)
    if tuple(fx["image_bgr_uint8"].shape) != (HEIGHT, WIDTH, 3):
        raise ValueError(f"{FIXTURE}: image_bgr_uint8 is {tuple(fx['image_bgr_uint8'].shape)}")
    state_dict, _ = convert_official_retinaface_state_dict(fx["state_dict"])
    model.load_state_dict(state_dict, strict=True)
    return model, fx["image_bgr_uint8"], None


def _outputs(out: Dict) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    inst = out["instances"].to("cpu")
    points = inst.pred_keypoints[:, :, :2].reshape(len(inst), -1)
    return inst.pred_boxes.tensor, inst.scores, points


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item() if a.numel() else 0.0


def _batched_row(model, images, device, quick, warmup, note) -> BenchRow:
    """``len(images)`` (3, H, W) uint8 images in one forward vs one at a time (same detections
    required first)."""
    on_gpu = str(device).startswith("cuda")
    inputs = [{"image": v} for v in images]

    def batched():
        with torch.no_grad():
            return model(inputs)

    def one_at_a_time():
        with torch.no_grad():
            return [model([x])[0] for x in inputs]

    counts, worst = [], 0.0
    for i, (b, s) in enumerate(zip(batched(), one_at_a_time())):
        (bb, bs, bp), (sb, ss, sp) = _outputs(b), _outputs(s)
        if len(bb) != len(sb):
            raise AssertionError(
                f"retinaface_vga: image {i} gives {len(bb)} detections batched, {len(sb)} alone"
            )
        worst = max(worst, _max_diff(bb, sb), _max_diff(bp, sp), _max_diff(bs, ss))
        counts.append(len(bb))
    if worst > 1e-3:
        raise AssertionError(f"retinaface_vga: batched vs one at a time differ by {worst:.2e}")
    iters = 1 if quick else (20 if on_gpu else 5)
    t_single = time_fn(one_at_a_time, warmup=warmup, iters=iters, device=device)
    t_batch = time_fn(batched, warmup=warmup, iters=iters, device=device)
    n = len(inputs)
    extra = {
        "images/s batched/single": f"{n / t_batch:.1f}/{n / t_single:.1f}",
        "detections/image": f"{min(counts)}-{max(counts)}",
        "max |diff|": f"{worst:.1e}",
    }
    return BenchRow(
        name=f"mnet0.25 {WIDTH}x{HEIGHT}, {n} images in one forward",
        anchor=f"ours, the same {n} images one at a time",
        anchor_s=t_single,
        ours_s=t_batch,
        target=1.3,
        extra=dict(extra, **({"weights": note} if note else {})),
    )


def _trained_model_and_images(weights: str, device: str) -> Tuple[torch.nn.Module, List]:
    """The RetinaFace of ``configs/RetinaFace/retinaface_mnet025_synth.yaml`` with a trained
    checkpoint (``tools/train_net.py`` output) and the first ``BATCH`` images of
    ``synth_face_scenes_val`` resized to VGA: a trained model keeps only the candidates its
    scores pass, so this measures what batching gives once NMS no longer dominates."""
    import cv2
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetCatalog

    from d2ext.data.synthetic import ensure_synthetic_generated

    if not os.path.isfile(weights):
        raise FileNotFoundError(f"D2EXT_BENCH_RETINAFACE_TRAINED={weights!r} is not a file")
    cfg = get_cfg()
    add_d2ext_config(cfg)
    config = os.path.join(_REPO, "configs", "RetinaFace", "retinaface_mnet025_synth.yaml")
    cfg.merge_from_file(config)
    cfg.MODEL.DEVICE = device
    cfg.MODEL.RETINAFACE.TOPK_CANDIDATES_TEST = TOP_K
    cfg.MODEL.RETINAFACE.DETECTIONS_PER_IMAGE = KEEP_TOP_K
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(weights)
    ensure_synthetic_generated(["synth_face_scenes_val"])
    images = []
    for d in DatasetCatalog.get("synth_face_scenes_val")[:BATCH]:
        bgr = cv2.resize(cv2.imread(d["file_name"]), (WIDTH, HEIGHT))
        images.append(torch.from_numpy(bgr).permute(2, 0, 1).contiguous().to(device))
    return model, images


@register_benchmark("retinaface_vga")
def bench_retinaface_vga(device: str, quick: bool) -> List[BenchRow]:
    """RetinaFace mnet0.25 VGA end to end vs detect.py's way; 8 images batched vs one at a time."""
    model, image, note = _model_and_image(device)
    chw = image.permute(2, 0, 1).contiguous().to(device)
    image_np = image.numpy()
    on_gpu = str(device).startswith("cuda")

    # --- row 1: ours end to end vs detect.py on the same network ---
    def ours():
        with torch.no_grad():
            return model([{"image": chw}])[0]

    # the original's network runs channels-first: its copy with ours' weights
    original_net = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    original_net.channels_last = False

    def anchor():
        with torch.no_grad():
            return original_detect(original_net, image_np)

    boxes, scores, points = _outputs(ours())
    dets, landms = anchor()
    dets, landms = torch.from_numpy(dets), torch.from_numpy(landms)
    diff_box = max(_max_diff(boxes, dets[:, :4]), _max_diff(points, landms))
    diff_score = _max_diff(scores, dets[:, 4])
    if len(boxes) != len(dets) or diff_box > 1e-3 or diff_score > 1e-5:
        raise AssertionError(
            f"retinaface_vga: ours gives {len(boxes)} detections, detect.py's way {len(dets)}; "
            f"max |diff| boxes/landmarks {diff_box:.2e} px, scores {diff_score:.2e}"
        )
    warmup = 0 if quick else 1  # the checks above already ran every path once
    iters = 2 if quick else (30 if on_gpu else 10)
    t_anchor = time_fn(anchor, warmup=warmup, iters=iters, device=device)
    t_ours = time_fn(ours, warmup=warmup, iters=iters, device=device)
    extra = {
        "detections": str(len(boxes)),
        "max |diff| px/score": f"{diff_box:.1e}/{diff_score:.1e}",
    }
    rows = [
        BenchRow(
            name=f"mnet0.25 {WIDTH}x{HEIGHT}, 1 image, end to end",
            anchor="same weights, detect.py's way (PriorBox loop, numpy py_cpu_nms)",
            anchor_s=t_anchor,
            ours_s=t_ours,
            target=1 / 0.8,
            extra=dict(extra, **({"weights": note} if note else {})),
        )
    ]

    # --- row 2: 8 images in one forward vs one at a time ---
    variants = [chw, chw.flip(2), chw.flip(1), chw.flip(1, 2)]
    variants += [v.roll((HEIGHT // 3, WIDTH // 4), dims=(1, 2)) for v in variants]
    rows.append(_batched_row(model, variants[:BATCH], device, quick, warmup, note))
    # --- row 3 (D2EXT_BENCH_RETINAFACE_TRAINED set): the same with trained weights ---
    trained = os.environ.get("D2EXT_BENCH_RETINAFACE_TRAINED", "")
    if trained:
        model, images = _trained_model_and_images(trained, device)
        rows.append(_batched_row(model, images, device, quick, warmup, f"trained: {trained}"))
    return rows
