"""YOLACT's export graph: the eager wrapper against the model's own inference, TorchScript and
onnxruntime against the eager wrapper at another batch and image size than traced, the
fixed-shape graph, the exportable options (standard NMS, YOLACT++ re-scoring) and bad inputs."""

import numpy as np
import onnxruntime
import pytest
import torch
from detectron2.modeling import build_model
from yolact_tiny import tiny_cfg

from d2ext.export import (
    as_tensor,
    build_export_wrapper,
    export_onnx,
    export_torchscript,
    load_torchscript,
    onnx_session,
    run_onnx,
    run_torchscript,
)
from d2ext.export.yolact import YOLACTExport

TRACE_HW = (96, 112)
RUN_HW = (70, 150)
# the tiny model's random weights: most anchors score 0.3-0.8, a flat image at the pixel mean
# has no candidate above 0.3
MEAN_GRAY = 128.0

FAST = {"SCORE_THRESH_TEST": 0.3}
STANDARD = {"SCORE_THRESH_TEST": 0.3, "NMS_TYPE": "standard", "NMS_THRESH_TEST": 0.3}
MASK_IOU = {"SCORE_THRESH_TEST": 0.3, "MASK_IOU_ON": True, "MASK_IOU_NET_CHANNELS": [4, 8]}


def _model(**yolact):
    torch.manual_seed(0)
    return build_model(tiny_cfg(**yolact)).eval()


def _noise(n, hw, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, *hw, generator=g) * 255).round()


def _shapes_image():
    """Flat regions: many anchors share their logits, so scores tie."""
    x = torch.full((2, 3, 96, 128), 40.0)
    x[0, :, 20:60, 30:90] = 200
    x[1, 0, 10:50, 10:50] = 250
    x[1, 1, 40:90, 60:120] = 0
    return x


def _eager_model(model, images):
    with torch.no_grad():
        return [r["instances"] for r in model([{"image": im.to(torch.uint8)} for im in images])]


def _run(wrapper, images):
    with torch.no_grad():
        return wrapper(images)


def _assert_same_instances(ref, ours):
    assert len(ref) == len(ours)
    for r, o in zip(ref, ours):
        assert r.image_size == o.image_size and len(r) == len(o)
        assert set(o.get_fields()) == {"pred_boxes", "scores", "pred_classes", "pred_masks"}
        for name in ("scores", "pred_classes", "pred_masks"):
            assert getattr(r, name).dtype == getattr(o, name).dtype, name
        assert torch.equal(r.pred_classes, o.pred_classes)
        torch.testing.assert_close(o.scores, r.scores, rtol=0, atol=1e-5)
        torch.testing.assert_close(o.pred_boxes.tensor, r.pred_boxes.tensor, rtol=0, atol=1e-4)
        assert r.pred_masks.shape == o.pred_masks.shape
        if len(r):
            assert (r.pred_masks == o.pred_masks).float().mean() >= 0.9999


def _assert_same_outputs(ref, out, exact):
    """Graph outputs: equal when ``exact``; else float tensors <= 1e-4, masks >= 99.99% of
    pixels, the rest (batch_index, classes) equal."""
    assert set(ref) == set(out)
    for name, value in ref.items():
        other = as_tensor(out[name])
        assert value.shape == other.shape and value.dtype == other.dtype, name
        if name == "masks" and not exact and value.numel():
            assert (value == other).float().mean() >= 0.9999
        elif value.is_floating_point() and not exact:
            torch.testing.assert_close(other, value, rtol=0, atol=1e-4, msg=name)
        else:
            assert torch.equal(value, other), name


@pytest.mark.parametrize(
    "options",
    [
        # NMS decides the count: fewer candidates than top_k, no cap
        {"SCORE_THRESH_TEST": 0.8, "DETECTIONS_PER_IMAGE": 1000},
        # the per-class top-k and the per-image cap both cut
        {"SCORE_THRESH_TEST": 0.3, "TOPK_CANDIDATES_TEST": 20, "DETECTIONS_PER_IMAGE": 50},
        {"SCORE_THRESH_TEST": 0.5, "SECOND_THRESHOLD": True, "DETECTIONS_PER_IMAGE": 1000},
        {**STANDARD, "NMS_THRESH_TEST": 0.05, "DETECTIONS_PER_IMAGE": 1000},
        {**MASK_IOU, "SCORE_THRESH_TEST": 0.7},
    ],
)
def test_eager_wrapper_matches_model(options):
    model = _model(**options)
    images = _noise(3, RUN_HW)
    images[1] = MEAN_GRAY  # an image without detections between two with
    wrapper = YOLACTExport(model)
    out = _run(wrapper, images)
    assert wrapper.output_names == tuple(sorted(out))
    ours = YOLACTExport.outputs_to_instances(out, [RUN_HW] * 3, wrapper.metadata())
    ref = _eager_model(model, images)
    _assert_same_instances(ref, ours)
    counts = [len(r) for r in ref]
    assert counts[0] > 0 and counts[1] == 0 and counts[2] > 0
    assert out["batch_index"].tolist() == sorted(out["batch_index"].tolist())
    if options.get("DETECTIONS_PER_IMAGE") == 1000:  # NMS suppressed something
        assert max(counts) < 3 * min(model.topk_candidates, 1023)


