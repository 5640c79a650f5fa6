"""d2ext.layers mask ops: compiled kernels vs pure-torch references vs torch / D2 / dbolya-yolact.

Booleans must be identical except threshold ties: a pixel may only differ where the float value
computed by the torch chain is within 1e-6 of the threshold (FMA contraction, see mask_ops.py).
"""

import glob
import os
import subprocess
import sys

import pytest
import torch
from detectron2.layers.mask_ops import paste_masks_in_image
from torch.nn import functional as F

import d2ext.layers.mask_ops as mo
from d2ext.layers import (
    assemble_masks,
    assemble_masks_reference,
    extension_available,
    paste_masks,
    paste_masks_reference,
    resize_threshold,
    resize_threshold_reference,
)
from d2ext.layers.mask_ops import paste_mask_values
from d2ext.layers.prototype_masks import box_crop_region, crop_masks, prototype_masks

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
needs_ext = pytest.mark.skipif(not extension_available(), reason="d2ext._C not built")
TIE = 1e-6
# the compiled ops replay the FMA rounding of torch's AVX2/AVX512 kernels; without the extension
# the references (D2's paste itself) run: identical booleans in both cases (mask_ops.py)
BIT_EXACT = not extension_available() or torch.backends.cpu.get_cpu_capability() in (
    "AVX2",
    "AVX512",
)


def assert_same_but_ties(ours, ref, values, threshold):
    """ours/ref: bool (N, H, W); values: the float map the reference thresholds."""
    assert ours.dtype == torch.bool and ours.shape == ref.shape
    diff = ours != ref
    if diff.any():
        far = diff & ((values - threshold).abs() > TIE)
        assert not far.any(), f"{int(far.sum())} pixels differ away from the threshold"
        assert diff.float().mean() < 1e-4


# ----------------------------------------------------------------------------- inputs
def yolact_inputs(n, k=8, hp=23, wp=31, seed=0):
    g = torch.Generator().manual_seed(seed)
    protos = torch.relu(torch.randn(k, hp, wp, generator=g))
    coeffs = torch.randn(n, k, generator=g) * 0.5
    xy = torch.rand(n, 2, generator=g) * 1.2 - 0.1  # some boxes leave [0, 1]
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 0.6], dim=1)
    if n >= 6:
        boxes[0] = torch.tensor([0.0, 0.0, 1.0, 1.0])  # whole image
        boxes[1] = torch.tensor([0.9, 0.2, 0.3, 0.8])  # x1 > x2: sorted like the original
        boxes[2] = torch.tensor([0.4, 0.4, 0.4, 0.7])  # zero width
        boxes[3] = torch.tensor([1.5, 1.5, 2.0, 2.0])  # outside
        boxes[4] = torch.tensor([-1.0, -0.5, -0.2, 0.3])  # outside left
        boxes[5] = torch.tensor([0.0, 0.95, 0.05, 1.0])  # corner
    return protos, coeffs, boxes


def yolact_values(protos, coeffs, boxes, out_hw, padding=1):
    """The float map dbolya/yolact thresholds: written independently of the reference."""
    k, hp, wp = protos.shape
    m = torch.sigmoid(protos.permute(1, 2, 0).contiguous() @ coeffs.t())  # (hp, wp, n)
    out = []
    for i in range(coeffs.shape[0]):
        x1, x2 = sorted([boxes[i, 0] * wp, boxes[i, 2] * wp])
        y1, y2 = sorted([boxes[i, 1] * hp, boxes[i, 3] * hp])
        x1, y1 = max(x1 - padding, 0), max(y1 - padding, 0)
        x2, y2 = min(x2 + padding, wp), min(y2 + padding, hp)
        keep = torch.zeros(hp, wp)
        for r in range(hp):
            for c in range(wp):
                keep[r, c] = float(x1 <= c < x2 and y1 <= r < y2)
        out.append(m[:, :, i] * keep)
    if not out:
        return torch.zeros(0, *out_hw)
    return F.interpolate(torch.stack(out)[None], out_hw, mode="bilinear", align_corners=False)[0]


