"""YolactEdge parity with the official haotian-liu/yolact_edge on its fixture
(``<repo>/../shared/fixtures/yolact_edge``): the fixture's fp16 temporal weights (official names),
converted by ``convert_official_yolact_edge_state_dict`` and loaded into our YolactEdge, must
reproduce within 1e-4 the keyframe's FPN phases from its C3-C5 and the non-keyframe path from
the current C3 (C3 lateral, flow, warp, scale/bias, P3 rebuild, SPA, output convs, P6/P7), both
from the fixture's own warped P4/P5 and end to end through ``forward_video``. Every size and
setting comes from the fixture's ``meta``; the official key listing checks the converter on the
full-width checkpoints of both video configs."""

import json
import os
import sys

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from d2ext import add_d2ext_config
from d2ext.modeling.yolact_edge import (
    KeyframeFeatures,
    YolactEdgeVideoState,
    convert_official_yolact_edge_state_dict,
)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tools"))
from convert_yolact_edge_weights import convert_file  # noqa: E402  (tools/ is not a package)

TOL = dict(rtol=1e-4, atol=1e-4)
LEVELS = ("p3", "p4", "p5", "p6", "p7")


@pytest.fixture(scope="module")
def fixture_dir(require_shared):
    """``../shared/fixtures/yolact_edge`` (skips locally when absent, fails under CI=true)."""
    return require_shared("fixtures", "yolact_edge")


def _cfg(*, fpn_width, reduce_channels, encode_channels, use_spa, num_downsample, num_classes=2):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "YOLACT", "Base-YOLACT.yaml"))
    cfg.MODEL.META_ARCHITECTURE = "YolactEdge"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = 50
    y = cfg.MODEL.YOLACT
    y.NUM_CLASSES = num_classes
    y.FPN_OUT_CHANNELS = fpn_width
    y.FPN_NUM_DOWNSAMPLE = num_downsample
    e = cfg.MODEL.YOLACT_EDGE
    e.FLOW_REDUCE_CHANNELS = list(reduce_channels)
    e.FLOW_ENCODE_CHANNELS = encode_channels
    e.USE_SPA = use_spa
    return cfg


def _cfg_for(meta):
    flow, fpn = meta["flow"], meta["fpn"]
    # the settings YolactEdge reproduces; other variants of the original are not ported
    assert flow["model"] == "mini" and flow["warp_layers"] == "P4P5", flow
    assert flow["flow_layer"] == "each" and not flow["use_normalized_spa"], flow
    assert not flow["use_shuffle_cat"] and flow["num_groups"] == 1, flow
    assert flow["encode_layers"] == [[1], [2], [4]], flow
    assert flow["use_scale_factor"] == flow["use_scale_bias"], flow
    assert fpn["interpolation_mode"] == "bilinear" and fpn["pad"], fpn
    assert fpn["use_conv_downsample"], fpn
    cfg = _cfg(
        fpn_width=meta["fpn_num_features"],
        reduce_channels=flow["reduce_channels"],
        encode_channels=flow["encode_channels"],
        use_spa=flow["use_spa"],
        num_downsample=fpn["num_downsample"],
    )
    cfg.MODEL.YOLACT.PROTO_CONV_DIM = 8  # not in the fixture: kept small
    cfg.MODEL.YOLACT.HEAD_CONV_DIM = 8
    cfg.MODEL.YOLACT.NUM_PROTOTYPES = 4
    cfg.MODEL.YOLACT_EDGE.FLOW_SCALE_BIAS = flow["use_scale_factor"]
    return cfg


@pytest.fixture(scope="module")
def setup(fixture_dir):
    fx = torch.load(os.path.join(fixture_dir, "flow_warp_parity_seed0.pt"), weights_only=False)
    torch.manual_seed(0)
    model = build_model(_cfg_for(fx["meta"])).eval()
    ours, names = convert_official_yolact_edge_state_dict(fx["state_dict_fp16"])
    assert sorted(names) == sorted(fx["state_dict_fp16"])  # every official tensor has a home
    model_sd = model.state_dict()
    for k, v in ours.items():
        assert k in model_sd and model_sd[k].shape == v.shape, k
    missing, unexpected = model.load_state_dict(ours, strict=False)
    assert not unexpected
    # the fixture holds the temporal parts only: the ResNet, protonet and head stay random
    assert all(
        k.startswith(("backbone.bottom_up.", "proto_net.", "head.", "semantic")) for k in missing
    )
    return fx, model


def _assert_levels(ours, expected, levels):
    for level in levels:
        assert ours[level].shape == expected[level].shape, level
        torch.testing.assert_close(ours[level], expected[level], **TOL, msg=level)