def test_tied_scores_match_model_as_sets():
    """Equal scores keep the lower anchor index first in the export (ONNX TopK's rule); the
    eager sort leaves their order open, so the detections are compared as sets."""
    model = _model(SCORE_THRESH_TEST=0.05)
    images = _shapes_image()
    out = _run(YOLACTExport(model), images)
    ours = YOLACTExport.outputs_to_instances(out, [tuple(images.shape[2:])] * 2, {})
    ref = _eager_model(model, images)
    assert any(len(o.scores.unique()) < len(o) for o in ours)  # ties are there

    def rows(inst):
        boxes = inst.pred_boxes.tensor
        keys = [(s, c, *b) for s, c, b in zip(inst.scores, inst.pred_classes, boxes.tolist())]
        return sorted((float(k[0]), int(k[1]), *k[2:]) for k in keys)

    for r, o in zip(ref, ours):
        assert len(r) == len(o) > 0 and rows(r) == rows(o)


@pytest.mark.parametrize(
    "options", [FAST, STANDARD, MASK_IOU], ids=["fast", "standard", "mask_iou"]
)
def test_torchscript_and_onnx_match_eager(options, tmp_path):
    model = _model(**options)
    wrapper = YOLACTExport(model, raw_outputs=True)
    trace_inputs = (_noise(1, TRACE_HW, seed=2),)
    # another batch and size than traced; M = 0; tied scores (every runtime: lower index first)
    runs = [_noise(3, RUN_HW), torch.full((2, 3, 50, 60), MEAN_GRAY), _shapes_image()]
    runs[0][1] = MEAN_GRAY
    expected = [_run(wrapper, x) for x in runs]
    ref = _eager_model(model, runs[0])
    assert 0 < len(expected[0]["scores"]) and len(expected[1]["scores"]) == 0

    ts_path = str(tmp_path / "yolact.pt")
    export_torchscript(wrapper, trace_inputs, ts_path)
    module, meta = load_torchscript(ts_path)
    assert meta == wrapper.metadata()
    for x, exp in zip(runs, expected):
        _assert_same_outputs(exp, run_torchscript(module, meta, (x,)), exact=True)

    onnx_path = export_onnx(wrapper, trace_inputs, str(tmp_path / "yolact.onnx"))
    session, meta = onnx_session(onnx_path, num_threads=1)
    assert meta["model_name"] == "YOLACT" and meta["output_names"] == list(wrapper.output_names)
    for x, exp in zip(runs, expected):
        out = run_onnx(session, meta, (x,))
        _assert_same_outputs(exp, out, exact=False)
    empty = run_onnx(session, meta, (runs[1],))
    assert empty["masks"].shape == (0, 50, 60) and empty["boxes"].shape == (0, 4)
    assert empty["scores"].shape == empty["classes"].shape == empty["batch_index"].shape == (0,)
    out = run_onnx(session, meta, (runs[0],))
    _assert_same_instances(ref, YOLACTExport.outputs_to_instances(out, [RUN_HW] * 3, meta))


def test_standard_nms_keeps_images_and_classes_apart():
    """Boxes reaching below 0 (decoded boxes are not clipped before NMS) must not meet boxes
    of another class or image once the groups are moved apart."""
    wrapper = YOLACTExport(_model(**STANDARD))
    far = torch.tensor([[60.0, 60, 110, 110], [-60, -60, 5, 5]])
    near = torch.tensor([[0.0, 0, 50, 50], [5, 5, 50, 50]])
    scores = torch.tensor([0.9, 0.8])
    # (N, C * top_k, 4) with C = 2, top_k = 1: two classes of one image
    kept = wrapper._standard_nms(far[None], scores.view(1, 2, 1), torch.ones(1, 2, 1).bool())
    assert kept.all()
    # N = 2, C = 1, top_k = 2: per image, the first class; the second image's pair overlaps
    boxes = torch.stack([far, near])
    kept = wrapper._standard_nms(boxes, scores.repeat(2, 1, 1), torch.ones(2, 1, 2).bool())
    assert kept.tolist() == [[[True, True]], [[True, False]]]