def paste_inputs(n, m=28, img_hw=(61, 83), smooth=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    if smooth:  # trained-model-like: a soft blob, saturated inside, crossing 0.5 smoothly
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, m), torch.linspace(-1, 1, m), indexing="ij")
        r = torch.rand(n, 1, 1, generator=g) * 0.5 + 0.4
        masks = torch.sigmoid(8 * (r - (xx**2 + yy**2).sqrt()))
    else:
        masks = torch.rand(n, m, m, generator=g)
    h, w = img_hw
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) - 5
    boxes = torch.cat(
        [xy, xy + torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 0.7 + 0.5], dim=1
    )
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)  # D2 predictors clip boxes to the image
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    if n >= 4:
        boxes[0] = torch.tensor([0.0, 0.0, w, h])  # whole image
        boxes[1] = torch.tensor([w - 3.3, h - 2.2, w, h])  # corner
        boxes[2] = torch.tensor([10.0, 10.0, 10.0, 30.0])  # zero width
        boxes[3] = torch.tensor([5.5, 7.25, 6.0, 7.5])  # sub-pixel
    return masks, boxes


def paste_values(masks, boxes, img_hw):
    """D2's float paste values (before the threshold), on the whole image."""
    if masks.shape[0] == 0:
        return torch.zeros(0, *img_hw)
    return paste_mask_values(masks, boxes, img_hw)


# ----------------------------------------------------------------------------- primitive
@pytest.mark.parametrize("out_hw", [(40, 57), (7, 5), (13, 17)])
def test_resize_threshold_matches_torch(out_hw):
    x = torch.rand(4, 13, 17, generator=torch.Generator().manual_seed(1))
    up = F.interpolate(x[None], out_hw, mode="bilinear", align_corners=False)[0]
    assert_same_but_ties(resize_threshold(x, out_hw, 0.5, "interpolate"), up > 0.5, up, 0.5)
    h, w = out_hw
    gx = (torch.arange(w, dtype=torch.float32) + 0.5) / w * 2 - 1
    gy = (torch.arange(h, dtype=torch.float32) + 0.5) / h * 2 - 1
    grid = torch.stack([gx[None].expand(h, w), gy[:, None].expand(h, w)], 2)[None].expand(
        4, h, w, 2
    )
    gs = F.grid_sample(x[:, None], grid, align_corners=False)[:, 0]
    assert_same_but_ties(resize_threshold(x, out_hw, 0.5, "grid_sample"), gs >= 0.5, gs, 0.5)


@needs_ext
@pytest.mark.parametrize("convention", ["interpolate", "grid_sample"])
def test_resize_threshold_ext_vs_reference(convention):
    x = torch.rand(3, 9, 14, generator=torch.Generator().manual_seed(2))
    for out_hw, thr in [((31, 20), 0.5), ((9, 14), 0.3), ((1, 1), 0.0), ((0, 5), 0.5)]:
        ours = torch.ops.d2ext.resize_threshold(
            x, out_hw[0], out_hw[1], thr, convention == "grid_sample"
        )
        ref = resize_threshold_reference(x, out_hw, thr, convention)
        assert torch.equal(ours, ref), (out_hw, thr)
    empty = torch.ops.d2ext.resize_threshold(x[:0], 5, 6, 0.5, convention == "grid_sample")
    assert empty.shape == (0, 5, 6) and empty.dtype == torch.bool


