"""Benchmarks of the fused mask kernels (:mod:`d2ext.layers.mask_ops`) against the stock chains.

* ``mask_assembly``: :func:`assemble_masks` vs dbolya/yolact's torch chain (matmul -> sigmoid ->
  crop -> F.interpolate -> threshold) for 100 detections, 32 x 138 x 138 prototypes -> 800 x 1333.
* ``paste_masks``: :func:`paste_masks` vs D2's ``paste_masks_in_image``, 100 masks 28 x 28 ->
  800 x 1333.

Both outputs are bool (N, 800, 1333); "extra" reports the output bandwidth of ours (bytes of the
bool output per second) and whether the compiled extension ran.
"""
from typing import List

import torch

from detectron2.layers.mask_ops import paste_masks_in_image

from d2ext.benchmarks import BenchRow, register_benchmark, time_fn
from d2ext.layers import assemble_masks, assemble_masks_reference, extension_available, paste_masks

IMAGE_HW = (800, 1333)
NUM_DETS = 100


def _random_boxes(n: int, g: torch.Generator) -> torch.Tensor:
    """(n, 4) XYXY normalised to [0, 1], sides 5%-50% of the image (COCO-like detections)."""
    wh = torch.rand(n, 2, generator=g) * 0.45 + 0.05
    xy = torch.rand(n, 2, generator=g) * (1 - wh)
    return torch.cat([xy, xy + wh], dim=1)


def _extra(out_bytes: int, seconds: float) -> dict:
    return {"out GB/s": f"{out_bytes / seconds / 1e9:.2f}", "ext": str(extension_available())}


def _agreement(a: torch.Tensor, b: torch.Tensor) -> str:
    return f"{(a == b).float().mean().item() * 100:.4f}%"


@register_benchmark("mask_assembly")
def bench_mask_assembly(device: str, quick: bool) -> List[BenchRow]:
    """YOLACT mask assembly: fused kernel vs the original torch chain."""
    g = torch.Generator().manual_seed(0)
    k, hp, wp = 32, 138, 138
    protos = torch.relu(torch.randn(k, hp, wp, generator=g)).to(device)
    coeffs = torch.randn(NUM_DETS, k, generator=g).to(device) * 0.3
    boxes = _random_boxes(NUM_DETS, g).to(device)
    ours = lambda: assemble_masks(protos, coeffs, boxes, IMAGE_HW)  # noqa: E731
    anchor = lambda: assemble_masks_reference(protos, coeffs, boxes, IMAGE_HW)  # noqa: E731
    iters = 3 if quick else 7
    t_anchor = time_fn(anchor, iters=iters, device=device)
    t_ours = time_fn(ours, iters=iters, device=device)
    out = ours()
    extra = _extra(out.numel() * out.element_size(), t_ours)
    extra["agree"] = _agreement(out, anchor())
    return [
        BenchRow(
            name=f"{NUM_DETS} dets, {k}x{hp}x{wp} protos -> {IMAGE_HW[0]}x{IMAGE_HW[1]} bool",
            anchor="torch chain (matmul, sigmoid, crop, F.interpolate, > 0.5)",
            anchor_s=t_anchor,
            ours_s=t_ours,
            target=5.0,
            extra=extra,
        )
    ]


@register_benchmark("paste_masks")
def bench_paste_masks(device: str, quick: bool) -> List[BenchRow]:
    """D2 mask paste: fused kernel vs detectron2 paste_masks_in_image."""
    g = torch.Generator().manual_seed(0)
    m = 28
    # trained-model-like masks: smooth logits, sigmoid
    logits = torch.nn.functional.interpolate(torch.randn(NUM_DETS, 1, 7, 7, generator=g) * 4, (m, m), mode="bilinear")
    masks = torch.sigmoid(logits[:, 0]).to(device)
    scale = torch.tensor([IMAGE_HW[1], IMAGE_HW[0]] * 2, dtype=torch.float32)
    boxes = (_random_boxes(NUM_DETS, g) * scale).to(device)
    ours = lambda: paste_masks(masks, boxes, IMAGE_HW)  # noqa: E731
    anchor = lambda: paste_masks_in_image(masks, boxes, IMAGE_HW)  # noqa: E731
    iters = 3 if quick else 7
    t_anchor = time_fn(anchor, iters=iters, device=device)
    t_ours = time_fn(ours, iters=iters, device=device)
    out = ours()
    extra = _extra(out.numel() * out.element_size(), t_ours)
    extra["agree"] = _agreement(out, anchor())
    return [
        BenchRow(
            name=f"{NUM_DETS} masks {m}x{m} -> {IMAGE_HW[0]}x{IMAGE_HW[1]} bool",
            anchor="D2 paste_masks_in_image",
            anchor_s=t_anchor,
            ours_s=t_ours,
            target=3.0,
            extra=extra,
        )
    ]
