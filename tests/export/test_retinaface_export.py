"""RetinaFace export graph: the eager wrapper equals the model's own inference, TorchScript and
onnxruntime equal the eager wrapper at other batch and image sizes than traced (anchors follow
the input size), onnxruntime's NonMaxSuppression selects what torchvision's NMS does, the
top-k / per-image limits, images without faces, the box-only model and fixed-shape refusal."""

import io
import os
import warnings

import numpy as np
import pytest
import torch
import torchvision
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from d2ext import add_d2ext_config
from d2ext.export import (
    export_onnx,
    export_torchscript,
    load_torchscript,
    onnx_session,
    run_onnx,
    run_torchscript,
)
from d2ext.export.retinaface import RetinaFaceExport, _float32_below

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _model(**overrides):
    """MobileNet-0.25 RetinaFace (``MODEL.RETINAFACE`` ``overrides``) with random heads and the
    BatchNorm statistics of one random batch: at init the features vanish with depth and every
    anchor gets the same face score, ties that float noise would reorder.

    onnxruntime's kernels differ from PyTorch's by ~1e-5 (relative) after the ~30 layers, so
    the heads are scaled to raw outputs of a few units and the anchors are small (12..48 px):
    decoded boxes and landmarks then agree to < 1e-4 px (512 px anchors: ~1e-3 px)."""
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "RetinaFace", "retinaface_mnet025_640.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[12, 16], [24, 32], [40, 48]]
    for key, value in overrides.items():
        cfg.MODEL.RETINAFACE[key] = value
    torch.manual_seed(0)
    model = build_model(cfg)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        model.forward_raw((_images(4, 64, 80, seed=99) - model.pixel_mean) / model.pixel_std)
        for conv in model.class_head:
            conv.weight.mul_(0.5)
        for conv in list(model.box_head) + list(model.landmark_head or []):
            conv.weight.mul_(0.2)
    return model.eval()


def _images(n, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g).float()


def _eager_instances(model, images):
    with torch.no_grad():
        return [r["instances"] for r in model([{"image": img} for img in images])]


def _wrapper_instances(wrapper, outputs, images):
    meta = wrapper.metadata()
    sizes = [tuple(images.shape[-2:])] * len(images)
    return RetinaFaceExport.outputs_to_instances(outputs, sizes, meta)


def _assert_same_instances(got, expected, score_atol=1e-6):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.image_size == e.image_size
        assert list(g.get_fields()) == list(e.get_fields())
        assert len(g) == len(e)
        assert torch.allclose(g.pred_boxes.tensor, e.pred_boxes.tensor, atol=1e-4, rtol=0)
        assert torch.allclose(g.scores, e.scores, atol=score_atol, rtol=0)
        assert g.pred_classes.dtype == e.pred_classes.dtype == torch.int64
        assert torch.equal(g.pred_classes, e.pred_classes)
        if e.has("pred_keypoints"):
            assert g.pred_keypoints.shape == e.pred_keypoints.shape
            assert torch.allclose(g.pred_keypoints, e.pred_keypoints, atol=1e-4, rtol=0)


def _assert_same_outputs(got, expected, raw_atol=1e-4):
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        other = torch.as_tensor(np.asarray(got[name]))
        assert other.shape == value.shape, name
        if name == "batch_index":
            assert other.dtype == torch.int64 and torch.equal(other, value)
        else:
            assert torch.allclose(other, value, atol=raw_atol if "raw" in name else 1e-4), name


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """The landmark model traced at batch 2, 48 x 64 to TorchScript and ONNX."""
    wrapper = RetinaFaceExport(model, raw_outputs=True)
    inputs = _images(2, 48, 64, seed=1)
    folder = tmp_path_factory.mktemp("retinaface")
    export_torchscript(wrapper, (inputs,), str(folder / "m.ts"))
    export_onnx(wrapper, (inputs,), str(folder / "m.onnx"))
    return wrapper, str(folder / "m.ts"), str(folder / "m.onnx")


