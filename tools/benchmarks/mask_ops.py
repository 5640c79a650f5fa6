"""Benchmarks of the fused mask kernels (:mod:`d2ext.layers.mask_ops`) against the stock chains.

* ``mask_assembly``: :func:`assemble_masks` vs dbolya/yolact's torch chain (matmul -> sigmoid ->
  crop -> F.interpolate -> threshold) for 100 detections, 32 x 138 x 138 prototypes -> 800 x 1333.
* ``paste_masks``: :func:`paste_masks` vs D2's ``paste_masks_in_image``, 100 masks 28 x 28 ->
  800 x 1333.

``--quick`` runs 10 detections and fewer repetitions. Both outputs are bool (N, 800, 1333);
"extra" reports the output bandwidth of ours (bytes of the bool output per second) and whether
the compiled kernels ran. On a GPU it also gives that bandwidth as a fraction of the device's
DRAM peak and of a measured device-to-device copy (the practical ceiling; the inputs, 2.4 MB of
prototypes or 0.3 MB of masks, are small next to the 107 MB output).
"""

import functools
from typing import List, Optional

import torch
from detectron2.layers.mask_ops import paste_masks_in_image

from d2ext.layers import (
    assemble_masks,
    assemble_masks_reference,
    cuda_built,
    extension_available,
    paste_masks,
)

from . import BenchRow, register_benchmark, time_fn

IMAGE_HW = (800, 1333)
NUM_DETS = 100
QUICK_DETS = 10  # --quick: a smoke run of the same code path


def _random_boxes(n: int, g: torch.Generator) -> torch.Tensor:
    """(n, 4) XYXY normalised to [0, 1], sides 5%-50% of the image (COCO-like detections)."""
    wh = torch.rand(n, 2, generator=g) * 0.45 + 0.05
    xy = torch.rand(n, 2, generator=g) * (1 - wh)
    return torch.cat([xy, xy + wh], dim=1)


def _is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def _iters(device: str, quick: bool) -> int:
    # a GPU call takes well under a millisecond: more repetitions for a stable median
    return 3 if quick else (30 if _is_cuda(device) else 7)


def peak_dram_bandwidth(device: str) -> Optional[float]:
    """Theoretical DRAM bandwidth of a CUDA device in bytes/s: two transfers per memory clock
    (DDR/HBM) times the bus width, read from torch's device properties (memory clock in kHz) or,
    where this torch does not expose them, from NVML (MHz). None when neither reports it."""
    props = torch.cuda.get_device_properties(device)
    clock_hz = getattr(props, "memory_clock_rate", 0) * 1e3
    bus_bits = getattr(props, "memory_bus_width", 0)
    if not (clock_hz and bus_bits):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(torch.device(device).index or 0)
            clock_hz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM) * 1e6
            bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(handle)
        except Exception:  # no NVML binding or driver query: the row reports no peak
            return None
    return 2 * clock_hz * bus_bits / 8 if clock_hz and bus_bits else None


@functools.lru_cache(maxsize=None)
def copy_bandwidth(device: str) -> float:
    """Measured device-to-device copy of 1 GiB (bytes read + written per second)."""
    src = torch.empty(2**28, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = time_fn(lambda: dst.copy_(src), warmup=2, iters=10, device=device)
    return 2 * src.numel() * src.element_size() / seconds


def _extra(out_bytes: int, seconds: float, device: str) -> dict:
    bandwidth = out_bytes / seconds
    ran_ext = extension_available() and (not _is_cuda(device) or cuda_built())
    extra = {"out GB/s": f"{bandwidth / 1e9:.2f}", "ext": str(ran_ext)}
    if _is_cuda(device):
        peak = peak_dram_bandwidth(device)
        if peak:
            extra[f"of peak {peak / 1e9:.0f} GB/s"] = f"{100 * bandwidth / peak:.1f}%"
        copy = copy_bandwidth(device)
        extra[f"of copy {copy / 1e9:.0f} GB/s"] = f"{100 * bandwidth / copy:.1f}%"
    return extra


def _agreement(a: torch.Tensor, b: torch.Tensor) -> str:
    return f"{(a == b).float().mean().item() * 100:.4f}%"


def _mask_row(name, anchor_name, ours, anchor, target, device, quick) -> BenchRow:
    """Times ``ours()`` against ``anchor()`` (both return bool masks) and reports the output
    bandwidth of ours and the fraction of identical pixels."""
    iters = _iters(device, quick)
    t_anchor = time_fn(anchor, iters=iters, device=device)
    t_ours = time_fn(ours, iters=iters, device=device)
    out = ours()
    extra = _extra(out.numel() * out.element_size(), t_ours, device)
    extra["agree"] = _agreement(out, anchor())
    return BenchRow(
        name=name, anchor=anchor_name, anchor_s=t_anchor, ours_s=t_ours, target=target, extra=extra
    )


@register_benchmark("mask_assembly")
def bench_mask_assembly(device: str, quick: bool) -> List[BenchRow]:
    """YOLACT mask assembly: fused kernel vs the original torch chain."""
    g = torch.Generator().manual_seed(0)
    n, k, hp, wp = QUICK_DETS if quick else NUM_DETS, 32, 138, 138
    protos = torch.relu(torch.randn(k, hp, wp, generator=g)).to(device)
    coeffs = torch.randn(n, k, generator=g).to(device) * 0.3
    boxes = _random_boxes(n, g).to(device)
    return [
        _mask_row(
            f"{n} dets, {k}x{hp}x{wp} protos -> {IMAGE_HW[0]}x{IMAGE_HW[1]} bool",
            "torch chain (matmul, sigmoid, crop, F.interpolate, > 0.5)",
            lambda: assemble_masks(protos, coeffs, boxes, IMAGE_HW),
            lambda: assemble_masks_reference(protos, coeffs, boxes, IMAGE_HW),
            5.0,
            device,
            quick,
        )
    ]


@register_benchmark("paste_masks")
def bench_paste_masks(device: str, quick: bool) -> List[BenchRow]:
    """D2 mask paste: fused kernel vs detectron2 paste_masks_in_image."""
    g = torch.Generator().manual_seed(0)
    n, m = QUICK_DETS if quick else NUM_DETS, 28
    # trained-model-like masks: smooth logits, sigmoid
    logits = torch.nn.functional.interpolate(
        torch.randn(n, 1, 7, 7, generator=g) * 4, (m, m), mode="bilinear"
    )
    masks = torch.sigmoid(logits[:, 0]).to(device)
    scale = torch.tensor([IMAGE_HW[1], IMAGE_HW[0]] * 2, dtype=torch.float32)
    boxes = (_random_boxes(n, g) * scale).to(device)
    return [
        _mask_row(
            f"{n} masks {m}x{m} -> {IMAGE_HW[0]}x{IMAGE_HW[1]} bool",
            "D2 paste_masks_in_image",
            lambda: paste_masks(masks, boxes, IMAGE_HW),
            lambda: paste_masks_in_image(masks, boxes, IMAGE_HW),
            3.0,
            device,
            quick,
        )
    ]
