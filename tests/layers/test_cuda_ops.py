"""The CUDA kernels of d2ext's compiled ops on a GPU (``make device-check`` runs these).

Only the mask ops have CUDA kernels (``csrc/mask_ops/mask_ops_cuda.cu``; the evaluation ops in
``csrc/evaluation`` are CPU-only). Each CUDA op is compared, on the same inputs, with

* the CPU kernel: both run ``mask_ops_math.h``'s float32 arithmetic with explicit roundings, so
  ``resize_threshold`` and ``paste_masks`` give the same booleans bit for bit. ``assemble_masks``
  gets ``sigmoid(P @ c)`` from ATen on each device (cuBLAS and the CPU BLAS sum in different
  orders), so a pixel may differ only where the two devices' float maps lie on either side of
  the threshold;
* its pure-torch reference run on the GPU (torch's CUDA kernels round in their own order): a
  pixel may differ only within ``TIE`` of the threshold.

Sizes include the benchmark's (100 detections, 32x138x138 prototypes -> 800x1333; 100 masks
28x28 -> 800x1333), empty inputs, boxes partly or wholly outside the image, an output larger
than one launch grid (the kernels' grid-stride loop) and one past 2**31 pixels.
"""

import pytest
import torch
from test_mask_ops import TIE, paste_inputs, yolact_inputs  # tests/layers
from torch.nn import functional as F

import d2ext.layers.mask_ops as mo
from d2ext.layers import (
    assemble_masks,
    assemble_masks_reference,
    cuda_built,
    paste_masks,
    paste_masks_reference,
    resize_threshold,
    resize_threshold_reference,
)
from d2ext.layers.mask_ops import paste_mask_values
from d2ext.layers.prototype_masks import box_crop_region, prototype_masks

DEVICE = "cuda"

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    pytest.mark.skipif(
        not cuda_built(),
        reason="d2ext._C not built with CUDA (FORCE_CUDA=1 python setup.py build_ext --inplace)",
    ),
]

BENCH_HW = (800, 1333)


def assert_differ_only_at_ties(ours, ref, values, threshold, other_values=None):
    """ours, ref: bool (N, H, W); values: the float map ``ref`` thresholds. A pixel may differ only
    where ``values`` is within TIE of ``threshold`` or, when ``other_values`` (the float map of the
    other side) is given, where the two maps lie on either side of it."""
    assert ours.dtype == torch.bool and ref.dtype == torch.bool
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    diff = ours != ref.to(ours.device)
    if not bool(diff.any()):
        return
    lo = hi = values.to(ours.device)
    if other_values is not None:
        other = other_values.to(ours.device)
        lo, hi = torch.minimum(lo, other), torch.maximum(hi, other)
    far = diff & ~((lo - TIE <= threshold) & (threshold <= hi + TIE))
    assert not bool(far.any()), (
        f"{int(far.sum())} of {diff.numel()} pixels differ away from the threshold"
    )
    assert diff.float().mean().item() < 1e-4


def assembly_values(protos, coeffs, boxes, out_hw, padding):
    """The float map dbolya/yolact thresholds (sigmoid(P @ c), cropped, upsampled), computed by
    torch on the inputs' device."""
    n, (hp, wp) = coeffs.shape[0], protos.shape[1:]
    if n == 0 or 0 in out_hw:
        return torch.zeros((n, *out_hw), device=protos.device)
    m = prototype_masks(protos, coeffs) * box_crop_region(boxes, hp, wp, padding)
    return F.interpolate(m[None], out_hw, mode="bilinear", align_corners=False)[0]


def resize_values(x, out_hw, convention):
    """The float map :func:`resize_threshold_reference` thresholds."""
    if convention == "interpolate":
        return F.interpolate(x[None], out_hw, mode="bilinear", align_corners=False)[0]
    whole = torch.tensor([[0.0, 0.0, out_hw[1], out_hw[0]]], device=x.device)
    return paste_mask_values(x, whole.expand(x.shape[0], 4), out_hw)


def paste_inputs_with_outside_boxes(n, m, img_hw, seed):
    """Smooth masks in [0, 1]; the last 5 boxes partly outside, wholly outside or inverted."""
    masks, boxes = paste_inputs(n, m=m, img_hw=img_hw, smooth=True, seed=seed)
    h, w = img_hw
    if n >= 9:
        boxes[-5:] = torch.tensor(
            [
                [-20.0, -15.5, 30.25, 25.0],  # partly outside, top left
                [w - 25.5, h - 10.0, w + 40.0, h + 30.75],  # partly outside, bottom right
                [w + 5.0, 10.0, w + 50.0, 40.0],  # right of the image
                [-60.0, -40.0, -2.5, -1.5],  # above and left of it
                [30.0, 20.0, 10.0, 50.0],  # inverted
            ]
        )
    return masks, boxes


