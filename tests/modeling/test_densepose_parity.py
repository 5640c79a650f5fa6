"""Parity of the DensePose chart branch with D2 ``projects/DensePose`` on the fixtures it
produced (``<repo>/../shared/fixtures/densepose``, README there): decoder, ROI pooling, head,
predictor, post-processing (``ToChartResultConverter``) and the four loss terms, from the
official-named weights; and the s1x / legacy checkpoints' keys and shapes against models built
from our config.

Every size and setting comes from the fixture's ``meta`` (and ``meta.config_overrides``), so any
fixture of the same layout runs through these tests unchanged.
"""

import glob
import json
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model, build_roi_heads
from detectron2.structures import Boxes, Instances

from d2ext import add_d2ext_config
from d2ext.modeling.densepose import (
    DensePoseChartPredictorOutput,
    box_xyxy_to_int_xywh,
    convert_official_densepose_state_dict,
    densepose_chart_results,
    select_densepose_proposals,
)
from d2ext.modeling.densepose.losses import (
    pack_densepose_targets,
    point_grid_indices,
    resample_segm_to_rois,
)
from d2ext.structures import DensePoseData, DensePoseList

ATOL = 1e-4


def r50_fpn_densepose_cfg():
    """``densepose_rcnn_R_50_FPN_s1x.yaml`` in our keys: stock Mask R-CNN R-50-FPN without the
    mask head, one class (person), ``DensePoseROIHeads``; DensePose keys at their defaults."""
    cfg = get_cfg()
    add_d2ext_config(cfg)
    m = cfg.MODEL
    m.DEVICE = "cpu"
    m.BACKBONE.NAME = "build_resnet_fpn_backbone"
    m.RESNETS.DEPTH = 50
    m.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    m.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    m.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
    m.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    m.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    m.ROI_HEADS.NAME = "DensePoseROIHeads"
    m.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    m.ROI_HEADS.NUM_CLASSES = 1
    m.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    m.ROI_BOX_HEAD.NUM_FC = 2
    m.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    m.MASK_ON = False
    m.DENSEPOSE_ON = True
    return cfg


def cfg_from_meta(meta):
    cfg = r50_fpn_densepose_cfg()
    h = cfg.MODEL.ROI_DENSEPOSE_HEAD
    for key, value in meta.items():
        if key.upper() in h and key != "pooler_type":
            h[key.upper()] = value
    assert meta["pooler_type"].split()[0] == "ROIAlign" and "aligned=False" in meta["pooler_type"]
    h.POOLER_TYPE = "ROIAlign"
    overrides = []

    def flatten(prefix, node):
        for k, v in node.items():
            if isinstance(v, dict):
                flatten(f"{prefix}{k}.", v)
            else:
                overrides.extend([f"{prefix}{k}", v])

    flatten("", meta.get("config_overrides", {}))
    cfg.merge_from_list(overrides)
    assert h.DECODER_ON is False or meta["pooler_scale"] == 1.0 / h.DECODER_COMMON_STRIDE
    return cfg


@pytest.fixture(scope="module")
def fixture_dir(require_shared):
    return require_shared("fixtures", "densepose")


@pytest.fixture(scope="module")
def cases(fixture_dir):
    """[(fixture, roi_heads with the fixture's weights)] for every ``*.pt`` fixture."""
    files = sorted(glob.glob(os.path.join(fixture_dir, "*.pt")))
    assert files, f"no parity fixture (*.pt) in {fixture_dir}"
    out = []
    for path in files:
        fx = torch.load(path, map_location="cpu", weights_only=False)
        cfg = cfg_from_meta(fx["meta"])
        # FPN level pK has stride 2**K
        shapes = {
            name: ShapeSpec(channels=f.shape[1], stride=2 ** int(name[1:]))
            for name, f in fx["features"].items()
        }
        heads = build_roi_heads(cfg, shapes).eval()
        weights, dropped = convert_official_densepose_state_dict(fx["state_dict_fp16"])
        assert not dropped
        weights = {k[len("roi_heads.") :]: v.float() for k, v in weights.items()}
        missing, unexpected = heads.load_state_dict(weights, strict=False)
        assert not unexpected
        assert all(k.startswith(("box_head.", "box_predictor.")) for k in missing), missing
        out.append((fx, heads))
    return out