def test_eager_wrapper_equals_the_model(model):
    wrapper = RetinaFaceExport(model, raw_outputs=True)
    assert wrapper.output_names == (
        "batch_index", "boxes", "landmarks", "raw_box", "raw_cls", "raw_landmark", "scores",
    )  # fmt: skip
    images = _images(2, 64, 80, seed=1)
    with torch.no_grad():
        outputs = wrapper(images)
        cls, box, lm, _ = model.forward_raw((images - model.pixel_mean) / model.pixel_std)
    assert torch.equal(outputs["raw_cls"], cls) and torch.equal(outputs["raw_landmark"], lm)
    got = _wrapper_instances(wrapper, outputs, images)
    _assert_same_instances(got, _eager_instances(model, images))
    # NMS does suppress: a fair share of the candidates above the score threshold are gone
    candidates = int((cls.softmax(-1)[..., 1] > model.score_threshold).sum())
    assert 20 < len(outputs["scores"]) < 0.7 * candidates, (len(outputs["scores"]), candidates)
    # flat outputs: by image, then score descending
    index, scores = outputs["batch_index"], outputs["scores"]
    assert torch.equal(index, index.sort().values)
    for i in range(2):
        assert torch.equal(scores[index == i], scores[index == i].sort(descending=True).values)


def test_torchscript_and_onnx_at_another_batch_and_size(model, exported):
    """Traced at 2 x 48 x 64, run at 3 x 64 x 80: the anchors (and everything after them)
    follow the feature maps' sizes; every anchor is a candidate here, so a wrong anchor would
    show in the decoded boxes compared with the eager model's."""
    wrapper, ts_path, onnx_path = exported
    images = _images(3, 64, 80, seed=2)
    with torch.no_grad():
        expected = wrapper(images)
    assert expected["raw_cls"].shape == (3, 2 * (8 * 10 + 4 * 5 + 2 * 3), 2)
    _assert_same_instances(
        _wrapper_instances(wrapper, expected, images), _eager_instances(model, images)
    )
    module, meta = load_torchscript(ts_path)
    assert meta["model_name"] == "RetinaFace" and meta["num_landmarks"] == 5
    _assert_same_outputs(run_torchscript(module, meta, (images,)), expected, raw_atol=0)
    session, meta = onnx_session(onnx_path, num_threads=1)
    outputs = run_onnx(session, meta, (images,))
    _assert_same_outputs(outputs, expected)
    _assert_same_instances(
        _wrapper_instances(wrapper, outputs, images), _eager_instances(model, images), 1e-5
    )


def _nms_session(threshold):
    class NMS(torch.nn.Module):
        def forward(self, boxes, scores):
            return torchvision.ops.nms(boxes, scores, threshold)

    f = io.BytesIO()
    boxes, scores = torch.rand(3, 4), torch.rand(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            NMS(), (boxes, scores), f, dynamo=False, opset_version=17,
            input_names=["boxes", "scores"], dynamic_axes={"boxes": {0: "n"}, "scores": {0: "n"}},
        )  # fmt: skip
    import onnxruntime as ort

    return ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])


def test_onnx_nms_selects_what_torchvision_selects(model, exported, monkeypatch):
    wrapper = exported[0]
    captured = []
    nms = torchvision.ops.nms
    monkeypatch.setattr(
        torchvision.ops, "nms", lambda b, s, t: captured.append((b, s, t)) or nms(b, s, t)
    )
    with torch.no_grad():
        wrapper(_images(3, 64, 80, seed=2))
    monkeypatch.undo()
    boxes, scores, threshold = captured[0]
    assert threshold == _float32_below(model.nms_threshold)
    session = _nms_session(threshold)
    kept = session.run(None, {"boxes": boxes.numpy(), "scores": scores.numpy()})[0]
    assert 0 < len(kept) < 0.7 * len(boxes)
    assert kept.tolist() == nms(boxes, scores, threshold).tolist()
    # strict IoU > threshold on both sides at an IoU of exactly float32(0.4): onnxruntime
    # compares in float32, torchvision in double, hence the threshold rounded down to float32
    pair = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 4]])
    pair_scores = torch.tensor([0.9, 0.8])
    feeds = {"boxes": pair.numpy(), "scores": pair_scores.numpy()}
    assert nms(pair, pair_scores, 0.4).tolist() == [0]
    assert _nms_session(0.4).run(None, feeds)[0].tolist() == [0, 1]
    assert _nms_session(_float32_below(0.4)).run(None, feeds)[0].tolist() == [0]
    assert _float32_below(0.5) == 0.5 and np.float32(_float32_below(0.4)) < np.float32(0.4)


