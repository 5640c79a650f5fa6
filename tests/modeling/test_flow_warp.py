"""The shared temporal module: warp conventions, FlowNetMini, RAFTFlow and the temporal losses."""

import pytest
import torch
from detectron2.config import CfgNode as CN
from torch import nn

from d2ext.modeling.common import (
    FlowNetMini,
    RAFTFlow,
    convert_official_flow_state_dict,
    endpoint_error,
    feature_matching_loss,
    multiscale_endpoint_error,
    pixel_flow_to_normalized,
    warp_features,
)


def _const_flow(n, h, w, fx, fy, dtype=torch.float32):
    return torch.tensor([fx, fy], dtype=dtype).view(1, 2, 1, 1).expand(n, 2, h, w).clone()


def _shift_reference(x, dx, dy):
    """out[..., i, j] = x[..., i + dy[i, j], j + dx[i, j]], zero outside (integer dx, dy maps)."""
    n, c, h, w = x.shape
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    si, sj = ii + dy, jj + dx
    inside = (si >= 0) & (si < h) & (sj >= 0) & (sj < w)
    out = x[..., si.clamp(0, h - 1), sj.clamp(0, w - 1)]
    return out * inside


# ----------------------------------------------------------------------------- warp_features
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("units", ["normalized", "pixels"])
def test_zero_flow_is_identity(align_corners, units):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 17)  # (w - 1), (h - 1) powers of two: the grid is exact
    out = warp_features(x, torch.zeros(2, 2, 9, 17), flow_units=units, align_corners=align_corners)
    if align_corners:
        assert torch.equal(out, x)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)
    y = torch.randn(1, 4, 7, 12)  # any size: identity up to float rounding of the grid
    out = warp_features(y, torch.zeros(1, 2, 7, 12), flow_units=units, align_corners=align_corners)
    torch.testing.assert_close(out, y, rtol=0, atol=1e-5)


@pytest.mark.parametrize("align_corners", [True, False])
def test_integer_pixel_translation_moves_features_exactly(align_corners):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 9, 17)
    out = warp_features(
        x, _const_flow(1, 9, 17, 3.0, -2.0), flow_units="pixels", align_corners=align_corners
    )
    ref = _shift_reference(x, torch.full((9, 17), 3), torch.full((9, 17), -2))
    if align_corners:  # the grid is exact in binary at this size: bit-exact
        assert out[0, 0, 2, 0] == x[0, 0, 0, 3] and out[0, 0, 0, 0] == 0 and out[0, 0, 4, 14] == 0
        assert torch.equal(out, ref)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    # a per-pixel integer field and a size whose grid is not exact in binary
    x = torch.randn(2, 2, 6, 11)
    dx, dy = torch.randint(-3, 4, (6, 11)), torch.randint(-2, 3, (6, 11))
    flow = torch.stack((dx, dy)).float().unsqueeze(0).expand(2, 2, 6, 11)
    out = warp_features(x, flow, flow_units="pixels", align_corners=align_corners)
    torch.testing.assert_close(out, _shift_reference(x, dx, dy), rtol=0, atol=1e-5)
    # flow_scale multiplies pixel flow too: pixel flow at 8x resolution on a stride-8 map
    out8 = warp_features(
        x, flow * 8, flow_units="pixels", flow_scale=1 / 8, align_corners=align_corners
    )
    torch.testing.assert_close(out8, out, rtol=0, atol=1e-6)