def test_decoder_pooler_head_predictor(cases):
    for fx, heads in cases:
        feats = {k: v.float() for k, v in fx["features"].items()}
        with torch.no_grad():
            dec = heads.decoder(feats)
            torch.testing.assert_close(dec, fx["decoder_out"], atol=ATOL, rtol=ATOL)
            boxes = [Boxes(fx["boxes_xyxy"])]
            pooled = heads.densepose_pooler([fx["decoder_out"]], boxes)
            torch.testing.assert_close(pooled, fx["pooled"], atol=ATOL, rtol=ATOL)
            head = heads.densepose_head(fx["pooled"])
            torch.testing.assert_close(head, fx["head_out"], atol=ATOL, rtol=ATOL)
            pred = heads.densepose_predictor(fx["head_out"])
            for name, ref in fx["predictor"].items():
                torch.testing.assert_close(getattr(pred, name), ref, atol=ATOL, rtol=ATOL)
            # the whole branch end to end from the FPN maps
            full = heads.densepose_outputs(feats, boxes)
            torch.testing.assert_close(full.u, fx["predictor"]["u"], atol=1e-3, rtol=1e-3)


def test_postprocess(cases):
    for fx, _ in cases:
        pred = DensePoseChartPredictorOutput(**fx["predictor"])
        post = fx["postprocess"]
        ints = torch.tensor([box_xyxy_to_int_xywh(b) for b in fx["boxes_xyxy"]])
        assert torch.equal(ints, post["box_xywh_int"])
        results = densepose_chart_results(pred, fx["boxes_xyxy"])
        for k, (labels, uv) in enumerate(results):
            assert labels.dtype == torch.int64
            assert torch.equal(labels, post["labels"][k]), f"box {k}"
            torch.testing.assert_close(uv, post["uv"][k], atol=1e-5, rtol=1e-5)
            # the evaluator's quantisation: truncation, not rounding
            quantised = torch.cat([labels[None].byte(), (uv * 255).clamp(0, 255).byte()])
            assert torch.equal(quantised, post["labels_uv_uint8"][k]), f"box {k}"


def proposals_from_fixture(images):
    proposals = []
    for im in images:
        p = Instances((1000, 1000))
        p.proposal_boxes = Boxes(im["proposal_boxes_xyxy"])
        p.gt_boxes = Boxes(im["gt_boxes_xyxy"])
        p.gt_classes = torch.zeros(len(p), dtype=torch.int64)
        p.gt_densepose = DensePoseList(
            [
                DensePoseData(
                    a["dp_x"], a["dp_y"], a["dp_I"], a["dp_U"], a["dp_V"], a["dp_masks_256"]
                )
                for a in im["annotations"]
            ]
        )
        proposals.append(p)
    return proposals


