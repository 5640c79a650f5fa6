"""tools/convert_yolact_weights.py on a checkpoint laid out as the official one.

The official keys and shapes come from ``../shared/fixtures/yolact`` (dumped from the original
code), plus YOLACT++'s ``maskiou_net`` spelled out below from the original's ``FastMaskIoUNet``.
Every official tensor must reach the d2ext parameter that does its job, and that correspondence
is checked against the original's own structure, never by inverting the converter:

* the ResNet by running the same tensors in torchvision's ResNet (the original's backbone is
  torchvision's Bottleneck ResNet, its ``layers[i]`` being torchvision's ``layer{i+1}``);
* the FPN, protonet, prediction head and semantic conv against a table written from the
  original's module definitions (their numerics are covered by tests/modeling/test_yolact_parity.py);
* YOLACT++'s mask-IoU net by running it as the original's ``make_net`` builds it.
"""

import json
import os
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from torch import nn

from d2ext import add_d2ext_config
from d2ext.modeling.yolact import convert_official_yolact_state_dict

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tools"))
from convert_yolact_weights import convert_file  # noqa: E402  (tools/ is not a package)
from convert_yolact_weights import main as convert_main  # noqa: E402

# yolact_plus_base_config: maskiou_net = [(8, 3, {'stride': 2}), (16, ...), (32, ...), (64, ...),
# (128, 3, {'stride': 2})]; FastMaskIoUNet appends (num_classes - 1, 1, {}) and make_net puts a
# ReLU after every layer, so the convs are Sequential entries 0, 2, ..., 10
MASKIOU_CHANNELS = [8, 16, 32, 64, 128]
NUM_CLASSES = 80
OFFICIAL_MASKIOU = {
    f"maskiou_net.maskiou_net.{2 * i}.{p}": ([out, inp, k, k] if p == "weight" else [out])
    for i, (inp, out, k) in enumerate(
        zip([1] + MASKIOU_CHANNELS, MASKIOU_CHANNELS + [NUM_CLASSES], [3] * 5 + [1])
    )
    for p in ("weight", "bias")
}

# Official module -> d2ext module, from the original's definitions: FPN.lat_layers is built over
# reversed(in_channels) (0 = C5) and pred_layers run in the same order; downsample_layers[i]
# makes P(6 + i); proto_net is make_net(mask_proto_net) (convs at 0, 2, 4, 8, 10 around the
# bilinear upsample at 6); PredictionModule's upfeature is Sequential(conv, ReLU).
NON_BACKBONE = {
    "fpn.lat_layers.0": "backbone.fpn_lateral5",
    "fpn.lat_layers.1": "backbone.fpn_lateral4",
    "fpn.lat_layers.2": "backbone.fpn_lateral3",
    "fpn.pred_layers.0": "backbone.fpn_output5",
    "fpn.pred_layers.1": "backbone.fpn_output4",
    "fpn.pred_layers.2": "backbone.fpn_output3",
    "fpn.downsample_layers.0": "backbone.fpn_downsample6",
    "fpn.downsample_layers.1": "backbone.fpn_downsample7",
    "proto_net.0": "proto_net.net.0",
    "proto_net.2": "proto_net.net.2",
    "proto_net.4": "proto_net.net.4",
    "proto_net.8": "proto_net.net.8",
    "proto_net.10": "proto_net.net.10",
    "prediction_layers.0.upfeature.0": "head.upfeature",
    "prediction_layers.0.bbox_layer": "head.bbox_pred",
    "prediction_layers.0.conf_layer": "head.cls_logits",
    "prediction_layers.0.mask_layer": "head.coeff_pred",
    "semantic_seg_conv": "semantic_seg_conv",
}


def _official_state_dict(key_shapes):
    """Random tensors under the official names, scaled so that 50 layers stay finite, stored in
    float16 (the converter returns float32) and with the ``module.`` prefix of DataParallel."""
    g = torch.Generator().manual_seed(0)
    norms = {k.rsplit(".", 1)[0] for k, _ in key_shapes if k.endswith("running_mean")}
    sd = {}
    for key, shape in key_shapes:
        if key.endswith("num_batches_tracked"):
            v = torch.tensor(7)
        elif key.endswith("running_var"):
            v = torch.rand(shape, generator=g) + 0.5
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            v = torch.randn(shape, generator=g) * (1.0 / fan_in) ** 0.5
        else:  # BN weight (around 1), BN bias and mean, conv bias
            is_scale = key.endswith(".weight") and key.rsplit(".", 1)[0] in norms
            v = torch.randn(shape, generator=g) * 0.1 + (1.0 if is_scale else 0.0)
        sd["module." + key] = v.half() if v.is_floating_point() else v
    return sd


def _r50_cfg():
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "YOLACT", "yolact_R_50_FPN_550.yaml"))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.YOLACT.MASK_IOU_ON = True  # YOLACT++'s re-scoring net, to receive maskiou_net
    cfg.MODEL.YOLACT.MASK_IOU_NET_CHANNELS = MASKIOU_CHANNELS
    return cfg