def test_original_normalized_divided_by_eight_convention_by_hand():
    # YolactEdge's deform_op: grid = (x * 2 / (w - 1) - 1, y * 2 / (h - 1) - 1) + flow / 8,
    # bilinear, zeros, align_corners=True. On a 3x5 map one pixel is 0.5 (x) and 1.0 (y) in
    # normalised units, i.e. a flow of 4 along x and 8 along y.
    x = torch.arange(15, dtype=torch.float32).view(1, 1, 3, 5)
    # flow x = 2 -> 0.25 normalised -> half a pixel: averages of right neighbours, zero beyond
    out = warp_features(x, _const_flow(1, 3, 5, 2.0, 0.0))
    expected = torch.tensor(
        [[0.5, 1.5, 2.5, 3.5, 2.0], [5.5, 6.5, 7.5, 8.5, 4.5], [10.5, 11.5, 12.5, 13.5, 7.0]]
    )
    assert torch.equal(out[0, 0], expected)
    # flow (4, 8) -> one pixel right and one down: out[i, j] = x[i + 1, j + 1]
    out = warp_features(x, _const_flow(1, 3, 5, 4.0, 8.0))
    expected = torch.tensor([[6.0, 7, 8, 9, 0], [11, 12, 13, 14, 0], [0, 0, 0, 0, 0]])
    assert torch.equal(out[0, 0], expected)
    # flow (0, -4) -> half a pixel up along y (0.5 normalised = 0.5 px at h = 3)
    out = warp_features(x, _const_flow(1, 3, 5, 0.0, -4.0))
    torch.testing.assert_close(out[0, 0, 0], 0.5 * x[0, 0, 0])
    torch.testing.assert_close(out[0, 0, 2], 0.5 * (x[0, 0, 1] + x[0, 0, 2]))
    # the scale is an argument: flow_scale=1 reads the flow as plain normalised offsets
    out = warp_features(x, _const_flow(1, 3, 5, 0.5, 0.0), flow_scale=1.0)
    assert torch.equal(out[0, 0, :, :4], x[0, 0, :, 1:])


def test_pixel_flow_to_normalized_is_the_original_loader_conversion():
    flow = _const_flow(1, 4, 6, 2.0, -1.0)
    norm = pixel_flow_to_normalized(flow, image_size=(48, 64))
    torch.testing.assert_close(norm[0, :, 0, 0], torch.tensor([2 * 2 / 64 * 8, -1 * 2 / 48 * 8]))
    # on a map of width w the warp then moves (w - 1) / w of the displacement (original quirk)
    x = torch.arange(9.0).view(1, 1, 1, 9).expand(1, 1, 3, 9).contiguous()
    out = warp_features(x, pixel_flow_to_normalized(_const_flow(1, 3, 9, 1.0, 0.0)))
    torch.testing.assert_close(out[0, 0, 1, :8], x[0, 0, 1, :8] + 8 / 9)


def test_warp_gradcheck_and_bad_inputs():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    flow = (torch.rand(1, 2, 4, 5, dtype=torch.float64) - 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: warp_features(a, b), (x, flow))
    with pytest.raises(ValueError, match="differ in batch size or H, W"):
        warp_features(torch.zeros(1, 2, 4, 5), torch.zeros(1, 2, 4, 6))
    with pytest.raises(ValueError, match=r"flow \(N, 2, H, W\)"):
        warp_features(torch.zeros(1, 2, 4, 5), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="flow_units"):
        warp_features(torch.zeros(1, 2, 4, 5), torch.zeros(1, 2, 4, 5), flow_units="px")
    # a 1-pixel-wide map (align_corners=True) has one coordinate: finite, never moves along x
    one = torch.randn(1, 2, 3, 1)
    out = warp_features(one, _const_flow(1, 3, 1, 5.0, 0.0), flow_units="pixels")
    assert torch.equal(out, one)


# ----------------------------------------------------------------------------- losses
def test_endpoint_error_values_mask_and_resize():
    pred = torch.zeros(1, 2, 2, 2, requires_grad=True)
    gt = _const_flow(1, 2, 2, 3.0, 4.0)
    assert endpoint_error(pred, gt).item() == 5.0
    valid = torch.tensor([[[1, 0], [0, 0]]], dtype=torch.bool)
    gt2 = gt.clone()
    gt2[0, :, 0, 0] = torch.tensor([0.0, 1.0])
    assert endpoint_error(pred, gt2, valid).item() == 1.0
    nothing = endpoint_error(pred, gt, torch.zeros(1, 2, 2))
    nothing.backward()
    assert nothing.item() == 0.0 and pred.grad is not None
    # ground truth at a finer size is resized (values unchanged: size-independent units)
    assert endpoint_error(pred, _const_flow(1, 8, 8, 3.0, 4.0)).item() == 5.0
    total = multiscale_endpoint_error([None, pred, torch.zeros(1, 2, 1, 1)], gt)
    assert total.item() == 10.0
    with pytest.raises(ValueError, match=r"\(N, 2, h, w\)"):
        endpoint_error(torch.zeros(1, 3, 2, 2), gt)