@needs_ext
@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
    reason="torch rounds without FMA here",
)
def test_bit_exact_at_threshold_ties():
    """Thresholds equal to exact pixel values: any 1-ulp difference would flip that pixel."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 13, 17, generator=g)
    up = F.interpolate(x[None], (140, 157), mode="bilinear", align_corners=False)[0]
    masks, boxes = paste_inputs(3, img_hw=(61, 83), seed=3)
    pv = paste_values(masks, boxes, (61, 83))
    for t in up.flatten()[torch.randperm(up.numel(), generator=g)[:20]].tolist():
        assert torch.equal(torch.ops.d2ext.resize_threshold(x, 140, 157, t, False), up > t)
    inside = paste_masks(masks, boxes, (61, 83), 0.0)  # D2's CPU region
    for t in pv[pv > 0.3][torch.randperm(int((pv > 0.3).sum()), generator=g)[:20]].tolist():
        assert torch.equal(torch.ops.d2ext.paste_masks(masks, boxes, 61, 83, t), (pv >= t) & inside)


# ----------------------------------------------------------------------------- YOLACT
@pytest.mark.parametrize(
    "n,k,out_hw,thr,pad",
    [
        (12, 8, (57, 71), 0.5, 1),
        (7, 1, (40, 33), 0.5, 0),
        (9, 4, (23, 31), 0.7, 2),
        (0, 3, (20, 30), 0.5, 1),
    ],
)
def test_assemble_masks_matches_original_chain(n, k, out_hw, thr, pad):
    protos, coeffs, boxes = yolact_inputs(n, k)
    values = yolact_values(protos, coeffs, boxes, out_hw, pad)
    ours = assemble_masks(protos, coeffs, boxes, out_hw, thr, pad)
    assert ours.shape == (n, *out_hw) and ours.dtype == torch.bool
    assert_same_but_ties(ours, values > thr, values, thr)
    assert_same_but_ties(
        assemble_masks_reference(protos, coeffs, boxes, out_hw, thr, pad), values > thr, values, thr
    )


@needs_ext
def test_assemble_masks_ext_vs_reference():
    for seed, (n, k, out_hw) in enumerate(
        [(20, 8, (97, 130)), (6, 1, (23, 31)), (8, 32, (11, 200)), (0, 4, (5, 5))]
    ):
        protos, coeffs, boxes = yolact_inputs(n, k, seed=seed)
        for thr, pad in [(0.5, 1), (0.0, 0), (0.9, 3)]:
            ours = torch.ops.d2ext.assemble_masks(
                protos, coeffs, boxes, out_hw[0], out_hw[1], thr, pad
            )
            ref = assemble_masks_reference(protos, coeffs, boxes, out_hw, thr, pad)
            assert torch.equal(ours, ref), (seed, thr, pad)


def test_assemble_masks_is_strictly_greater_and_cropped():
    # coeffs 0 -> sigmoid 0.5 everywhere: the original's gt_(0.5) keeps nothing
    protos = torch.ones(2, 10, 10)
    boxes = torch.tensor([[0.2, 0.2, 0.5, 0.5]])
    assert not assemble_masks(protos, torch.zeros(1, 2), boxes, (40, 40)).any()
    masks = assemble_masks(protos, torch.ones(1, 2), boxes, (40, 40), crop_padding=0)
    # crop keeps proto rows/cols 2..4 (sigmoid(2) = 0.88); output px 8 and 19 blend 0.625 of it
    # in (0.55 > 0.5), px 7 and 20 only 0.375; corners blend twice (0.34) and drop out
    m = masks[0]
    assert m[10:18, 8:20].all() and m[8:20, 10:18].all() and not m[8, 8] and not m[19, 19]
    assert not m[:, :8].any() and not m[:, 20:].any() and not m[:8].any() and not m[20:].any()


def test_assemble_masks_nan_coefficients_give_false():
    protos, coeffs, boxes = yolact_inputs(3, 4)
    coeffs[1] = float("nan")
    out = assemble_masks(protos, coeffs, boxes, (30, 40))
    assert not out[1].any()
    assert torch.equal(out, assemble_masks_reference(protos, coeffs, boxes, (30, 40)))


# ----------------------------------------------------------------------------- D2 paste
@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("img_hw,thr", [((61, 83), 0.5), ((100, 37), 0.5), ((50, 50), 0.8)])
def test_paste_masks_matches_d2(smooth, img_hw, thr):
    masks, boxes = paste_inputs(10, img_hw=img_hw, smooth=smooth, seed=int(smooth))
    ours = paste_masks(masks, boxes, img_hw, thr)
    d2 = paste_masks_in_image(masks, boxes, img_hw, thr)
    assert_same_but_ties(ours, d2, paste_values(masks, boxes, img_hw), thr)
    if BIT_EXACT:
        assert torch.equal(ours, d2)


def test_paste_masks_accepts_boxes_and_empty():
    from detectron2.structures import Boxes

    masks, boxes = paste_inputs(3)
    assert torch.equal(
        paste_masks(masks, Boxes(boxes), (61, 83)), paste_masks(masks, boxes, (61, 83))
    )
    empty = paste_masks(masks[:0], boxes[:0], (20, 30))
    assert empty.shape == (0, 20, 30) and empty.dtype == torch.bool


def test_paste_masks_boxes_outside_image_are_empty():
    masks = torch.ones(4, 14, 14)
    boxes = torch.tensor(
        [[100.0, 5, 120, 20], [-30, -30, -5, -2], [20, 10, 5, 30], [-10, -10, 5, 5]]
    )
    out = paste_masks(masks, boxes, (40, 50))
    assert not out[:3].any()  # D2 itself fails on these (arange with end < start)
    assert out[3, :5, :5].all() and not out[3, 6:].any()  # partly inside: pasted, clipped
    assert torch.equal(out, paste_masks_reference(masks, boxes, (40, 50)))


@needs_ext
def test_paste_masks_ext_vs_reference():
    for seed, (n, img_hw) in enumerate([(12, (120, 90)), (5, (7, 300)), (0, (10, 10))]):
        masks, boxes = paste_inputs(n, m=14 + seed, img_hw=img_hw, seed=seed)
        boxes[-1:] += 1000  # outside (when n > 0)
        for thr in (0.5, 0.0, 0.35, 1.0):
            ours = torch.ops.d2ext.paste_masks(masks, boxes, img_hw[0], img_hw[1], thr)
            assert torch.equal(ours, paste_masks_reference(masks, boxes, img_hw, thr)), (seed, thr)


# ----------------------------------------------------------------------------- extension plumbing
def test_extension_loads_when_built():
    built = glob.glob(os.path.join(REPO, "d2ext", "_C*.so"))
    if os.environ.get("D2EXT_DISABLE_EXT") == "1" or not built:
        pytest.skip("extension not built or disabled")
    assert extension_available()
    assert not torch.ops.d2ext.built_with_cuda() or torch.version.cuda is not None


@needs_ext
def test_ops_are_scriptable():
    @torch.jit.script
    def fn(m: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.ops.d2ext.paste_masks(m, b, 30, 40, 0.5)

    masks, boxes = paste_inputs(4, img_hw=(30, 40))
    assert torch.equal(fn(masks, boxes), paste_masks_in_image(masks, boxes, (30, 40)))


def test_results_identical_without_extension(tmp_path):
    """``D2EXT_DISABLE_EXT=1``: import works, the pure-torch path gives the same booleans."""
    script = f"""