def test_fixed_shape_refuses_other_sizes(tmp_path):
    model = _model(**FAST)
    wrapper = YOLACTExport(model, fixed_shape=TRACE_HW)
    image = np.random.RandomState(0).randint(0, 256, (*RUN_HW, 3)).astype(np.uint8)
    (inputs,) = wrapper.sample_inputs(image, batch_size=2)  # resized to the fixed shape
    assert inputs.shape == (2, 3, *TRACE_HW) and inputs.dtype == torch.float32
    assert wrapper.dynamic_axes()["images"] == {0: "batch"}
    expected = _run(wrapper, inputs)
    assert len(expected["scores"]) > 0
    with pytest.raises(ValueError, match="fixed 96x112 inputs; images is 70x150"):
        _run(wrapper, _noise(1, RUN_HW))
    path = export_onnx(wrapper, (inputs[:1],), str(tmp_path / "fixed.onnx"))
    session, meta = onnx_session(path, num_threads=1)
    assert meta["fixed_shape"] == list(TRACE_HW)
    _assert_same_outputs(expected, run_onnx(session, meta, (inputs,)), exact=False)
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument, match="images"):
        run_onnx(session, meta, (_noise(1, RUN_HW),))


def test_sample_inputs_grayscale_and_metadata():
    model = _model(**FAST)
    wrapper = YOLACTExport(model, input_format="RGB")
    image = np.random.RandomState(0).randint(0, 256, (*RUN_HW, 3)).astype(np.uint8)
    (inputs,) = wrapper.sample_inputs(image, batch_size=2)
    assert torch.equal(inputs[1], torch.from_numpy(image).permute(2, 0, 1).float())
    meta = wrapper.metadata()
    assert meta["input_format"] == "RGB" and meta["num_classes"] == 3
    assert meta["input_size"] == 128 and meta["nms_type"] == "fast" and not meta["mask_iou_on"]
    # a grayscale batch (N, 1, H, W) is widened to 3 channels as the model does
    gray_wrapper = YOLACTExport(model, fixed_shape=(64, 80), input_format="L")
    (gray,) = gray_wrapper.sample_inputs(image[:, :, 0], batch_size=2)
    assert gray.shape == (2, 1, 64, 80)
    meta = gray_wrapper.metadata()
    ours = YOLACTExport.outputs_to_instances(_run(gray_wrapper, gray), [(64, 80)] * 2, meta)
    assert meta["input_format"] == "L" and len(ours[0]) > 0
    _assert_same_instances(_eager_model(model, gray), ours)


def test_bad_models_options_and_inputs():
    with pytest.raises(ValueError, match="wraps a YOLACT model"):
        YOLACTExport(torch.nn.Conv2d(3, 3, 1).eval())
    # YolactEdge derives from YOLACT, but its video path carries state: refused, by name
    edge_cfg = tiny_cfg()
    edge_cfg.MODEL.META_ARCHITECTURE = "YolactEdge"
    edge_cfg.MODEL.YOLACT_EDGE.FLOW_REDUCE_CHANNELS = [8]
    edge_cfg.MODEL.YOLACT_EDGE.FLOW_ENCODE_CHANNELS = 8
    edge = build_model(edge_cfg).eval()
    with pytest.raises(ValueError, match="YolactEdge .*USE_SPA.* has no export"):
        build_export_wrapper(edge)
    with pytest.raises(ValueError, match="MODEL.YOLACT.TOPK_CANDIDATES_TEST"):
        YOLACTExport(_model(TOPK_CANDIDATES_TEST=0))
    with pytest.raises(ValueError, match="MODEL.YOLACT.DETECTIONS_PER_IMAGE"):
        YOLACTExport(_model(DETECTIONS_PER_IMAGE=0))
    model = _model(**FAST)
    with pytest.raises(ValueError, match="eval mode"):
        YOLACTExport(model.train())
    wrapper = YOLACTExport(model.eval())
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        YOLACTExport(model, input_format="YUV")
    with pytest.raises(ValueError, match=r"images must be \(N, 3, H, W\)"):
        _run(wrapper, torch.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError, match="uint8"):
        wrapper.sample_inputs(np.zeros((8, 8, 3), np.float32))
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        _run(wrapper, torch.zeros(1, 3, 32, 32))
    model.eval()
    out = _run(wrapper, _noise(2, (40, 48)))
    assert len(out["scores"]) > 0
    with pytest.raises(ValueError, match=r"image_sizes\[0\] is \(48, 40\)"):
        YOLACTExport.outputs_to_instances(out, [(48, 40)] * 2, {})
    with pytest.raises(ValueError, match="image_sizes has 1 images"):
        YOLACTExport.outputs_to_instances(out, [(40, 48)], {})
