"""YolactEdge video inference: keyframe feature transfer against running the full YOLACT on every
frame, YolactEdge R-50 FPN at 550 on a 10-frame 480 x 640 video, in one process.

Row 1, one frame. Ours: a non-keyframe ``forward_video`` call (the ResNet up to C3 + its
lateral, flow net, warp of the keyframe's P4/P5, ``* scale + bias``, P3 + SPA, FPN output convs,
P6/P7, protonet, head, Fast NMS, mask assembly) on frame 1 with the state a real keyframe (frame
0) left. Anchor: the keyframe call on frame 0 (full YOLACT + keeping its features). Target: the
non-keyframe in <= 0.5x the keyframe's time (speed-up >= 2x). Extra: both calls' GFLOP
(``torch.utils.flop_counter``: the ratio no machine changes); the flow net, and flow net + warp +
scale/bias (``warp_keyframe`` on the real keyframe state), each timed by itself, as shares of
the non-keyframe; where a non-keyframe's time goes ("prof ...": ``cProfile`` over the timed
number of non-keyframe calls, the cumulative time of the methods that run each piece).

Row 2, throughput. Ours: the 10 frames through ``forward_video`` at k = 5 (keyframes 0 and 5).
Anchor: per-frame YOLACT with the same weights (d2ext's ``YOLACT``, ``model([{"image": f}])``
per frame). Speed-up = frames/s ratio, target >= 1.8x.

Timing: the two sides of a row alternate, one call each per round, medians over the rounds, so
a load that drifts during the run (a training job on another core) weighs on both alike.

Before timing: at k = 1 every YolactEdge frame must equal YOLACT's on it (same detections, boxes,
scores, classes, masks bit for bit), and at k = 5 the keyframe schedule must be 0 and 5.

Weights: seeded random; the class and box heads scaled by 0.1 as in ``export.py``'s YOLACT case
(random init saturates the softmax: thousands of tied scores of exactly 1.0); the config's score
threshold (0.05) then still keeps the full 100 detections, a crowded frame's worst case for NMS
and mask assembly. Video: a smooth random texture with fine noise (uint8), each frame the
480 x 640 window of it moved by (3, 5) px (y, x) from the last.
"""

import cProfile
import os
import pstats
from typing import Callable, Dict, List, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from torch.utils.flop_counter import FlopCounterMode

from d2ext.config import add_d2ext_config
from d2ext.modeling.common import FlowNetMini
from d2ext.modeling.yolact import YOLACT, ProtoNet, YOLACTHead
from d2ext.modeling.yolact import meta_arch as yolact_meta_arch
from d2ext.modeling.yolact_edge import SPA, YolactEdge

from . import BenchRow, register_benchmark, time_fn

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = "YolactEdge/yolact_edge_R_50_FPN_550.yaml"
HEIGHT, WIDTH, NUM_FRAMES, INTERVAL = 480, 640, 10, 5
SHIFT = (3, 5)  # (y, x) pixels the scene moves per frame
NONKEY_TARGET, VIDEO_TARGET = 2.0, 1.8


def _models(device: str):
    """(YolactEdge at k = INTERVAL, YOLACT with the same weights), both in eval mode."""
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(os.path.join(_REPO, "configs", CONFIG))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    cfg.MODEL.YOLACT_EDGE.KEYFRAME_INTERVAL = INTERVAL
    torch.manual_seed(0)
    edge = build_model(cfg).eval()
    with torch.no_grad():
        for conv in (edge.head.cls_logits, edge.head.bbox_pred):
            conv.weight.mul_(0.1)
            conv.bias.mul_(0.1)
    image_cfg = cfg.clone()
    image_cfg.MODEL.META_ARCHITECTURE = "YOLACT"
    yolact = build_model(image_cfg).eval()
    missing, unexpected = yolact.load_state_dict(edge.state_dict(), strict=False)
    temporal = [k for k in unexpected if not k.startswith(("flow_net.", "spa."))]
    if missing or temporal:
        raise AssertionError(
            f"YolactEdge -> YOLACT weights: missing {missing}, unexpected non-temporal {temporal}"
        )
    return edge, yolact