def test_keyframe_fpn_phases(setup):
    fx, model = setup
    key = fx["keyframe"]
    bottom_up = {f"res{i}": key[f"c{i}"].float() for i in (3, 4, 5)}
    with torch.no_grad():
        sums, lateral = model.fpn_phase1(bottom_up)
        outs = model.fpn_phase2(sums)
        plain = model.backbone.forward_features(bottom_up)  # YOLACT's one-pass FPN
    torch.testing.assert_close(lateral, key["lateral_c3"], **TOL)
    _assert_levels(sums, key["feats_phase1"], ("p3", "p4", "p5"))
    _assert_levels(outs, key["fpn_out"], LEVELS)
    for level in LEVELS:  # the split FPN is YOLACT's FPN, bit for bit
        assert torch.equal(outs[level], plain[level]), level


def test_nonkeyframe_from_the_fixture_warp(setup):
    """P3 rebuild, SPA and phase 2 alone, on the fixture's warped P4/P5."""
    fx, model = setup
    with torch.no_grad():
        lateral = model.lateral_c3(fx["current"]["c3"].float())
        sums = model.nonkey_phase1(lateral, dict(fx["warped"]))
        outs = model.fpn_phase2(sums)
    torch.testing.assert_close(lateral, fx["current"]["lateral_c3"], **TOL)
    expected = fx["phase1_nonkey"]
    torch.testing.assert_close(sums["p3"], expected["p3"], **TOL)
    torch.testing.assert_close(sums["p4"], expected["p4_spa"], **TOL)
    torch.testing.assert_close(sums["p5"], expected["p5_spa"], **TOL)
    _assert_levels(outs, fx["fpn_out_nonkey"], LEVELS)


def test_nonkeyframe_end_to_end_through_forward_video(setup, monkeypatch):
    """``forward_video`` on a non-keyframe whose keyframe state holds the fixture's keyframe
    features and whose ResNet-to-C3 gives the fixture's current C3: the FPN levels reaching the
    protonet and head are the fixture's, the flow coming from our converted flow net."""
    fx, model = setup
    key = fx["keyframe"]
    with torch.no_grad():
        sums, lateral = model.fpn_phase1({f"res{i}": key[f"c{i}"].float() for i in (3, 4, 5)})
        warped = model.warp_keyframe(model.lateral_c3(fx["current"]["c3"].float()), lateral, sums)
    _assert_levels(warped, fx["warped"], ("p4", "p5"))

    image = torch.zeros(3, 48, 64, dtype=torch.uint8)  # its pixels never reach the C3 stand-in
    keyframe = KeyframeFeatures(lateral=lateral, features=sums, image_size=(48, 64))
    state = YolactEdgeVideoState(frame_index=1, keyframe_index=0, keyframe=keyframe)
    seen = {}
    run_heads = model.forward_from_features

    def record(features, image_size):
        seen.update(features)
        return run_heads(features, image_size)

    monkeypatch.setattr(model, "bottom_up_to_c3", lambda images: fx["current"]["c3"].float())
    monkeypatch.setattr(model, "forward_from_features", record)
    with torch.no_grad():
        (out,), new_state = model.forward_video([{"image": image}], state)
    assert out["is_keyframe"] is False and new_state.frame_index == 2
    assert new_state.keyframe is keyframe
    assert "instances" in out
    _assert_levels(seen, fx["fpn_out_nonkey"], LEVELS)


def test_official_video_checkpoints_convert(fixture_dir):
    """Every official key of both video configs (R-101 and R-50, full widths) converts; the
    R-50 one loads into a YolactEdge built with the official widths, strictly."""
    with open(os.path.join(fixture_dir, "official_state_dict_keys.json")) as f:
        listing = json.load(f)
    for name in ("yolact_edge_vid_config", "yolact_edge_vid_resnet50_config"):
        shapes = dict(listing[name])
        sd = {k: torch.empty(s) for k, s in shapes.items()}
        ours, names = convert_official_yolact_edge_state_dict(sd)
        assert set(names) == {k for k in shapes if not k.endswith("num_batches_tracked")}, name
    cfg = _cfg(
        fpn_width=shapes["fpn_phase_1.lat_layers.0.weight"][0],
        reduce_channels=[shapes["flow_net_pre_convs.convs.0.0.weight"][0]],
        encode_channels=shapes["flow_net.conv1.0.0.weight"][0],
        use_spa=True,
        num_downsample=2,
        num_classes=shapes["prediction_layers.0.conf_layer.weight"][0] // 3 - 1,
    )
    model = build_model(cfg)
    model.load_state_dict(ours, strict=True)  # every parameter, official shapes


def test_converter_tool(fixture_dir, tmp_path):
    fx = torch.load(os.path.join(fixture_dir, "flow_warp_parity_seed0.pt"), weights_only=False)
    src, dst = tmp_path / "official.pth", tmp_path / "d2.pth"
    torch.save({"module." + k: v for k, v in fx["state_dict_fp16"].items()}, src)
    n = convert_file(str(src), str(dst))
    out = torch.load(dst, weights_only=False)
    expected, _ = convert_official_yolact_edge_state_dict(fx["state_dict_fp16"])
    assert n == len(expected) and out["matching_heuristics"] is False
    assert sorted(out["model"]) == sorted(expected)
    assert all(torch.equal(out["model"][k], v) for k, v in expected.items())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_file(str(tmp_path / "none.pth"), str(dst))
