"""Parity with the official biubug6/Pytorch_Retinaface, on fixtures it produced
(``<repo>/../shared/fixtures/retinaface``, README there): converted official weights must
reproduce the raw outputs, the priors, the decoded boxes / landmarks and the final detections of
its ``detect.py`` (confidence, top-k, ``py_cpu_nms`` with +1 areas, keep-top-k); the converter
must cover the keys of both released models exactly.

Every size and setting (network, image size, anchors, thresholds) comes from the fixture's
``meta``, so any fixture of the same layout runs through these tests unchanged.
"""

import glob
import json
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from d2ext import add_d2ext_config
from d2ext.modeling.retinaface import (
    convert_official_retinaface_state_dict,
    infer_official_retinaface_backbone,
)

RAW_ATOL = 1e-4
# decoded coordinates are pixels of a ~640 px image: float32 spacing there is 6e-5
PIXEL_ATOL = 2e-4
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(scope="module")
def fixture_dir(require_shared):
    return require_shared("fixtures", "retinaface")


def cfg_for(meta, backbone: str):
    """A d2ext config reproducing the original's ``cfg`` and test settings of ``meta``."""
    cfg = get_cfg()
    add_d2ext_config(cfg)
    name = (
        "retinaface_mnet025_640.yaml" if backbone == "mobilenet0.25" else "retinaface_R_50_840.yaml"
    )
    cfg.merge_from_file(os.path.join(REPO, "configs", "RetinaFace", name))
    cfg.MODEL.DEVICE = "cpu"
    c = meta["cfg"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = c["min_sizes"]
    cfg.MODEL.RETINAFACE.OUT_CHANNELS = c["out_channel"]
    cfg.MODEL.RETINAFACE.BBOX_REG_WEIGHTS = (1 / c["variance"][0],) * 2 + (
        1 / c["variance"][1],
    ) * 2
    cfg.MODEL.RETINAFACE.LANDMARK_REG_WEIGHT = 1 / c["variance"][0]
    cfg.MODEL.PIXEL_MEAN = [float(v) for v in meta["mean_bgr"]]
    r = cfg.MODEL.RETINAFACE
    r.SCORE_THRESH_TEST = meta["confidence_threshold"]
    r.TOPK_CANDIDATES_TEST = meta["top_k"]
    r.NMS_THRESH_TEST = meta["nms_threshold"]
    r.DETECTIONS_PER_IMAGE = meta["keep_top_k"]
    r.NMS_LEGACY_PLUS_ONE = "+1" in meta.get("nms", "")
    return cfg


def _files(fixture_dir):
    files = sorted(glob.glob(os.path.join(fixture_dir, "*.pt")))
    assert files, f"no parity fixture (*.pt) in {fixture_dir}"
    return files


@pytest.fixture(scope="module")
def runs(fixture_dir):
    """[(fixture, model, raw outputs, detections)] for every fixture file."""
    result = []
    for path in _files(fixture_dir):
        fx = torch.load(path, map_location="cpu", weights_only=False)
        meta = fx["meta"]
        backbone = infer_official_retinaface_backbone(fx["state_dict"])
        assert backbone == meta["network"].lower(), meta["network"]
        cfg = cfg_for(meta, backbone)
        assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == meta["cfg"]["min_sizes"]
        model = build_model(cfg).eval()
        assert list(model.anchor_generator.strides) == meta["cfg"]["steps"]
        sd, _ = convert_official_retinaface_state_dict(fx["state_dict"])
        model.load_state_dict(sd, strict=True)
        image = fx["image_bgr_uint8"]
        assert tuple(image.shape[:2]) == (meta["height"], meta["width"])
        chw = image.permute(2, 0, 1).contiguous()
        with torch.no_grad():
            x = (chw.float() - model.pixel_mean) / model.pixel_std
            raw = model.forward_raw(x[None])
            dets = model([{"image": chw}])[0]["instances"]
        result.append((fx, model, raw, dets))
    return result


def test_raw_outputs(runs):
    for fx, _, (cls, box, lm, _), _ in runs:
        assert torch.allclose(
            torch.softmax(cls, -1), fx["raw"]["conf_softmax"], atol=RAW_ATOL, rtol=0
        )
        assert torch.allclose(box, fx["raw"]["loc"], atol=RAW_ATOL, rtol=0)
        assert torch.allclose(lm, fx["raw"]["landms"], atol=RAW_ATOL, rtol=0)


def test_priors_in_the_original_order(runs):
    for fx, _, (_, _, _, anchors), _ in runs:
        h, w = fx["meta"]["height"], fx["meta"]["width"]
        a = anchors.tensor
        cxcywh = torch.cat([(a[:, :2] + a[:, 2:]) / 2, a[:, 2:] - a[:, :2]], dim=1)
        rel = cxcywh / torch.tensor([w, h, w, h], dtype=a.dtype)
        assert rel.shape == fx["priors_cxcywh_rel"].shape
        assert torch.allclose(rel, fx["priors_cxcywh_rel"], atol=1e-6, rtol=0)


def test_decoded_boxes_and_landmarks(runs):
    for fx, model, (cls, box, lm, anchors), _ in runs:
        boxes = model.box2box_transform.apply_deltas(box[0], anchors.tensor)
        points = model.landmark_coder.apply_deltas(lm[0], anchors.tensor).reshape(len(boxes), -1)
        d = fx["decoded"]
        assert torch.allclose(boxes, d["boxes_xyxy_abs"], atol=PIXEL_ATOL, rtol=0)
        assert torch.allclose(points, d["landmarks_abs"], atol=PIXEL_ATOL, rtol=0)
        assert torch.allclose(torch.softmax(cls[0], -1)[:, 1], d["scores"], atol=RAW_ATOL, rtol=0)


def test_final_detections(runs):
    for fx, _, _, dets in runs:
        final = fx["final"]["dets_xyxy_score"]
        assert len(dets) == len(final)
        assert torch.allclose(dets.pred_boxes.tensor, final[:, :4], atol=PIXEL_ATOL, rtol=0)
        assert torch.allclose(dets.scores, final[:, 4], atol=RAW_ATOL, rtol=0)
        points = dets.pred_keypoints[:, :, :2].reshape(len(dets), -1)
        assert torch.allclose(points, fx["final"]["landmarks"], atol=PIXEL_ATOL, rtol=0)
        assert (dets.pred_classes == 0).all()


def test_converter_covers_both_official_models(fixture_dir):
    """Every key of the released mobilenet0.25 and Resnet50 checkpoints maps onto our model built
    from the shipped config, with the same shape, and no parameter of ours is left out."""
    with open(os.path.join(fixture_dir, "official_state_dict_keys.json")) as f:
        released = json.load(f)
    for network, keys in released.items():
        state = {("module." + k): torch.zeros(shape) for k, shape in keys}  # DataParallel prefix
        backbone = infer_official_retinaface_backbone(state)
        cfg = cfg_for({"cfg": {"min_sizes": [[16, 32], [64, 128], [256, 512]], "variance": [0.1, 0.2],
                               "out_channel": 64 if backbone == "mobilenet0.25" else 256},
                       "mean_bgr": [104, 117, 123], "confidence_threshold": 0.02, "top_k": 5000,
                       "nms_threshold": 0.4, "keep_top_k": 750}, backbone)  # fmt: skip
        ours = build_model(cfg).state_dict()
        converted, _ = convert_official_retinaface_state_dict(state)
        assert set(converted) == set(ours), (network, sorted(set(ours) ^ set(converted))[:5])
        for k, v in converted.items():
            assert tuple(v.shape) == tuple(ours[k].shape), (network, k)


def test_converter_names_an_unknown_key():
    with pytest.raises(KeyError, match="body.stage1.0.9.weight"):
        convert_official_retinaface_state_dict({"body.stage1.0.9.weight": torch.zeros(1)})


def test_converter_cli_output_loads_with_detectron2_checkpointer(fixture_dir, tmp_path):
    """The CLI on a checkpoint saved as the original's train.py saves it under DataParallel
    (``module.`` keys), loaded by D2's DetectionCheckpointer: the same raw outputs."""
    import sys

    from detectron2.checkpoint import DetectionCheckpointer
    from tool_runs import run_in_repo

    path = _files(fixture_dir)[0]
    fx = torch.load(path, map_location="cpu", weights_only=False)
    src, dst = tmp_path / "official.pth", tmp_path / "d2.pth"
    torch.save({"module." + k: v for k, v in fx["state_dict"].items()}, src)
    log = run_in_repo(
        [sys.executable, "tools/convert_retinaface_weights.py", str(src), str(dst)], tmp_path
    )
    backbone = infer_official_retinaface_backbone(fx["state_dict"])
    assert ("retinaface_mnet025_640.yaml" if backbone == "mobilenet0.25" else "R_50") in log
    model = build_model(cfg_for(fx["meta"], backbone)).eval()
    DetectionCheckpointer(model).load(str(dst))
    chw = fx["image_bgr_uint8"].permute(2, 0, 1)
    with torch.no_grad():
        cls, box, lm, _ = model.forward_raw(
            ((chw.float() - model.pixel_mean) / model.pixel_std)[None]
        )
    assert torch.allclose(box, fx["raw"]["loc"], atol=RAW_ATOL, rtol=0)
    assert torch.allclose(lm, fx["raw"]["landms"], atol=RAW_ATOL, rtol=0)


def test_converter_takes_the_imagenet_mobilenet(fixture_dir):
    """mobilenetV1X0.25_pretrain.tar (DataParallel keys ``module.stage*`` + the classifier):
    the backbone of our model, classifier dropped."""
    fx = torch.load(_files(fixture_dir)[0], map_location="cpu", weights_only=False)
    body = {
        "module." + k[len("body.") :]: v
        for k, v in fx["state_dict"].items()
        if k.startswith("body.")
    }
    body["module.fc.weight"] = torch.zeros(1000, 256)
    body["module.fc.bias"] = torch.zeros(1000)
    assert infer_official_retinaface_backbone(body) == "mobilenet0.25-imagenet"
    converted, _ = convert_official_retinaface_state_dict(body)
    model = build_model(cfg_for(fx["meta"], "mobilenet0.25"))
    backbone_keys = {k for k in model.state_dict() if k.startswith("backbone.")}
    assert set(converted) == backbone_keys
