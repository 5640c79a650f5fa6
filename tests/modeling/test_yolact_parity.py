"""Parity with the official dbolya/yolact implementation, on fixtures it produced
(``<repo>/../shared/fixtures/yolact``): converted weights must reproduce the FPN, head outputs,
priors, Fast NMS detections and postprocessed masks."""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from d2ext import add_d2ext_config
from d2ext.modeling.yolact import convert_official_yolact_state_dict


@pytest.fixture(scope="module")
def fixtures(require_shared):
    """``../shared/fixtures/yolact`` (skips locally when absent, fails under CI=true)."""
    return require_shared("fixtures", "yolact")


def _cfg_for(meta):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "YOLACT"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.BACKBONE.NAME = "build_yolact_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.ANCHOR_GENERATOR.NAME = "YOLACTAnchorGenerator"
    cfg.MODEL.ANCHOR_GENERATOR.OFFSET = 0.5
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = meta["pred_scales"]
    # the original writes aspect ratios as w/h ([1, 1/2, 2]); D2 as h/w
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[1.0 / a for a in meta["pred_aspect_ratios"][0][0]]]
    y = cfg.MODEL.YOLACT
    y.NUM_CLASSES = meta["num_classes_incl_bg"] - 1
    y.INPUT_SIZE = meta["input_size"]
    y.FPN_OUT_CHANNELS = meta["fpn_num_features"]
    y.FPN_NUM_DOWNSAMPLE = meta["fpn_num_downsample"]
    y.FPN_RELU_OUTPUTS = meta["relu_pred_layers"]
    y.PROTO_CONV_DIM = 128
    y.HEAD_CONV_DIM = 128
    y.NUM_PROTOTYPES = meta["mask_dim"]
    y.SQUARE_ANCHORS = meta["use_square_anchors"]
    y.SCORE_THRESH_TEST = meta["nms_conf_thresh"]
    y.NMS_THRESH_TEST = meta["nms_thresh"]
    y.TOPK_CANDIDATES_TEST = meta["nms_top_k"]
    y.DETECTIONS_PER_IMAGE = meta["max_num_detections"]
    return cfg


@pytest.fixture(scope="module")
def setup(fixtures):
    fx = torch.load(os.path.join(fixtures, "parity_seed0_in256_out200x300.pt"), weights_only=False)
    meta = fx["meta"]
    assert (
        "(128, 3" in meta["proto_net"]
        and "(None, -2" in meta["proto_net"]
        and "(128, 3" in meta["extra_head_net"]
    )
    model = build_model(_cfg_for(meta)).eval()
    sd, _ = convert_official_yolact_state_dict(
        {k: v.float() for k, v in fx["state_dict_fp16"].items()}
    )
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected
    assert all(k.startswith("backbone.bottom_up.") for k in missing), missing
    with torch.no_grad():
        feats = model.backbone.forward_features({k: v.float() for k, v in fx["features"].items()})
        _, protos, deltas, logits, coeffs, anchors = model.forward_from_features(feats, (256, 256))
    return fx, model, feats, protos, deltas, logits, coeffs, anchors


def _close(a, b, rtol=1e-4, atol=1e-4):
    torch.testing.assert_close(a.float(), b.float(), rtol=rtol, atol=atol)


def test_fpn_and_head(setup):
    fx, model, feats, protos, deltas, logits, coeffs, anchors = setup
    for name, ref in zip(["p3", "p4", "p5", "p6", "p7"], fx["fpn"]):
        _close(feats[name], ref)
    _close(protos.permute(0, 2, 3, 1), fx["head"]["proto"])
    _close(deltas, fx["head"]["loc"])
    _close(torch.softmax(logits, -1), fx["head"]["conf_softmax"], atol=1e-5)
    _close(coeffs, fx["head"]["coeffs"])


def test_priors(setup):
    fx, *_, anchors = setup
    b = anchors.tensor / 256.0
    cxcywh = torch.cat([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], 1)
    _close(cxcywh, fx["head"]["priors"], rtol=1e-5, atol=1e-6)


def test_fast_nms_detections(setup):
    fx, model, feats, protos, deltas, logits, coeffs, anchors = setup
    with torch.no_grad():
        boxes, classes, scores, keep = model.detect(
            deltas[0], torch.softmax(logits[0], -1), anchors
        )
    det = fx["detections"]
    assert torch.equal(classes, det["class"])
    _close(scores, det["score"], atol=1e-6)
    _close(boxes / 256.0, det["box"], atol=1e-5)
    _close(coeffs[0, keep], det["mask"])


def test_postprocessed_masks(setup):
    fx, model, feats, protos, deltas, logits, coeffs, anchors = setup
    pp = fx["postprocessed"]
    inputs = [{"image": torch.zeros(3, 256, 256, dtype=torch.uint8), "height": 200, "width": 300}]
    with torch.no_grad():
        (res,) = model.inference(inputs, protos, deltas, logits, coeffs, anchors)
    inst = res["instances"]
    assert torch.equal(inst.pred_classes, pp["classes"])
    _close(inst.scores, pp["scores"], atol=1e-6)
    # the original truncates the clipped boxes to integers; we keep floats
    assert torch.equal(inst.pred_boxes.tensor.long(), pp["boxes"])
    ref = np.unpackbits(pp["masks_packbits"].numpy(), axis=-1)[..., : pp["masks_shape"][-1]].astype(
        bool
    )
    ours = inst.pred_masks.numpy()
    assert ours.shape == ref.shape and ours.dtype == bool
    # pixels whose probability sits within float noise of 0.5 may flip; allow a handful
    assert (ours != ref).sum() <= 10, (ours != ref).sum()


def test_converter_maps_every_official_key(fixtures):
    with open(os.path.join(fixtures, "official_state_dict_keys.json")) as f:
        keys = json.load(f)
    for name, key_shapes in keys.items():
        sd = {k: torch.zeros(shape) for k, shape in key_shapes}
        out, names = convert_official_yolact_state_dict(sd)
        assert len(names) == sum(not k.endswith("num_batches_tracked") for k in sd), name
        depth = 101 if name == "yolact_base_config" else 50
        cfg = _cfg_for(
            {
                "pred_scales": [[24], [48], [96], [192], [384]],
                "pred_aspect_ratios": [[[1, 0.5, 2]]],
                "num_classes_incl_bg": 81,
                "input_size": 550,
                "fpn_num_features": 256,
                "fpn_num_downsample": 2,
                "relu_pred_layers": True,
                "mask_dim": 32,
                "use_square_anchors": True,
                "nms_conf_thresh": 0.05,
                "nms_thresh": 0.5,
                "nms_top_k": 200,
                "max_num_detections": 100,
            }
        )
        cfg.MODEL.RESNETS.DEPTH = depth
        cfg.MODEL.YOLACT.PROTO_CONV_DIM = cfg.MODEL.YOLACT.HEAD_CONV_DIM = 256
        ours = build_model(cfg).state_dict()
        assert set(out) == set(ours), set(out) ^ set(ours)
        for k, v in out.items():
            assert v.shape == ours[k].shape, k