def test_tied_scores_resolve_alike_in_every_runtime(tmp_path):
    """Class head without weights: every anchor of a level and size has the same score (as
    saturated scores of a trained model may). Ties are broken by anchor index in the
    candidates' order (top-k cuts inside a tied group here), in NMS and in the output, by the
    eager graph and onnxruntime alike. (The eager model's unstable ``argsort`` may order tied
    detections differently; the set of detections is the same here.)"""
    model = _model(TOPK_CANDIDATES_TEST=150)
    with torch.no_grad():
        for conv in model.class_head:
            conv.weight.zero_()
    wrapper = RetinaFaceExport(model)
    export_onnx(wrapper, (_images(1, 48, 64, seed=9),), str(tmp_path / "ties.onnx"))
    session, meta = onnx_session(str(tmp_path / "ties.onnx"), num_threads=1)
    images = _images(2, 64, 80, seed=10)
    with torch.no_grad():
        expected = wrapper(images)
    assert len(torch.unique(expected["scores"])) <= 6 < len(expected["scores"])
    _assert_same_outputs(run_onnx(session, meta, (images,)), expected)
    # equal scores keep the anchor order, also past the length where torch's sort is unstable
    scores = torch.tensor([[0.5, 0.75, 0.5, 0.75, 0.75]])
    values, order = RetinaFaceExport._stable_sort_descending(scores)
    assert order.tolist() == [[1, 3, 4, 0, 2]] and values.tolist() == [[0.75] * 3 + [0.5] * 2]
    ties = torch.full((2, 300), 0.25)
    ties[:, 7] = 0.5
    assert RetinaFaceExport._stable_sort_descending(ties)[1][:, :4].tolist() == [[7, 0, 1, 2]] * 2


def test_topk_and_detections_per_image_limits(tmp_path):
    model = _model(TOPK_CANDIDATES_TEST=40, DETECTIONS_PER_IMAGE=6)
    wrapper = RetinaFaceExport(model)
    assert wrapper.output_names == ("batch_index", "boxes", "landmarks", "scores")
    export_onnx(wrapper, (_images(2, 48, 64, seed=3),), str(tmp_path / "limits.onnx"))
    session, meta = onnx_session(str(tmp_path / "limits.onnx"), num_threads=1)
    assert meta["topk_candidates"] == 40 and meta["max_detections_per_image"] == 6
    images = _images(3, 64, 80, seed=4)
    with torch.no_grad():
        expected = wrapper(images)
    assert torch.bincount(expected["batch_index"], minlength=3).tolist() == [6, 6, 6]
    _assert_same_instances(
        _wrapper_instances(wrapper, expected, images), _eager_instances(model, images)
    )
    _assert_same_outputs(run_onnx(session, meta, (images,)), expected)
    # both limits bind: without the per-image limit more than 6 of the 40 candidates survive
    # NMS, and without top-k more than 40 of the 212 candidates are checked
    model.max_detections_per_image = 0
    with torch.no_grad():
        topk_only = RetinaFaceExport(model)(images)
    model.topk_candidates = 0
    with torch.no_grad():
        unlimited = RetinaFaceExport(model)(images)
    topk_counts = torch.bincount(topk_only["batch_index"], minlength=3)
    assert (topk_counts > 6).all() and (topk_counts <= 40).all()
    assert (torch.bincount(unlimited["batch_index"], minlength=3) > topk_counts).all()


