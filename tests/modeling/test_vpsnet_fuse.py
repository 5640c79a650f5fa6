"""VPSNet Fuse module on tiny CPU cases: gather/scatter sizes and values, the correlation block
against a hand-built shift and a loop reference, the warp convention, attention ranges,
gradients, config building and bad inputs."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec

from d2ext.config import add_d2ext_config
from d2ext.modeling.vpsnet import (
    TemporalSpatialAttention,
    VPSNetFuse,
    gather_levels,
    local_correlation,
    resize_flow,
    scatter_levels,
)

C = 6
LEVELS = ["p2", "p3", "p4", "p5", "p6"]
# an odd-sized P2 and the ceil-halved sizes D2's FPN gives above it
SIZES = {"p2": (13, 17), "p3": (7, 9), "p4": (4, 5), "p5": (2, 3), "p6": (1, 2)}


def _shapes(channels=C):
    return {f: ShapeSpec(channels=channels, stride=2 ** (i + 2)) for i, f in enumerate(LEVELS)}


def _features(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {f: torch.randn(n, C, *SIZES[f], generator=g) for f in LEVELS}


def _fuse(**kwargs):
    torch.manual_seed(0)
    kwargs.setdefault("in_features", LEVELS)
    return VPSNetFuse(_shapes(), **kwargs)


def test_from_config_uses_the_vpsnet_keys():
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.MODEL.VPSNET.FUSE.FLOW_REFINE_CONV_DIMS = [8, 4]
    m = VPSNetFuse(cfg, _shapes())
    assert m.in_features == LEVELS and m.gather_index == 0
    assert m.flow_refine is not None and m.fusion_conv is not None
    # C + 81 correlation channels + 2 flow channels into the first refinement conv
    assert m.flow_refine.estimator[0][0].in_channels == C + 81 + 2
    assert m.flow_refine.estimator[1][0].out_channels == 4


@pytest.mark.parametrize("flow_refine", [True, False])
def test_zero_flow_identical_frames_keeps_shapes(flow_refine):
    m = _fuse(flow_refine=flow_refine).eval()
    feats = _features()
    with torch.no_grad():
        out = m(feats, feats, torch.zeros(2, 2, 52, 68))
        again = m(feats, feats, torch.zeros(2, 2, 13, 17))
    assert list(out) == LEVELS
    for f in LEVELS:
        assert out[f].shape == feats[f].shape
        assert torch.isfinite(out[f]).all()
        # a zero flow at any resolution is the same zero flow at P2
        torch.testing.assert_close(out[f], again[f])


def test_other_levels_pass_through():
    m = _fuse(in_features=["p2", "p3"])
    feats = _features()
    out = m(feats, feats, torch.zeros(2, 2, 13, 17))
    assert out["p4"] is feats["p4"] and out["p6"] is feats["p6"]
    assert not torch.equal(out["p3"], feats["p3"])


def test_gather_and_scatter_odd_sizes():
    feats = _features(n=1)
    levels = [feats[f] for f in LEVELS]
    gathered = gather_levels(levels, 0)
    assert gathered.shape == (1, C, 13, 17)
    outs = scatter_levels(gathered, levels, 0)
    assert [tuple(o.shape[-2:]) for o in outs] == [SIZES[f] for f in LEVELS]


def test_gather_values_nearest_up_and_max_pool_down():
    fine = torch.arange(16.0).view(1, 1, 4, 4)
    mid = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    coarse = torch.full((1, 1, 1, 1), 6.0)
    # gathered at the middle level: fine max-pooled 2x2, coarse repeated, then the mean
    pooled = torch.tensor([[5.0, 7.0], [13.0, 15.0]])
    expected = (pooled + mid[0, 0] + 6.0) / 3
    torch.testing.assert_close(gather_levels([fine, mid, coarse], 1)[0, 0], expected)
    # at the finest level the coarser ones are nearest-upsampled
    at_fine = gather_levels([fine, mid], 0)[0, 0]
    torch.testing.assert_close(
        at_fine, (fine[0, 0] + mid[0, 0].repeat_interleave(2, 0).repeat_interleave(2, 1)) / 2
    )


def test_scatter_values():
    fused = torch.zeros(1, 1, 3, 5)
    fused[0, 0, 2, 4] = 9.0
    levels = [torch.ones(1, 1, 6, 10), torch.zeros(1, 1, 3, 5), torch.zeros(1, 1, 2, 3)]
    outs = scatter_levels(fused, levels, 1)
    # finer: nearest upsampling + 1
    assert outs[0][0, 0, 5, 9] == 10.0 and outs[0][0, 0, 0, 0] == 1.0
    # the gather level itself: unchanged residual
    assert torch.equal(outs[1], fused)
    # coarser: adaptive max pooling, the peak lands in the bottom-right cell only
    assert outs[2][0, 0, 1, 2] == 9.0 and outs[2][0, 0, 0].abs().sum() == 0


def _reference_correlation(x1, x2, d):
    n, c, h, w = x1.shape
    out = torch.zeros(n, (2 * d + 1) ** 2, h, w, dtype=x1.dtype)
    for dy in range(-d, d + 1):
        for dx in range(-d, d + 1):
            ch = (dy + d) * (2 * d + 1) + (dx + d)
            for y in range(h):
                for x in range(w):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        out[:, ch, y, x] = (x1[:, :, y, x] * x2[:, :, y + dy, x + dx]).sum(1) / c
    return out


def test_correlation_matches_loop_reference():
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64).unbind(0)
    x1, x2 = x1[None], x2[None]
    torch.testing.assert_close(local_correlation(x1, x2, 2), _reference_correlation(x1, x2, 2))


def test_correlation_gradcheck():
    g = torch.Generator().manual_seed(4)
    x1, x2 = torch.randn(2, 1, 2, 3, 4, generator=g, dtype=torch.float64).unbind(0)
    inputs = (x1.requires_grad_(), x2.requires_grad_())
    assert torch.autograd.gradcheck(lambda a, b: local_correlation(a, b, 1), inputs)


@pytest.mark.parametrize("dy,dx", [(0, 2), (-1, 0), (3, -4)])
def test_correlation_lights_up_the_shift(dy, dx):
    d = 4
    g = torch.Generator().manual_seed(2)
    x1 = F.normalize(torch.randn(1, 16, 15, 17, generator=g), dim=1)
    # x2[y + dy, x + dx] = x1[y, x]: the content moved by (dx, dy)
    x2 = torch.zeros_like(x1)
    h, w = x1.shape[-2:]
    x2[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x1[
        ..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    corr = local_correlation(x1, x2, d)
    assert corr.shape == (1, 81, 15, 17)
    channel = (dy + d) * 9 + (dx + d)
    interior = corr[0, :, 4:-4, 4:-4]
    assert (interior.argmax(dim=0) == channel).all()
    # unit-norm features over 16 channels: the match is 1 / C
    torch.testing.assert_close(interior[channel], torch.full_like(interior[channel], 1 / 16))


def test_resize_flow_scales_pixels():
    flow = torch.zeros(1, 2, 52, 68)
    flow[:, 0], flow[:, 1] = 3.0, -2.0
    small = resize_flow(flow, (13, 17))
    torch.testing.assert_close(small[:, 0], torch.full((1, 13, 17), 0.75))
    torch.testing.assert_close(small[:, 1], torch.full((1, 13, 17), -0.5))


def test_flow_aligns_reference_to_target():
    # one level; the reference is the target moved 2 P2 pixels right, the flow (given at 4x the
    # P2 size) points from the target to it
    m = _fuse(in_features=["p2"], flow_refine=False)
    target = torch.randn(1, C, 13, 17)
    ref = torch.zeros_like(target)
    ref[..., 2:] = target[..., :-2]
    flow = torch.zeros(1, 2, 52, 68)
    flow[:, 0] = 8.0
    seen = {}
    m.attention.register_forward_hook(lambda mod, args, out: seen.update(frames=args[0]))
    m({"p2": target}, {"p2": ref}, flow)
    frames = seen["frames"]
    torch.testing.assert_close(frames[:, 0], target)
    torch.testing.assert_close(frames[:, 1, ..., :-2], target[..., :-2], atol=1e-5, rtol=1e-5)


def test_attention_values_in_unit_range_for_odd_sizes():
    torch.manual_seed(0)
    att = TemporalSpatialAttention(C)
    frames = torch.randn(2, 2, C, 7, 9) * 3
    out, (temporal, spatial) = att(frames, return_attention=True)
    assert out.shape == (2, C, 7, 9)
    assert temporal.shape == (2, 2, 7, 9) and spatial.shape == (2, C, 7, 9)
    for a in (temporal, spatial):
        assert a.min() >= 0 and a.max() <= 1


def test_gradients_reach_every_parameter_and_input():
    m = _fuse()
    feats = {f: x.requires_grad_() for f, x in _features().items()}
    ref = {f: x.requires_grad_() for f, x in _features(seed=3).items()}
    flow = torch.randn(2, 2, 52, 68)
    out = m(feats, ref, flow)
    sum((o**2).sum() for o in out.values()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for f in LEVELS:
        assert ref[f].grad.abs().sum() > 0, f


def test_bad_inputs_give_clear_errors():
    m = _fuse()
    feats = _features()
    flow = torch.zeros(2, 2, 13, 17)
    ref = dict(feats)
    del ref["p6"]
    with pytest.raises(ValueError, match="reference features lack levels \\['p6'\\]"):
        m(feats, ref, flow)
    ref = dict(feats, p3=torch.zeros(2, C, 8, 9))
    with pytest.raises(ValueError, match="level 'p3'"):
        m(feats, ref, flow)
    with pytest.raises(ValueError, match="target level 'p4'"):
        m(dict(feats, p4=torch.zeros(2, C + 1, 4, 5)), feats, flow)
    with pytest.raises(ValueError, match="flow must be"):
        m(feats, feats, torch.zeros(1, 2, 13, 17))
    with pytest.raises(ValueError, match="differ in channels"):
        VPSNetFuse(dict(_shapes(), p3=ShapeSpec(channels=C + 1, stride=8)), in_features=LEVELS)
    with pytest.raises(ValueError, match="gather_feature"):
        VPSNetFuse(_shapes(), in_features=LEVELS, gather_feature="p7")
    with pytest.raises(ValueError, match="shape"):
        local_correlation(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 4))