def on(device, *tensors):
    return [t.to(device) for t in tensors]


# ----------------------------------------------------------------------------- resize_threshold
@pytest.mark.parametrize("convention", ["interpolate", "grid_sample"])
@pytest.mark.parametrize(
    "shape,out_hw",
    [
        ((4, 13, 17), (40, 57)),
        ((3, 9, 14), (1, 1)),
        ((2, 5, 5), (0, 7)),
        ((0, 5, 6), (5, 6)),
        ((100, 28, 28), BENCH_HW),
    ],
)
def test_resize_threshold(convention, shape, out_hw):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
    (xd,) = on(DEVICE, x)
    values = resize_values(xd, out_hw, convention) if shape[0] and 0 not in out_hw else None
    for thr in (0.5, 0.0, 0.3, 0.9):
        ours = resize_threshold(xd, out_hw, thr, convention)
        assert (
            ours.device.type == DEVICE
            and ours.dtype == torch.bool
            and ours.shape == (shape[0], *out_hw)
        )
        cpu = torch.ops.d2ext.resize_threshold(
            x, out_hw[0], out_hw[1], thr, convention == "grid_sample"
        )
        assert torch.equal(ours.cpu(), cpu), thr
        ref = resize_threshold_reference(xd, out_hw, thr, convention)
        if values is None:
            assert not ref.any() and not ours.any()
        else:
            assert_differ_only_at_ties(ours, ref, values, thr)


# ----------------------------------------------------------------------------- assemble_masks
@pytest.mark.parametrize(
    "n,k,hp,wp,out_hw",
    [
        (100, 32, 138, 138, BENCH_HW),  # the benchmark's YOLACT-550 size
        (12, 8, 23, 31, (57, 71)),
        (7, 1, 23, 31, (40, 33)),
        (20, 4, 9, 11, (8, 300)),  # downsampling in one axis
        (0, 32, 138, 138, (550, 550)),  # no detection
        (5, 8, 23, 31, (0, 40)),  # empty output
    ],
)
def test_assemble_masks(n, k, hp, wp, out_hw):
    protos, coeffs, boxes = yolact_inputs(n, k, hp, wp, seed=n + k)
    if n >= 8:
        coeffs[7] = float("nan")  # NaN coefficients: all-False mask on every path
    pd, cd, bd = on(DEVICE, protos, coeffs, boxes)
    for thr, pad in [(0.5, 1), (0.0, 0), (0.9, 3)]:
        ours = assemble_masks(pd, cd, bd, out_hw, thr, pad)
        assert (
            ours.device.type == DEVICE and ours.dtype == torch.bool and ours.shape == (n, *out_hw)
        )
        cpu = torch.ops.d2ext.assemble_masks(protos, coeffs, boxes, out_hw[0], out_hw[1], thr, pad)
        ref = assemble_masks_reference(pd, cd, bd, out_hw, thr, pad)
        if n == 0 or 0 in out_hw:
            assert ours.numel() == cpu.numel() == ref.numel() == 0
            continue
        if n >= 8:
            assert not ours[7].any()
        values = assembly_values(pd, cd, bd, out_hw, pad)
        assert_differ_only_at_ties(
            ours, cpu, values, thr, other_values=assembly_values(protos, coeffs, boxes, out_hw, pad)
        )
        assert_differ_only_at_ties(ours, ref, values, thr)


# ----------------------------------------------------------------------------- paste_masks
@pytest.mark.parametrize(
    "n,m,img_hw",
    [
        (100, 28, BENCH_HW),  # the benchmark's Mask R-CNN size
        (12, 14, (61, 83)),
        (9, 28, (7, 300)),
        (0, 28, (20, 30)),  # no detection
    ],
)
def test_paste_masks(n, m, img_hw):
    masks, boxes = paste_inputs_with_outside_boxes(n, m, img_hw, seed=n)
    md, bd = on(DEVICE, masks, boxes)
    values = paste_mask_values(md, bd, img_hw) if n else None
    for thr in (0.5, 0.0, 0.35, 0.8, 1.0):
        ours = paste_masks(md, bd, img_hw, thr)
        assert (
            ours.device.type == DEVICE and ours.dtype == torch.bool and ours.shape == (n, *img_hw)
        )
        assert torch.equal(
            ours.cpu(), torch.ops.d2ext.paste_masks(masks, boxes, img_hw[0], img_hw[1], thr)
        ), thr
        if n == 0:
            continue
        assert not ours[-3:].any()  # wholly outside or inverted
        if thr == 0.0:  # partly outside: clipped to the image, not dropped (region to 26 x 32)
            assert (
                ours[-5, :26, :32].all() and not ours[-5, 26:].any() and not ours[-5, :, 32:].any()
            )
        if (
            thr >= 0.5
        ):  # D2 on GPU samples the whole image; the two agree from 0.5 up (masks in [0, 1])
            assert_differ_only_at_ties(
                ours, paste_masks_reference(md, bd, img_hw, thr), values, thr
            )