import torch, sys
sys.path.insert(0, {REPO!r})
sys.path.insert(0, {os.path.dirname(__file__)!r})
import d2ext
from d2ext.layers import assemble_masks, paste_masks, resize_threshold, extension_available
from test_mask_ops import yolact_inputs, paste_inputs
assert not extension_available()
p, c, b = yolact_inputs(12, 8)
m, bx = paste_inputs(10)
x = torch.rand(3, 9, 11, generator=torch.Generator().manual_seed(0))
torch.save([assemble_masks(p, c, b, (57, 71)), paste_masks(m, bx, (61, 83)),
            resize_threshold(x, (20, 30), 0.5, "interpolate"), resize_threshold(x, (20, 30), 0.5, "grid_sample")],
           {str(tmp_path / "out.pt")!r})
"""
    env = dict(os.environ, D2EXT_DISABLE_EXT="1", OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=str(tmp_path))
    fallback = torch.load(tmp_path / "out.pt")
    p, c, b = yolact_inputs(12, 8)
    m, bx = paste_inputs(10)
    x = torch.rand(3, 9, 11, generator=torch.Generator().manual_seed(0))
    here = [
        assemble_masks(p, c, b, (57, 71)),
        paste_masks(m, bx, (61, 83)),
        resize_threshold(x, (20, 30), 0.5, "interpolate"),
        resize_threshold(x, (20, 30), 0.5, "grid_sample"),
    ]
    for a, f in zip(here, fallback):
        assert torch.equal(a, f)


def test_float64_inputs_use_the_reference(monkeypatch):
    """float64 runs the pure-torch path (never the float32 kernels) and agrees with the float32
    op and with the independently written original chain, except at threshold ties."""
    calls = []
    use_ext = mo._use_ext
    monkeypatch.setattr(mo, "_use_ext", lambda *t: calls.append(use_ext(*t)) or calls[-1])
    protos, coeffs, boxes = yolact_inputs(12, 8)
    out = assemble_masks(protos.double(), coeffs.double(), boxes.double(), (57, 71))
    values = yolact_values(protos.double(), coeffs.double(), boxes.double(), (57, 71))
    assert out.dtype == torch.bool and out.any()
    assert_same_but_ties(out, values > 0.5, values, 0.5)
    masks, pboxes = paste_inputs(10, smooth=True)
    pasted = paste_masks(masks.double(), pboxes.double(), (61, 83))
    assert calls == [False, False]
    monkeypatch.undo()
    assert_same_but_ties(out, assemble_masks(protos, coeffs, boxes, (57, 71)), values, 0.5)
    pv = paste_values(masks.double(), pboxes, (61, 83))
    assert_same_but_ties(pasted, paste_masks(masks, pboxes, (61, 83)), pv, 0.5)
    assert_same_but_ties(pasted, paste_masks_in_image(masks, pboxes, (61, 83)), pv, 0.5)


# ----------------------------------------------------------------------------- prototype masks
def test_prototype_masks_are_the_compiled_ops_product():
    """:func:`prototype_masks` gives exactly the values the compiled op thresholds: an
    uncropped assembly at prototype size (an identity resize) with thresholds equal to the
    values themselves (ties) reproduces ``prototype_masks > t``; the crop is the op's crop."""
    protos, coeffs, boxes = yolact_inputs(12, 8, hp=23, wp=31)
    probs = prototype_masks(protos, coeffs)
    assert probs.shape == (12, 23, 31) and probs.is_contiguous()
    whole = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(12, 4)
    g = torch.Generator().manual_seed(5)
    for t in [0.5] + probs.flatten()[torch.randperm(probs.numel(), generator=g)[:10]].tolist():
        assert torch.equal(assemble_masks(protos, coeffs, whole, (23, 31), t), probs > t)
        cropped = crop_masks(probs, boxes)
        assert torch.equal(assemble_masks(protos, coeffs, boxes, (23, 31), t), cropped > t)
    # gradients reach prototypes and coefficients; the crop zeroes them outside the boxes
    p = protos.clone().requires_grad_()
    c = coeffs.clone().requires_grad_()
    crop_masks(prototype_masks(p, c), boxes).sum().backward()
    assert p.grad.abs().sum() > 0 and c.grad.abs().sum() > 0
    keep = box_crop_region(boxes, 23, 31)
    assert not c.grad[keep.sum(dim=(1, 2)) == 0].any()


