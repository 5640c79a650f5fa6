"""tools/convert_yolact_weights.py: an official-named checkpoint converts to one D2's
DetectionCheckpointer loads into our YOLACT with no missing or unexpected keys."""
import os
import sys

import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tools"))
from convert_yolact_weights import convert_file, main as convert_main  # noqa: E402

from d2ext.modeling.yolact import convert_official_yolact_state_dict  # noqa: E402


def _tiny_cfg():
    from detectron2.config import get_cfg

    from d2ext import add_d2ext_config

    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs/YOLACT/Base-YOLACT.yaml"))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = 50
    y = cfg.MODEL.YOLACT
    y.NUM_CLASSES, y.FPN_OUT_CHANNELS, y.PROTO_CONV_DIM, y.HEAD_CONV_DIM, y.NUM_PROTOTYPES = 4, 16, 16, 16, 8
    return cfg


def _official_names(model_sd):
    """Invert our mapping on a d2ext state dict: the names the original would use."""
    fake = {}
    for k, v in model_sd.items():
        k = k.replace("backbone.bottom_up.stem.conv1.norm.", "backbone.bn1.").replace("backbone.bottom_up.stem.conv1.", "backbone.conv1.")
        for s in range(2, 6):
            k = k.replace(f"backbone.bottom_up.res{s}.", f"backbone.layers.{s - 2}.")
        k = k.replace("shortcut.norm.", "downsample.1.").replace("shortcut.", "downsample.0.")
        for i in (1, 2, 3):
            k = k.replace(f"conv{i}.norm.", f"bn{i}.")
        for lvl in (3, 4, 5):
            k = k.replace(f"backbone.fpn_lateral{lvl}.", f"fpn.lat_layers.{5 - lvl}.").replace(f"backbone.fpn_output{lvl}.", f"fpn.pred_layers.{5 - lvl}.")
        for lvl in (6, 7):
            k = k.replace(f"backbone.fpn_downsample{lvl}.", f"fpn.downsample_layers.{lvl - 6}.")
        k = k.replace("proto_net.net.", "proto_net.")
        for ours, theirs in (("upfeature", "upfeature.0"), ("bbox_pred", "bbox_layer"), ("cls_logits", "conf_layer"), ("coeff_pred", "mask_layer")):
            k = k.replace(f"head.{ours}.", f"prediction_layers.0.{theirs}.")
        fake["module." + k] = v.clone().half() if v.is_floating_point() else v
    fake["module.backbone.bn1.num_batches_tracked"] = torch.tensor(5)
    return fake


def test_roundtrip_through_tool(tmp_path):
    torch.manual_seed(0)
    model = build_model(_tiny_cfg())
    ref = {k: v for k, v in model.state_dict().items()}
    src = tmp_path / "yolact_resnet50_fake.pth"
    torch.save(_official_names(ref), src)
    out = tmp_path / "d2.pth"
    convert_main([str(src), str(out)])  # the CLI entry point, in-process
    fresh = build_model(_tiny_cfg())
    DetectionCheckpointer(fresh).load(str(out))
    loaded = torch.load(out, weights_only=False)["model"]
    assert set(loaded) == set(ref)
    fresh.load_state_dict(loaded, strict=True)
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(v, ref[k].half().float() if v.is_floating_point() else ref[k], msg=k)


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError):
        convert_file(str(tmp_path / "missing.pth"), str(tmp_path / "o.pth"))
    with pytest.raises(KeyError, match="maskiou_net"):
        convert_official_yolact_state_dict({"maskiou_net.0.weight": torch.zeros(1)})
    bad = tmp_path / "bad.pth"
    torch.save([1, 2], bad)
    with pytest.raises(ValueError, match="bad.pth"):
        convert_file(str(bad), str(tmp_path / "o.pth"))