def test_feature_matching_loss_values():
    a = torch.zeros(1, 2, 1, 2)
    a[0, 0] = 1.0  # (1, 0) at both pixels
    b = torch.zeros(1, 2, 1, 2)
    b[0, 1] = 1.0  # (0, 1): orthogonal
    assert feature_matching_loss([a], [a], location="L").item() == 0.0
    assert feature_matching_loss([a], [b], location="L").item() == pytest.approx(1.0)
    assert feature_matching_loss([a, a], [b, a], location="L", weight=3.0).item() == pytest.approx(
        1.5
    )
    # smooth L1 (beta 1): 0.5 * 0.5^2 per element, summed, / N / C
    p, t = torch.zeros(2, 3, 2, 2), torch.full((2, 3, 2, 2), 0.5)
    assert feature_matching_loss([p], [t], kind="smooth_l1", location="L").item() == 0.5
    # "P": through the level's output conv + ReLU, conv weights detached, target detached
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 2, 3, padding=1)
    pred = torch.randn(1, 2, 4, 4, requires_grad=True)
    target = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = feature_matching_loss([pred], [target], location="L+P", output_convs=[conv])
    l_only = feature_matching_loss([pred], [target], location="L")
    p_only = feature_matching_loss([pred], [target], location="P", output_convs=[conv])
    torch.testing.assert_close(loss, (l_only + p_only) / 2)
    loss.backward()
    assert pred.grad.abs().sum() > 0 and target.grad is None and conv.weight.grad is None
    with pytest.raises(ValueError, match="one output conv per level"):
        feature_matching_loss([pred], [target], location="P")


# ----------------------------------------------------------------------------- FlowNetMini
def _tiny_flow_net(**kw):
    args = dict(in_channels=8, out_channels=6, reduce_channels=8, encode_channels=8)
    args.update(kw)
    return FlowNetMini(**args)


def test_flow_net_mini_shapes_init_and_errors():
    torch.manual_seed(0)
    net = _tiny_flow_net()
    out = net(torch.randn(2, 8, 7, 9), torch.randn(2, 8, 7, 9))
    sizes = [(7, 9), (4, 5), (2, 3)]  # stride-2 sizes are ceil(h / 2)
    for flow, scale, bias, hw in zip(out.flows, out.scales, out.biases, sizes):
        assert flow.shape == (2, 2, *hw) and scale.shape == bias.shape == (2, 6, *hw)
    for k in (1, 2, 3):
        pred = getattr(net, f"pred{k}")
        assert torch.equal(pred.scale.bias, torch.ones(6)) and torch.equal(
            pred.bias.bias, torch.zeros(6)
        )
    skipped = net(torch.randn(1, 8, 7, 9), torch.randn(1, 8, 7, 9), with_finest=False)
    assert skipped.flows[0] is None and skipped.flows[1].shape == (1, 2, 4, 5)
    assert net.conv1[0].weight.shape == (8, 16, 3, 3)  # cat(current, keyframe) after reduce
    assert net.upfeat2.weight.shape == (8, 8 * 4 + 2, 3, 3)  # upfeat2 reads the whole concat2
    with pytest.raises(ValueError, match=r"current must be \(N, 8, h, w\)"):
        net(torch.randn(1, 5, 7, 9), torch.randn(1, 8, 7, 9))
    with pytest.raises(ValueError, match="differ in shape"):
        net(torch.randn(1, 8, 7, 9), torch.randn(1, 8, 7, 8))
    assert len(_tiny_flow_net(reduce_channels=[]).reduce) == 0


