"""Parity of FlowNetMini + warp with the official haotian-liu/yolact_edge on its fixture
(``<repo>/../shared/fixtures/yolact_edge``): converted fp16 weights, cast to float32, must
reproduce the pre-convs, the flow pyramid with its scales and biases, the warped P4/P5 and a
constant-flow warp within 1e-4. Every size and setting comes from the fixture's ``meta``.

The fixture's outputs were computed in float32 from the fp16-rounded weights, so fp16 storage
costs nothing here: the largest differences seen are 0 (flows, raw warps), 1.2e-6 (scales),
2.5e-7 (biases) and 2.9e-6 (warped * scale + bias), all float32 summation order."""

import json
import os

import pytest
import torch

from d2ext.modeling.common import FlowNetMini, convert_official_flow_state_dict, warp_features

TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def fixture_dir(require_shared):
    """``../shared/fixtures/yolact_edge`` (skips locally when absent, fails under CI=true)."""
    return require_shared("fixtures", "yolact_edge")


def _flow_net_for(meta) -> FlowNetMini:
    flow = meta["flow"]
    # the settings FlowNetMini reproduces; other variants of the original are not ported
    assert flow["model"] == "mini" and flow["warp_layers"] == "P4P5", flow
    assert not flow["use_shuffle_cat"] and flow["num_groups"] == 1, flow
    assert flow["use_scale_factor"] and flow["use_scale_bias"], flow
    return FlowNetMini(
        in_channels=meta["fpn_num_features"],
        out_channels=meta["fpn_num_features"],
        reduce_channels=flow["reduce_channels"],
        encode_channels=flow["encode_channels"],
        encode_layers=flow["encode_layers"],
        interpolation_mode=meta["fpn"]["interpolation_mode"],
    ).eval()


@pytest.fixture(scope="module")
def setup(fixture_dir):
    fx = torch.load(os.path.join(fixture_dir, "flow_warp_parity_seed0.pt"), weights_only=False)
    net = _flow_net_for(fx["meta"])
    sd, unused = convert_official_flow_state_dict(fx["state_dict_fp16"])
    net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    assert all(k.startswith(("fpn_phase_1.", "fpn_phase_2.", "spa.")) for k in unused), unused
    with torch.no_grad():
        out = net(fx["current"]["lateral_c3"].float(), fx["keyframe"]["lateral_c3"].float())
    return fx, net, out


def test_pre_convs_reproduce_flow_net_inputs(setup):
    fx, net, _ = setup
    with torch.no_grad():
        for frame in ("current", "keyframe"):
            ours = net.reduce(fx[frame]["lateral_c3"].float())
            torch.testing.assert_close(ours, fx["flow_net_inputs"][frame], **TOL)


def test_flow_pyramid_scales_and_biases(setup):
    fx, net, out = setup
    meta = fx["meta"]
    sizes = [tuple(meta[k]) for k in ("c3_hw", "p4_hw", "p5_hw")]
    for i, hw in enumerate(sizes):
        assert out.flows[i].shape[-2:] == hw
        torch.testing.assert_close(out.flows[i], fx["flow"][f"flow{i + 1}"], **TOL)
        torch.testing.assert_close(out.scales[i], fx["scale"][f"scale{i + 1}"], **TOL)
        torch.testing.assert_close(out.biases[i], fx["bias"][f"bias{i + 1}"], **TOL)
    # the flow net alone, on the fixture's own pre-conv outputs
    with torch.no_grad():
        alone = net.predict(fx["flow_net_inputs"]["current"], fx["flow_net_inputs"]["keyframe"])
    for i in range(3):
        torch.testing.assert_close(alone.flows[i], fx["flow"][f"flow{i + 1}"], **TOL)


@pytest.mark.parametrize("level, index", [("p4", 1), ("p5", 2)])
def test_warped_features(setup, level, index):
    fx, _, out = setup
    feats = fx["keyframe"]["feats_phase1"][level]
    # the original's deform_op: normalised flow / 8, align_corners=True grid, zero padding
    conv = dict(flow_units="normalized", flow_scale=1 / 8, align_corners=True, padding_mode="zeros")
    raw_fixture_flow = warp_features(feats, fx["flow"][f"flow{index + 1}"], **conv)
    torch.testing.assert_close(raw_fixture_flow, fx["warped_raw"][level], **TOL)
    raw = warp_features(feats, out.flows[index], **conv)
    torch.testing.assert_close(raw, fx["warped_raw"][level], **TOL)
    warped = raw * out.scales[index] + out.biases[index]
    torch.testing.assert_close(warped, fx["warped"][level], **TOL)


def test_constant_flow_check(setup):
    fx, _, _ = setup
    check = fx["const_flow_check"]
    ours = warp_features(fx["keyframe"]["feats_phase1"]["p4"], check["flow"])
    torch.testing.assert_close(ours, check["warped_p4"], **TOL)


def test_official_keys_of_both_video_configs_load(fixture_dir):
    """Every official ``flow_net*`` key of the full-width configs maps onto FlowNetMini with the
    official shape (widths read from the keys themselves)."""
    with open(os.path.join(fixture_dir, "official_state_dict_keys.json")) as f:
        listing = json.load(f)
    configs = [k for k in listing if k.endswith("(temporal parts)")]
    assert configs
    for name in configs:
        shapes = dict(listing[name])
        sd = {k: torch.zeros(s) for k, s in shapes.items()}
        ours, unused = convert_official_flow_state_dict(sd)
        assert not [k for k in unused if k.startswith("flow_net")]
        fpn = shapes["flow_net_pre_convs.convs.0.0.weight"][1]
        net = FlowNetMini(
            in_channels=fpn,
            out_channels=shapes["flow_net.pred1.scale.weight"][0],
            reduce_channels=[shapes["flow_net_pre_convs.convs.0.0.weight"][0]],
            encode_channels=shapes["flow_net.conv1.0.0.weight"][0],
        )
        net.load_state_dict(ours, strict=True)  # raises on any missing key or shape mismatch
