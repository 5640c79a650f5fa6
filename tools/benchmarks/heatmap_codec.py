"""Heatmap decode (:class:`d2ext.modeling.common.HeatmapCodec`) against a straightforward
per-keypoint implementation, for 64 crops x 68 points at 64 x 64 (a face batch of the 2-stack
setting), in each of the three decode modes.

The anchor loops over instances and keypoints in Python with torch scalars, the way the original
code is written: princeton-vl's parser (3x3 max-pool NMS of every map, argmax, quarter step,
+0.5), mmpose's ``get_heatmap_maximum`` + ``refine_keypoints`` (argmax, quarter step by the sign
of the neighbour difference), and mmpose's ``refine_keypoints_dark`` (per map: zero padding,
``cv2.GaussianBlur``, rescale to the original max, clamp 1e-10, log; per keypoint: gradient,
Hessian, ``-inv(H) @ g``). It always runs on the CPU (its blur is OpenCV's and its branches are
host code); ours runs on ``--device``. Before timing, both decodes of the same heatmaps must give
the same coordinates: in float64 and float32 exactly for princeton/mmpose; for DARK, on the maps
with a peak (> 0.5), within 1e-9 px in float64 and 1e-4 px in float32 (what is timed). OpenCV's
blur sums in another order than the codec's banded matmuls, and on a map of noise alone the
log-Hessian is ill-conditioned: there rounding moves the unbounded DARK step by up to ~0.05 px
in float32 (both decodes then land far from any peak); "extra" reports both maxima.

Heatmaps: unbiased Gaussians (sigma 2) at random sub-pixel points, 10% of the keypoints without a
peak, plus N(0, 0.02^2) noise, like a trained network's output.
"""

from typing import List, Tuple

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from d2ext.modeling.common import HeatmapCodec

from . import BenchRow, register_benchmark, time_fn

NUM_CROPS, NUM_KEYPOINTS, SIZE = 64, 68, 64
QUICK_CROPS = 8  # --quick: same code path, fewer crops
SIGMA, BLUR_KERNEL = 2.0, 11


def _heatmaps(num_crops: int) -> torch.Tensor:
    """(num_crops, 68, 64, 64) float32 network-like heatmaps (see the module docstring)."""
    g = torch.Generator().manual_seed(0)
    points = torch.rand(num_crops, NUM_KEYPOINTS, 2, generator=g) * (SIZE - 1)
    visible = torch.rand(num_crops, NUM_KEYPOINTS, generator=g) > 0.1
    codec = HeatmapCodec((SIZE, SIZE), SIGMA, unbiased_encoding=True, decode="mmpose")
    maps, _ = codec.encode(points, visible)
    return maps + 0.02 * torch.randn(maps.shape, generator=g)


def _argmax(hm: torch.Tensor) -> Tuple[int, int, float]:
    index = int(torch.argmax(hm))
    y, x = divmod(index, hm.shape[1])
    return x, y, float(hm[y, x])


def loop_decode_princeton(heatmaps: torch.Tensor) -> torch.Tensor:
    n, k, h, w = heatmaps.shape
    coords = torch.zeros(n, k, 2, dtype=heatmaps.dtype)
    for i in range(n):
        for j in range(k):
            hm = heatmaps[i, j]
            peaks = F.max_pool2d(hm[None, None], 3, stride=1, padding=1)[0, 0] == hm
            x, y, score = _argmax(hm * peaks)
            if score <= 0:
                coords[i, j] = torch.tensor([x, y], dtype=heatmaps.dtype)
                continue
            dx = 0.25 if hm[y, min(x + 1, w - 1)] > hm[y, max(x - 1, 0)] else -0.25
            dy = 0.25 if hm[min(y + 1, h - 1), x] > hm[max(y - 1, 0), x] else -0.25
            coords[i, j] = torch.tensor([x + dx + 0.5, y + dy + 0.5], dtype=heatmaps.dtype)
    return coords


def loop_decode_mmpose(heatmaps: torch.Tensor) -> torch.Tensor:
    n, k, h, w = heatmaps.shape
    coords = torch.full((n, k, 2), -1.0, dtype=heatmaps.dtype)
    for i in range(n):
        for j in range(k):
            hm = heatmaps[i, j]
            x, y, score = _argmax(hm)
            if score <= 0:
                continue
            px, py = float(x), float(y)
            if 1 < x < w - 1 and 0 < y:
                px += 0.25 * float(torch.sign(hm[y, x + 1] - hm[y, x - 1]))
            if 1 < y < h - 1 and 0 < x:
                py += 0.25 * float(torch.sign(hm[y + 1, x] - hm[y - 1, x]))
            coords[i, j] = torch.tensor([px, py], dtype=heatmaps.dtype)
    return coords