def test_box_crop_region_follows_the_original_bounds():
    # x in [0.2 * 10 - 1, 0.55 * 10 + 1) = [1, 6.5): columns 1..6; y in [0, 0.3 * 8 + 1): rows 0..3
    region = box_crop_region(torch.tensor([[0.55, 0.0, 0.2, 0.3]]), 8, 10, padding=1)
    assert region.dtype == torch.float32 and region.shape == (1, 8, 10)
    expected = torch.zeros(8, 10)
    expected[0:4, 1:7] = 1
    assert torch.equal(region[0], expected)
    # bounds in the boxes' dtype: float32(0.2) * 10 rounds to 2.0 in float32 (column 2 kept, as
    # in the float32 original) but is 2.0000000298 in float64 (column 2 dropped)
    b = torch.tensor([[0.2, 0.0, 0.55, 0.3]])
    assert (
        box_crop_region(b, 8, 10, 0)[0, 0, 2] == 1
        and box_crop_region(b.double(), 8, 10, 0)[0, 0, 2] == 0
    )
    with pytest.raises(ValueError, match="crop_masks"):
        crop_masks(torch.rand(2, 8, 10), torch.rand(3, 4))


# ----------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_clear_errors():
    protos, coeffs, boxes = yolact_inputs(4, 8)
    with pytest.raises(ValueError, match="coeffs must have shape"):
        assemble_masks(protos, coeffs[:, :5], boxes, (10, 10))
    with pytest.raises(ValueError, match=r"boxes must have shape \(4, 4\)"):
        assemble_masks(protos, coeffs, boxes[:3], (10, 10))
    bad = boxes.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"finite; rows \[2\]"):
        assemble_masks(protos, coeffs, bad, (10, 10))
    with pytest.raises(ValueError, match="threshold"):
        assemble_masks(protos, coeffs, boxes, (10, 10), threshold=-0.1)
    with pytest.raises(ValueError, match="out_hw"):
        assemble_masks(protos, coeffs, boxes, (10, -1))
    with pytest.raises(ValueError, match="protos must be"):
        assemble_masks(protos[0], coeffs, boxes, (10, 10))
    with pytest.raises(ValueError, match="crop_padding"):
        assemble_masks(protos, coeffs, boxes, (10, 10), crop_padding=-1)

    masks, pboxes = paste_inputs(4)
    with pytest.raises(ValueError, match="square"):
        paste_masks(masks[:, :, :20], pboxes, (10, 10))
    with pytest.raises(ValueError, match=r"boxes must have shape \(4, 4\)"):
        paste_masks(masks, pboxes[:, :3], (10, 10))
    pboxes[0, 2] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        paste_masks(masks, pboxes, (10, 10))
    with pytest.raises(ValueError, match="convention"):
        resize_threshold(masks, (5, 5), 0.5, "nearest")