@pytest.fixture(scope="module")
def converted(require_shared, tmp_path_factory):
    """(official state dict without prefix, converted checkpoint, d2ext model loaded from it)."""
    path = os.path.join(require_shared("fixtures", "yolact"), "official_state_dict_keys.json")
    with open(path) as f:
        key_shapes = json.load(f)["yolact_resnet50_config"] + list(OFFICIAL_MASKIOU.items())
    official = _official_state_dict(key_shapes)
    tmp = tmp_path_factory.mktemp("convert_yolact")
    src, dst = str(tmp / "yolact_plus_resnet50_fake.pth"), str(tmp / "d2.pth")
    torch.save(official, src)
    convert_main([src, dst])  # the CLI entry point, in-process
    ckpt = torch.load(dst, weights_only=False)
    model = build_model(_r50_cfg()).eval()
    DetectionCheckpointer(model).load(dst)
    official = {k[len("module.") :]: v for k, v in official.items()}
    return official, ckpt, model


def test_checkpoint_loads_with_exactly_our_keys(converted):
    official, ckpt, model = converted
    assert ckpt["__author__"] == "dbolya/yolact" and ckpt["matching_heuristics"] is False
    loaded = ckpt["model"]
    assert set(loaded) == set(model.state_dict())
    model.load_state_dict(loaded, strict=True)
    assert all(v.dtype == torch.float32 for v in loaded.values() if v.is_floating_point())
    num_tracked = sum(k.endswith("num_batches_tracked") for k in official)
    assert num_tracked > 0 and len(loaded) == len(official) - num_tracked


def test_fpn_protonet_heads_get_their_official_tensors(converted):
    official, ckpt, _ = converted
    loaded = ckpt["model"]
    modules = {
        k.rsplit(".", 1)[0] for k in official if not k.startswith(("backbone.", "maskiou_net."))
    }
    assert modules == set(NON_BACKBONE)  # the table covers every official non-backbone module
    for key, value in official.items():
        module, param = key.rsplit(".", 1)
        if module in NON_BACKBONE:
            assert torch.equal(loaded[f"{NON_BACKBONE[module]}.{param}"], value.float()), key


def test_backbone_computes_what_the_official_resnet_computes(converted):
    official, _, model = converted
    tv = torchvision.models.resnet50()
    tv_sd = {}
    for key, value in official.items():
        if key.startswith("backbone.") and not key.endswith("num_batches_tracked"):
            name = key[len("backbone.") :]
            if name.startswith("layers."):
                _, i, rest = name.split(".", 2)
                name = f"layer{int(i) + 1}.{rest}"
            tv_sd[name] = value.float()
    missing, unexpected = tv.load_state_dict(tv_sd, strict=False)
    assert not unexpected and sorted(missing) == ["fc.bias", "fc.weight"]
    tv.eval()
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        refs = {}
        for i, stage in enumerate([tv.layer1, tv.layer2, tv.layer3, tv.layer4]):
            y = stage(y)
            refs[f"res{i + 2}"] = y
        ours = model.backbone.bottom_up(x)
    assert set(ours) == {"res3", "res4", "res5"}
    for name, out in ours.items():
        ref = refs[name]
        assert ref.abs().max() > 1e-3  # the random weights keep the signal alive
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_mask_iou_net_computes_what_fast_mask_iou_net_computes(converted):
    official, _, model = converted
    # the original: make_net(1, maskiou_net + [(C, 1, {})], include_last_relu=True), then a
    # max-pool over the whole map
    layers = []
    for inp, out, k in zip([1] + MASKIOU_CHANNELS, MASKIOU_CHANNELS + [NUM_CLASSES], [3] * 5 + [1]):
        layers += [nn.Conv2d(inp, out, k, stride=2 if k == 3 else 1), nn.ReLU()]
    original = nn.Sequential(*layers)
    prefix = "maskiou_net.maskiou_net."
    original.load_state_dict(
        {k[len(prefix) :]: v.float() for k, v in official.items() if k.startswith(prefix)}
    )
    x = torch.rand(3, 1, 69, 69, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = original(x)
        ref = F.max_pool2d(y, kernel_size=y.shape[2:]).squeeze(-1).squeeze(-1)
        ours = model.mask_iou_net(x)
    assert ours.shape == (3, NUM_CLASSES) and ref.abs().max() > 0
    torch.testing.assert_close(ours, ref)


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError):
        convert_file(str(tmp_path / "missing.pth"), str(tmp_path / "o.pth"))
    # YOLACT++'s deformable backbone convs have no d2ext counterpart: named, not dropped
    with pytest.raises(KeyError, match="conv_offset_mask"):
        convert_official_yolact_state_dict(
            {"backbone.layers.1.0.conv2.conv_offset_mask.weight": torch.zeros(1)}
        )
    bad = tmp_path / "bad.pth"
    torch.save([1, 2], bad)
    with pytest.raises(ValueError, match="bad.pth"):
        convert_file(str(bad), str(tmp_path / "o.pth"))