def test_images_without_faces(model, tmp_path):
    """A batch where one image has no face above the threshold (M counts only the others)
    and a batch without any (M = 0: empty outputs and Instances like the eager ones)."""
    blank = torch.full((1, 3, 64, 80), 128.0)
    with torch.no_grad():
        cls, *_ = model.forward_raw((blank - model.pixel_mean) / model.pixel_std)
    default = model.score_threshold
    # nothing of the blank image (a margin for onnxruntime's float differences)
    model.score_threshold = float(cls.softmax(-1)[..., 1].max()) + 1e-4
    try:
        wrapper = RetinaFaceExport(model)
        export_onnx(wrapper, (_images(2, 48, 64, seed=3),), str(tmp_path / "faces.onnx"))
        session, meta = onnx_session(str(tmp_path / "faces.onnx"), num_threads=1)
        images = torch.cat([_images(1, 64, 80, seed=4), blank, _images(1, 64, 80, seed=6)])
        with torch.no_grad():
            expected = wrapper(images)
        counts = torch.bincount(expected["batch_index"], minlength=3).tolist()
        assert counts[1] == 0 and min(counts[0], counts[2]) > 0, counts
        _assert_same_instances(
            _wrapper_instances(wrapper, expected, images), _eager_instances(model, images)
        )
        _assert_same_outputs(run_onnx(session, meta, (images,)), expected)
        blanks = blank.repeat(2, 1, 1, 1)
        outputs = run_onnx(session, meta, (blanks,))
        assert outputs["boxes"].shape == (0, 4) and outputs["landmarks"].shape == (0, 5, 2)
        assert outputs["batch_index"].dtype == np.int64 and outputs["scores"].shape == (0,)
        got = RetinaFaceExport.outputs_to_instances(outputs, [(64, 80)] * 2, meta)
        _assert_same_instances(got, _eager_instances(model, blanks))
        assert got[0].pred_keypoints.shape == (0, 5, 3)
    finally:
        model.score_threshold = default


def test_model_without_landmarks(tmp_path):
    model = _model(LANDMARK_ON=False)
    wrapper = RetinaFaceExport(model, raw_outputs=True)
    assert wrapper.output_names == ("batch_index", "boxes", "raw_box", "raw_cls", "scores")
    export_onnx(wrapper, (_images(1, 48, 64, seed=6),), str(tmp_path / "boxes.onnx"))
    session, meta = onnx_session(str(tmp_path / "boxes.onnx"), num_threads=1)
    assert meta["num_landmarks"] == 0
    images = _images(2, 80, 64, seed=7)
    with torch.no_grad():
        expected = wrapper(images)
    outputs = run_onnx(session, meta, (images,))
    _assert_same_outputs(outputs, expected)
    got = _wrapper_instances(wrapper, outputs, images)
    assert not got[0].has("pred_keypoints")
    _assert_same_instances(got, _eager_instances(model, images), score_atol=1e-5)


def test_fixed_shape_refuses_other_sizes(model, tmp_path):
    wrapper = RetinaFaceExport(model, fixed_shape=(48, 64))
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    (inputs,) = wrapper.sample_inputs(image, batch_size=2)
    assert inputs.shape == (2, 3, 48, 64) and inputs.dtype == torch.float32
    assert wrapper.dynamic_axes()["images"] == {0: "batch"}
    export_onnx(wrapper, (inputs,), str(tmp_path / "fixed.onnx"))
    session, meta = onnx_session(str(tmp_path / "fixed.onnx"), num_threads=1)
    assert meta["fixed_shape"] == [48, 64]
    three = _images(3, 48, 64, seed=8)  # the batch stays dynamic
    with torch.no_grad():
        _assert_same_outputs(run_onnx(session, meta, (three,)), wrapper(three))
    other = _images(1, 64, 80, seed=8)
    with pytest.raises(ValueError, match="fixed 48x64 inputs; the input is 64x80"):
        wrapper(other)
    with pytest.raises(Exception, match="images"):  # onnxruntime: invalid dimensions
        run_onnx(session, meta, (other,))


def test_bad_inputs(model):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        RetinaFaceExport(model).sample_inputs(np.zeros((8, 8), np.uint8))
    wrapper = RetinaFaceExport(model)
    model.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            RetinaFaceExport(model)
        # a model put back into training after the wrapper was made
        with pytest.raises(ValueError, match="training mode"):
            wrapper(_images(1, 32, 32, seed=0))
    finally:
        model.eval()
    backbone_class = type(model.backbone)
    model.backbone.__class__ = type("Divisible", (backbone_class,), {"size_divisibility": 32})
    try:
        with pytest.raises(ValueError, match="MODEL.BACKBONE.NAME.*size_divisibility 32"):
            RetinaFaceExport(model)
    finally:
        model.backbone.__class__ = backbone_class