def test_flow_net_mini_from_config_and_key_mapping_round_trip():
    cfg = CN()
    cfg.MODEL = CN()
    cfg.MODEL.YOLACT = CN({"FPN_OUT_CHANNELS": 16})
    cfg.MODEL.YOLACT_EDGE = CN({"FLOW_REDUCE_CHANNELS": 8, "FLOW_ENCODE_CHANNELS": 4})
    net = FlowNetMini(cfg)
    assert net.reduce[0].weight.shape == (8, 16, 3, 3) and net.pred1.scale.weight.shape[0] == 16
    # ours -> official (inverse of the documented table) -> ours is the identity
    official = {}
    for k, v in net.state_dict().items():
        parts = k.split(".")
        if parts[0] == "reduce":
            official[f"flow_net_pre_convs.convs.{parts[1]}.0.{parts[2]}"] = v
        elif parts[0].startswith("conv"):
            official[f"flow_net.{parts[0]}.{parts[1]}.0.{parts[2]}"] = v
        elif parts[0].startswith("pred"):
            head = "conv" if parts[1] == "flow" else parts[1]
            official[f"flow_net.{parts[0]}.{head}.{parts[2]}"] = v
        else:
            official[f"flow_net.{k}"] = v
    official["module.spa.refine_convs.0.0.weight"] = torch.zeros(1)
    ours, unused = convert_official_flow_state_dict(official, prefix="flow.")
    assert unused == ["spa.refine_convs.0.0.weight"]
    assert {k[len("flow.") :] for k in ours} == set(net.state_dict())
    with pytest.raises(KeyError, match="flow_net.shuffle"):
        convert_official_flow_state_dict({"flow_net.shuffle.weight": torch.zeros(1)})


def test_flow_net_mini_training_steps_reduce_endpoint_error():
    """A few Adam steps on a synthetic translation lower the multi-scale EPE."""
    torch.manual_seed(0)
    key = nn.functional.interpolate(torch.randn(2, 8, 6, 8), size=(24, 32), mode="bilinear")
    h, w = key.shape[-2:]
    d = (2.0, -1.0)  # the current frame reads the keyframe 2 px right, 1 px up
    current = warp_features(key, _const_flow(2, h, w, *d), flow_units="pixels")
    gt = _const_flow(2, h, w, d[0] * 2 / (w - 1) * 8, d[1] * 2 / (h - 1) * 8)
    torch.testing.assert_close(warp_features(key, gt), current, rtol=0, atol=1e-5)
    net = _tiny_flow_net(out_channels=8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = multiscale_endpoint_error(net(current, key).flows, gt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = multiscale_endpoint_error(net(current, key).flows, gt).item()
    assert final < 0.5 * losses[0], losses
    # the feature-matching loss reaches the flow net through the warp
    net.zero_grad()
    out = net(current, key)
    warped = [warp_features(key, out.flows[0]) * out.scales[0] + out.biases[0]]
    feature_matching_loss(warped, [current], location="L").backward()
    assert net.conv1[0].weight.grad.abs().sum() > 0 and net.reduce[0].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- RAFTFlow
def test_raft_flow_normalisation_padding_and_errors():
    torch.manual_seed(0)
    raft = RAFTFlow(input_format="BGR", num_flow_updates=2)
    seen = {}
    raft.raft.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    img1 = torch.rand(1, 3, 128, 130) * 255
    img2 = torch.rand(1, 3, 128, 130) * 255
    flow = raft(img1, img2)
    assert flow.shape == (1, 2, 128, 130) and torch.isfinite(flow).all()
    inner = seen["x"]
    assert inner.shape == (1, 3, 128, 136)  # replicate-padded 3 + 3 columns
    torch.testing.assert_close(inner[..., 3:-3], (img1 * (2 / 255) - 1).flip(1))
    assert torch.equal(inner[..., 0], inner[..., 3]) and torch.equal(inner[..., -1], inner[..., -4])
    flows = raft(img1, img2, return_all=True)
    assert len(flows) == 2 and torch.equal(flows[-1], flow)
    flow.abs().mean().backward()
    assert raft.raft.feature_encoder.convnormrelu[0].weight.grad is not None
    with pytest.raises(ValueError, match="too small"):
        raft(torch.rand(1, 3, 64, 128), torch.rand(1, 3, 64, 128))
    with pytest.raises(ValueError, match="one shape"):
        raft(torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 136))
    cfg = CN({"INPUT": CN({"FORMAT": "RGB"})})
    assert RAFTFlow(cfg).input_format == "RGB"