def test_losses(cases):
    for fx, heads in cases:
        ref = fx["loss"]
        proposals = proposals_from_fixture(ref["images"])
        selected = select_densepose_proposals(proposals, 1, fx["meta"]["fg_iou_threshold"])
        for p, im in zip(selected, ref["images"]):
            assert len(p) == len(im["kept_after_filter"])
        pred = DensePoseChartPredictorOutput(**fx["predictor"])[ref["predictor_rows"]]
        losses = heads.densepose_loss(selected, pred)
        assert set(losses) == set(ref["losses"])
        for name, value in ref["losses"].items():
            torch.testing.assert_close(losses[name], value, atol=1e-6, rtol=1e-6, msg=name)

        # the intermediate quantities of the original's point sampling and mask resampling
        packed = pack_densepose_targets(selected, fx["meta"]["num_patches"])
        rp, pts = ref["packed"], ref["points"]
        assert torch.equal(packed.rows, rp["point_bbox_indices"])
        torch.testing.assert_close(packed.x, rp["x_gt"])
        size = fx["meta"]["heatmap_size"]
        gx, gy, gw, gh = packed.gt_xywh.unbind(1)
        rx, ry, rw, rh = packed.roi_xywh.unbind(1)
        x_lo, x_hi, wx, vx = point_grid_indices(packed.x, gx, gw, rx, rw, size)
        y_lo, y_hi, wy, vy = point_grid_indices(packed.y, gy, gh, ry, rh, size)
        assert torch.equal(vx & vy, pts["j_valid"])
        assert torch.equal((vx & vy) & (packed.i > 0), pts["j_valid_fg"])
        for name, ours in (("x_lo", x_lo), ("x_hi", x_hi), ("y_lo", y_lo), ("y_hi", y_hi)):
            assert torch.equal(ours, pts[name]), name
        torch.testing.assert_close(wx * wy, pts["w_yhi_xhi"])
        torch.testing.assert_close((1 - wx) * (1 - wy), pts["w_ylo_xlo"])
        segm = resample_segm_to_rois(packed.segm, packed.segm_gt_xywh, packed.segm_roi_xywh, size)
        assert torch.equal(segm, ref["coarse_segm_gt_112"])


KEY_SETS = {
    "densepose_rcnn_R_50_FPN_s1x (roi_heads)": {},
    "densepose_rcnn_R_50_FPN_s1x (full model)": {},
    "densepose_rcnn_R_50_FPN_s1x_legacy (roi_heads)": {
        "MODEL.ROI_DENSEPOSE_HEAD.NUM_COARSE_SEGM_CHANNELS": 15,
        "MODEL.ROI_DENSEPOSE_HEAD.DECODER_ON": False,
    },
}


@pytest.mark.parametrize("name", sorted(KEY_SETS))
def test_official_keys_map_onto_our_model(fixture_dir, name):
    with open(os.path.join(fixture_dir, "official_state_dict_keys.json")) as f:
        official = json.load(f)[name]
    cfg = r50_fpn_densepose_cfg()
    cfg.merge_from_list([x for kv in KEY_SETS[name].items() for x in kv])
    ours = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}
    state = {k: torch.zeros(shape) for k, shape in official}
    converted, dropped = convert_official_densepose_state_dict(state)
    assert not dropped
    for key, value in converted.items():
        assert key in ours, f"{key} has no counterpart in our model"
        assert ours[key] == tuple(value.shape), key
    if "full model" in name:
        assert set(converted) == set(ours)
    else:
        assert set(converted) == {k for k in ours if k.startswith("roi_heads.")}


def test_converter_names_unknown_keys():
    with pytest.raises(KeyError, match="roi_heads.densepose_head.extra.weight"):
        convert_official_densepose_state_dict({"roi_heads.densepose_head.extra.weight": 0})


def test_convert_tool_pkl_and_pth(cases, tmp_path):
    """The official zoo's numpy pickle and a DataParallel ``.pth`` both convert to the same
    D2 checkpoint; an unknown key is named."""
    import pickle

    from tools.convert_densepose_weights import convert_file

    fx, _ = cases[0]
    sd = fx["state_dict_fp16"]
    pkl = tmp_path / "model_final.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in sd.items()}, "__author__": "zoo"}, f)
    pth = tmp_path / "dp.pth"
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, pth)
    for src in (pkl, pth):
        dst = tmp_path / f"{src.stem}_d2.pth"
        assert convert_file(str(src), str(dst)) == []
        model = torch.load(dst, weights_only=False)["model"]
        assert set(model) == set(sd)
        assert all(torch.equal(model[k], sd[k]) for k in sd)
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"roi_heads.densepose_head.oops": torch.zeros(1)}}, bad)
    with pytest.raises(ValueError, match="roi_heads.densepose_head.oops"):
        convert_file(str(bad), str(tmp_path / "out.pth"))