def _frames(num: int, seed: int = 0) -> List[torch.Tensor]:
    """``num`` (3, HEIGHT, WIDTH) uint8 frames: windows of one textured canvas, each SHIFT from
    the previous one (the scene moves by -SHIFT)."""
    g = torch.Generator().manual_seed(seed)
    h, w = HEIGHT + SHIFT[0] * (num - 1), WIDTH + SHIFT[1] * (num - 1)
    coarse = torch.rand(1, 3, h // 24 + 2, w // 24 + 2, generator=g)
    smooth = F.interpolate(coarse, (h, w), mode="bilinear", align_corners=False)[0]
    canvas = (smooth * 200 + torch.rand(3, h, w, generator=g) * 55).to(torch.uint8)
    return [
        canvas[
            :, i * SHIFT[0] : i * SHIFT[0] + HEIGHT, i * SHIFT[1] : i * SHIFT[1] + WIDTH
        ].contiguous()
        for i in range(num)
    ]


def _check_equal(what: str, a, b) -> None:
    """Raises unless Instances ``a`` and ``b`` are bit for bit the same."""
    if len(a) != len(b):
        raise AssertionError(f"{what}: {len(a)} vs {len(b)} detections")
    fields = {
        "boxes": (a.pred_boxes.tensor, b.pred_boxes.tensor),
        "scores": (a.scores, b.scores),
        "classes": (a.pred_classes, b.pred_classes),
        "masks": (a.pred_masks, b.pred_masks),
    }
    for name, (x, y) in fields.items():
        if not torch.equal(x, y):
            raise AssertionError(f"{what}: {name} differ")


def _check_outputs(edge: YolactEdge, yolact: YOLACT, inputs: List[Dict]) -> None:
    """k = 1 is plain YOLACT, frame by frame; k = INTERVAL keys frames 0 and INTERVAL."""
    edge.keyframe_interval = 1
    try:
        outs, _ = edge.forward_video(inputs[:2], edge.init_video_state())
    finally:
        edge.keyframe_interval = INTERVAL
    for i, out in enumerate(outs):
        ref = yolact([inputs[i]])[0]["instances"]
        _check_equal(f"frame {i}: YolactEdge k=1 vs YOLACT", out["instances"], ref)
    outs, _ = edge.forward_video(inputs, edge.init_video_state())
    keys = [i for i, out in enumerate(outs) if out["is_keyframe"]]
    expected = list(range(0, len(inputs), INTERVAL))
    if keys != expected:
        raise AssertionError(f"YolactEdge k={INTERVAL}: keyframes {keys}, expected {expected}")


def _code_key(fn: Callable):
    code = fn.__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def _gflop(call: Callable[[], object]) -> float:
    with FlopCounterMode(display=False) as counter:
        call()
    return counter.get_total_flops() / 1e9


def _interleaved(fns: Sequence[Callable[[], object]], rounds: int, device: str) -> List[float]:
    """Median time of each of ``fns``, called in turn ``rounds`` times after one warm-up each:
    a load that drifts during the run (a job on the other core) weighs on every one alike."""
    for fn in fns:
        fn()
    times = [[time_fn(fn, warmup=0, iters=1, device=device) for fn in fns] for _ in range(rounds)]
    return [sorted(column)[len(column) // 2] for column in zip(*times)]


def _profile_shares(call: Callable[[], object], calls: int) -> Dict[str, str]:
    """Shares of ``calls`` calls of ``call()`` (a non-keyframe ``forward_video``) by piece, from
    cProfile's cumulative time of the functions that run each piece."""
    profiler = cProfile.Profile()
    for _ in range(calls):
        profiler.runcall(call)
    stats = pstats.Stats(profiler).stats

    def cum(*fns: Callable) -> float:
        return sum(stats[_code_key(f)][3] for f in fns if _code_key(f) in stats)

    total = cum(YolactEdge.forward_video)
    flow = cum(FlowNetMini.forward)
    pieces = {
        "backbone to C3 + lateral": cum(YolactEdge.bottom_up_to_c3, YolactEdge.lateral_c3),
        "flow net": flow,
        "warp + scale/bias": cum(YolactEdge.warp_keyframe) - flow,
        "P3 + SPA": cum(YolactEdge.nonkey_phase1),
        "FPN out convs + P6/P7": cum(YolactEdge.fpn_phase2),
        "protonet": cum(ProtoNet.forward),
        "head": cum(YOLACTHead.forward),
        "box decode + NMS": cum(YOLACT.detect),
        "mask assembly": cum(yolact_meta_arch.assemble_masks),
    }
    pieces["other (preprocess, anchors, softmax...)"] = total - sum(pieces.values())
    spa = cum(SPA.forward)
    shares = {f"prof {k}": f"{100 * v / total:.0f}%" for k, v in pieces.items()}
    shares["prof P3 + SPA"] += f" (SPA {100 * spa / total:.0f}%)"
    return shares


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms"


@register_benchmark("yolact_edge_video")
def bench_yolact_edge_video(device: str, quick: bool) -> List[BenchRow]:
    """YolactEdge R-50 550, 10 VGA frames: non-keyframe vs keyframe, k=5 video vs per-frame YOLACT."""
    edge, yolact = _models(device)
    inputs = [{"image": f} for f in _frames(NUM_FRAMES)]
    iters, video_iters = (1, 1) if quick else (7, 5)
    with torch.no_grad():
        _check_outputs(edge, yolact, inputs)
        start = edge.init_video_state()
        (key_out,), key_state = edge.forward_video(inputs[:1], start)
        (nonkey_out,), _ = edge.forward_video(inputs[1:2], key_state)
        if nonkey_out["is_keyframe"]:
            raise AssertionError("frame 1 after a keyframe at k=5 must be a non-keyframe")

        def keyframe():
            return edge.forward_video(inputs[:1], start)

        def nonkeyframe():
            return edge.forward_video(inputs[1:2], key_state)

        t_key, t_nonkey = _interleaved([keyframe, nonkeyframe], iters, device)

        # the temporal pieces by themselves, on frame 1's lateral and the real keyframe's state
        key = key_state.keyframe
        lateral = edge.lateral_c3(edge.bottom_up_to_c3(edge.preprocess_image(inputs[1:2])))
        t_flow = time_fn(
            lambda: edge.flow_net(lateral, key.lateral, with_finest=False),
            iters=iters,
            device=device,
        )
        t_flow_warp = time_fn(
            lambda: edge.warp_keyframe(lateral, key.lateral, key.features),
            iters=iters,
            device=device,
        )
        profile = _profile_shares(nonkeyframe, calls=iters)
        flop_key, flop_nonkey = _gflop(keyframe), _gflop(nonkeyframe)

        def per_frame():
            return [yolact([x]) for x in inputs]

        def video():
            return edge.forward_video(inputs, edge.init_video_state())

        t_per_frame, t_video = _interleaved([per_frame, video], video_iters, device)

    threads = str(torch.get_num_threads())
    detections = f"{len(key_out['instances'])}/{len(nonkey_out['instances'])}"
    nonkey_extra = {
        "threads": threads,
        "non-key/key": f"{t_nonkey / t_key:.2f}x (target <= {1 / NONKEY_TARGET:g}x)",
        "GFLOP non-key/key": f"{flop_nonkey:.1f}/{flop_key:.1f} ({flop_nonkey / flop_key:.2f}x)",
        "flow+warp+scale/bias": f"{100 * t_flow_warp / t_nonkey:.1f}% ({_ms(t_flow_warp)})",
        "flow net alone": f"{100 * t_flow / t_nonkey:.1f}% ({_ms(t_flow)})",
        "detections key/non-key": detections,
    }
    nonkey_extra.update(profile)
    n = NUM_FRAMES
    return [
        BenchRow(
            name="YolactEdge R-50 550, 640x480: one non-keyframe",
            anchor="keyframe call (full YOLACT + state)",
            anchor_s=t_key,
            ours_s=t_nonkey,
            target=NONKEY_TARGET,
            extra=nonkey_extra,
        ),
        BenchRow(
            name=f"{n} frames 640x480 at k={INTERVAL} (forward_video)",
            anchor="per-frame YOLACT R-50 550, same weights",
            anchor_s=t_per_frame,
            ours_s=t_video,
            target=VIDEO_TARGET,
            extra={
                "threads": threads,
                "fps ours/anchor": f"{n / t_video:.2f}/{n / t_per_frame:.2f}",
                "keyframes": " ".join(str(i) for i in range(0, n, INTERVAL)),
            },
        ),
    ]