def _blur_log(hm: torch.Tensor, kernel: int) -> torch.Tensor:
    """mmpose's ``gaussian_blur`` of one map (zero padding, cv2, keep the max), clamp, log."""
    border = (kernel - 1) // 2
    padded = np.pad(hm.numpy(), border)
    blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border]
    blurred = torch.from_numpy(blurred)
    top = blurred.max()
    blurred = blurred * (hm.max() / top) if top != 0 else torch.zeros_like(blurred)
    return blurred.clamp(min=1e-10).log()


def loop_decode_dark(heatmaps: torch.Tensor, kernel: int = BLUR_KERNEL) -> torch.Tensor:
    n, k, h, w = heatmaps.shape
    coords = torch.full((n, k, 2), -1.0, dtype=heatmaps.dtype)
    for i in range(n):
        for j in range(k):
            x, y, score = _argmax(heatmaps[i, j])
            m = _blur_log(heatmaps[i, j], kernel)  # mmpose blurs every map
            if score <= 0:
                continue
            coords[i, j] = torch.tensor([x, y], dtype=heatmaps.dtype)
            if not (1 < x < w - 2 and 1 < y < h - 2):
                continue
            grad = torch.stack(
                [0.5 * (m[y, x + 1] - m[y, x - 1]), 0.5 * (m[y + 1, x] - m[y - 1, x])]
            )
            dxx = 0.25 * (m[y, x + 2] - 2 * m[y, x] + m[y, x - 2])
            dyy = 0.25 * (m[y + 2, x] - 2 * m[y, x] + m[y - 2, x])
            dxy = 0.25 * (m[y + 1, x + 1] - m[y - 1, x + 1] - m[y + 1, x - 1] + m[y - 1, x - 1])
            if dxx * dyy - dxy**2 == 0:
                continue
            hessian = torch.stack([torch.stack([dxx, dxy]), torch.stack([dxy, dyy])])
            offset = -torch.linalg.inv(hessian) @ grad
            if torch.isfinite(offset).all():
                coords[i, j] += offset
    return coords


LOOPS = {"princeton": loop_decode_princeton, "mmpose": loop_decode_mmpose, "dark": loop_decode_dark}


@register_benchmark("heatmap_decode")
def bench_heatmap_decode(device: str, quick: bool) -> List[BenchRow]:
    """HeatmapCodec.decode vs per-keypoint torch loops, 64 crops x 68 points at 64x64."""
    num_crops = QUICK_CROPS if quick else NUM_CROPS
    heatmaps = _heatmaps(num_crops)
    on_device = heatmaps.to(device)
    peaked = heatmaps.flatten(2).amax(-1) > 0.5
    rows = []
    for mode, loop in LOOPS.items():
        codec = HeatmapCodec((SIZE, SIZE), SIGMA, decode=mode, blur_kernel=BLUR_KERNEL)
        diff = {}  # (dtype, maps) -> max |codec - loop| px
        for dtype in (torch.float64, torch.float32):
            maps = heatmaps.to(dtype)
            d = (loop(maps) - codec.decode(maps.to(device))[0].cpu()).abs().amax(-1)
            diff[dtype, "peaked"], diff[dtype, "all"] = d[peaked].max().item(), d.max().item()
        if mode == "dark":
            same = diff[torch.float64, "peaked"] <= 1e-9 and diff[torch.float32, "peaked"] <= 1e-4
        else:
            same = max(diff.values()) == 0
        if not same:
            raise AssertionError(f"decode={mode}: codec and loop differ by (px) {diff}")
        t_anchor = time_fn(lambda: loop(heatmaps), warmup=0, iters=1 if quick else 3)
        t_ours = time_fn(lambda: codec.decode(on_device), iters=10 if quick else 20, device=device)
        extra = {
            f"max |diff| px {name} peaked/all": f"{diff[dtype, 'peaked']:.1e}/"
            f"{diff[dtype, 'all']:.1e}"
            for dtype, name in ((torch.float32, "f32"), (torch.float64, "f64"))
        }
        extra["ours us/map"] = f"{1e6 * t_ours / (num_crops * NUM_KEYPOINTS):.2f}"
        rows.append(
            BenchRow(
                name=f"decode={mode}, {num_crops} crops x {NUM_KEYPOINTS} points, {SIZE}x{SIZE}",
                anchor="per-keypoint torch loop (CPU" + (", cv2 blur)" if mode == "dark" else ")"),
                anchor_s=t_anchor,
                ours_s=t_ours,
                extra=extra,
            )
        )
    return rows