@needs_ext
def test_ext_ops_check_their_arguments():
    protos, coeffs, boxes = yolact_inputs(4, 8)
    with pytest.raises(RuntimeError, match="coeffs"):
        torch.ops.d2ext.assemble_masks(protos, coeffs[:, :3], boxes, 10, 10, 0.5, 1)
    with pytest.raises(RuntimeError, match="float32"):
        torch.ops.d2ext.paste_masks(torch.rand(2, 5, 5).double(), torch.rand(2, 4), 10, 10, 0.5)
    with pytest.raises(RuntimeError, match="boxes must be"):
        torch.ops.d2ext.paste_masks(torch.rand(2, 5, 5), torch.rand(3, 4), 10, 10, 0.5)


# each TORCH_CHECK of csrc/mask_ops/mask_ops.h, called directly (the Python face checks first);
# a "meta" tensor stands in for one on another device (the values play no part)
_X, _P, _C, _B = torch.ones(2, 5, 6), torch.ones(8, 5, 6), torch.ones(4, 8), torch.ones(4, 4)
EXT_OP_BAD_INPUTS = [
    ("resize_threshold", (_X[0], 4, 4, 0.5, False), r"input must have 3 dimensions, got \[5, 6\]"),
    ("resize_threshold", (_X.double(), 4, 4, 0.5, False), "input must be float32, got Double"),
    ("resize_threshold", (_X, -1, 4, 0.5, True), "output size must be >= 0, got -1x4"),
    ("resize_threshold", (_X, 4, 4, -0.5, False), "threshold must be >= 0, got -0.5"),
    ("resize_threshold", (_X[:, :0], 4, 4, 0.5, False), r"input maps are empty: \[2, 0, 6\]"),
    ("assemble_masks", (_P.double(), _C, _B, 9, 9, 0.5, 1), "protos must be float32, got Double"),
    ("assemble_masks", (_P, _C[0], _B, 9, 9, 0.5, 1), r"coeffs must have 2 dimensions, got \[8\]"),
    ("assemble_masks", (_P, _C, _B, 9, -9, 0.5, 1), "output size must be >= 0, got 9x-9"),
    ("assemble_masks", (_P[:, :0], _C, _B, 9, 9, 0.5, 1), "protos have an empty spatial size"),
    ("assemble_masks", (_P, _C[:, :3], _B, 9, 9, 0.5, 1), r"coeffs \[4, 3\] do not match protos"),
    ("assemble_masks", (_P, _C, _B[:3], 9, 9, 0.5, 1), r"boxes must be \(N, 4\), got \[3, 4\]"),
    ("assemble_masks", (_P, _C, _B.to("meta"), 9, 9, 0.5, 1), "must be on one device"),
    ("assemble_masks", (_P, _C, _B, 9, 9, 0.5, -1), "crop_padding must be >= 0, got -1"),
    ("paste_masks", (_X.bool(), _B[:2], 9, 9, 0.5), "masks must be float32, got Bool"),
    ("paste_masks", (_X, _B[0], 9, 9, 0.5), r"boxes must have 2 dimensions, got \[4\]"),
    ("paste_masks", (_X, _B[:2], 9, -1, 0.5), "output size must be >= 0, got 9x-1"),
    ("paste_masks", (_X, _B[:2], 9, 9, -0.5), "threshold must be >= 0, got -0.5"),
    ("paste_masks", (_X[:, :0], _B[:2], 9, 9, 0.5), r"masks are empty: \[2, 0, 6\]"),
    ("paste_masks", (_X, _B[:2].to("meta"), 9, 9, 0.5), "masks and boxes must be on one device"),
]  # fmt: skip


@needs_ext
@pytest.mark.parametrize(
    "op,args,match",
    [pytest.param(*case, id=f"{case[0]}-{i}") for i, case in enumerate(EXT_OP_BAD_INPUTS)],
)
def test_ext_ops_reject_each_bad_input(op, args, match):
    with pytest.raises(RuntimeError, match=match):
        getattr(torch.ops.d2ext, op)(*args)