# ----------------------------------------------------------------------------- dispatch, layout, size
def test_public_functions_run_the_cuda_kernels(monkeypatch):
    """float32 CUDA tensors go to torch.ops.d2ext.*, never to the pure-torch references."""

    def refuse(*args, **kwargs):
        raise AssertionError("the pure-torch reference ran for CUDA float32 inputs")

    for name in ("assemble_masks_reference", "paste_masks_reference", "resize_threshold_reference"):
        monkeypatch.setattr(mo, name, refuse)
    protos, coeffs, boxes = on(DEVICE, *yolact_inputs(6, 4))
    masks, pboxes = on(DEVICE, *paste_inputs(6))
    for out in (
        mo.assemble_masks(protos, coeffs, boxes, (30, 40)),
        mo.paste_masks(masks, pboxes, (61, 83)),
        mo.resize_threshold(masks, (50, 50), 0.5, "interpolate"),
        mo.resize_threshold(masks, (50, 50), 0.5, "grid_sample"),
    ):
        assert out.device.type == DEVICE and out.dtype == torch.bool and out.any()


def test_non_contiguous_and_non_float_inputs():
    protos, coeffs, boxes = on(DEVICE, *yolact_inputs(10, 8, 23, 31))
    protos_t = protos.permute(0, 2, 1).contiguous().permute(0, 2, 1)  # same values, other strides
    coeffs_t = coeffs.t().contiguous().t()
    assert not protos_t.is_contiguous() and not coeffs_t.is_contiguous()
    assert torch.equal(
        assemble_masks(protos_t, coeffs_t, boxes, (57, 71)),
        assemble_masks(protos, coeffs, boxes, (57, 71)),
    )
    masks, pboxes = on(DEVICE, *paste_inputs(8))
    masks_t = masks.transpose(1, 2).contiguous().transpose(1, 2)
    boxes_t = pboxes.t().contiguous().t()
    assert torch.equal(
        paste_masks(masks_t, boxes_t, (61, 83)), paste_masks(masks, pboxes, (61, 83))
    )
    assert torch.equal(resize_threshold(masks_t, (40, 30)), resize_threshold(masks, (40, 30)))
    binary = masks > 0.5  # 0/1 masks of another dtype are cast to float, as D2 does
    assert torch.equal(
        paste_masks(binary, pboxes, (61, 83)), paste_masks(binary.float(), pboxes, (61, 83))
    )


def test_output_larger_than_one_launch_grid():
    """130 x 800 x 1333 pixels > 65535 * 8 blocks x 256 threads: the grid-stride loop goes round."""
    masks, boxes = paste_inputs_with_outside_boxes(130, 28, BENCH_HW, seed=5)
    ours = paste_masks(*on(DEVICE, masks, boxes), BENCH_HW)
    assert ours.numel() > 65535 * 8 * 256
    assert torch.equal(ours.cpu(), torch.ops.d2ext.paste_masks(masks, boxes, *BENCH_HW, 0.5))
    x = torch.rand(130, 20, 20, generator=torch.Generator().manual_seed(6))
    ours = resize_threshold(*on(DEVICE, x), BENCH_HW)
    assert torch.equal(ours.cpu(), torch.ops.d2ext.resize_threshold(x, *BENCH_HW, 0.5, False))


def test_output_past_int32_indexing():
    """2 x 33000 x 33000 > 2**31 pixels: the flat pixel index must not wrap."""
    x = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(7))
    ours = resize_threshold(*on(DEVICE, x), (33000, 33000))
    assert ours.numel() > 2**31
    cpu = torch.ops.d2ext.resize_threshold(x, 33000, 33000, 0.5, False)
    assert torch.equal(ours, cpu.to(DEVICE))
    assert bool(ours[1, -1].any()) and bool((~ours[1, -1]).any())  # the last row is written
