"""LandmarkExport (TopDownLandmarkDetector): the export graph equals the eager model for every
decode convention, the flip test and the regression head; TorchScript and ONNX (onnxruntime)
reproduce it at another number of crops than traced; bad inputs are named."""

import functools

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage

from d2ext import add_d2ext_config
from d2ext.data.mappers import TopDownLandmarkMapper
from d2ext.export import (
    export_onnx,
    export_torchscript,
    load_torchscript,
    onnx_session,
    read_onnx_metadata,
    run_onnx,
    run_torchscript,
)
from d2ext.export.landmark import LandmarkExport
from d2ext.modeling.common import HeatmapCodec

K = 5
META = "test_landmark_export_meta"
CROP = (32, 48)  # (h, w): not square, so x/y or h/w mix-ups show
# (head, MODEL.LANDMARK overrides): every decode convention, the flip test of both heads
CONFIGS = {
    "princeton": ("heatmap", {"DECODE": "princeton"}),
    "mmpose": ("heatmap", {"DECODE": "mmpose"}),
    "dark": ("heatmap", {"DECODE": "dark", "UNBIASED_ENCODING": True, "BLUR_KERNEL": 5}),
    "princeton_flip": ("heatmap", {"DECODE": "princeton", "FLIP_TEST": True}),
    "dark_flip_shift": ("heatmap", {"DECODE": "dark", "FLIP_TEST": True, "FLIP_SHIFT": True}),
    "regression": ("regression", {}),
    "regression_flip": ("regression", {"FLIP_TEST": True}),
}


def _build(name: str):
    """A tiny eval-mode model of ``CONFIGS[name]`` with perturbed BN statistics (eval BN is no
    identity) and, for the regression head, perturbed FC weights."""
    head, landmark = CONFIGS[name]
    if META not in DatasetCatalog.list():
        DatasetCatalog.register(META, lambda: [])
        MetadataCatalog.get(META).set(
            keypoint_names=("l_eye", "r_eye", "nose", "mouth_r", "mouth_l"),
            keypoint_flip_map=(("l_eye", "r_eye"), ("mouth_l", "mouth_r")),
        )
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "TopDownLandmarkDetector"
    cfg.MODEL.BACKBONE.NAME = "StackedHourglass"
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [110.0, 120.0, 130.0], [60.0, 64.0, 70.0]
    hg = cfg.MODEL.HOURGLASS
    hg.NUM_STACKS, hg.WIDTH, hg.DEPTH, hg.NUM_KEYPOINTS = 2, 16, 2, K
    cfg.MODEL.LANDMARK.HEAD = head
    for key, value in landmark.items():
        setattr(cfg.MODEL.LANDMARK, key, value)
    cfg.INPUT.LANDMARK.CROP_SIZE = CROP
    cfg.INPUT.DATASET_MAPPER_NAME = "TopDownLandmarkMapper"
    cfg.DATASETS.TRAIN = cfg.DATASETS.TEST = (META,)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.1, generator=g)
        if head == "regression":  # the head starts at the crop centre with 0.001 weights
            model.regression_head.fc.weight.normal_(0.0, 0.05, generator=g)
    return cfg, model


@functools.lru_cache(maxsize=None)
def _model(name: str):
    """:func:`_build`, its heatmap head briefly trained toward interior points (an untrained
    net peaks on the map border, where no sub-pixel step applies), then the nose's maps pushed
    below 0 (an absent landmark: princeton's NMS path, mmpose/DARK's (-1, -1)). Shared by the
    tests: use it read-only."""
    cfg, model = _build(name)
    if CONFIGS[name][0] == "heatmap":
        records = _mapped(cfg)
        g = torch.Generator().manual_seed(5)
        for x in records:
            xy = 6 + torch.rand(len(x["crops"]), K, 2, generator=g) * torch.tensor([36.0, 20.0])
            x["gt_keypoints"] = torch.cat([xy, torch.full_like(xy[..., :1], 2.0)], dim=-1)
        model.train()
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 5e-3)
        with EventStorage():
            for _ in range(40):
                loss = sum(model(records).values())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            model.backbone.stacks[-1].predictor.bias[2] -= 5.0
    return cfg, model


def _mapped(cfg):
    """Two images through the test-time mapper: 2 and 1 boxes (R = 3 crops)."""
    mapper = TopDownLandmarkMapper(cfg, is_train=False)
    rng = np.random.default_rng(0)
    records = []
    for size, boxes in (
        ((50, 70), [[5, 8, 40, 45], [30, 2, 66, 30]]),
        ((44, 36), [[3, 4, 30, 40]]),
    ):
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        annotations = [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0} for b in boxes]
        record = {"image": image, "height": size[0], "width": size[1], "image_id": 0}
        records.append(mapper({**record, "annotations": annotations}))
    return records


def _graph_inputs(records):
    crops = torch.cat([x["crops"] for x in records]).float()
    return crops, torch.cat([x["crop_to_image"] for x in records])


def _eager(wrapper, inputs):
    with torch.no_grad():
        return wrapper(*inputs)


def _assert_same_instances(found, expected, atol=0.0):
    assert found.image_size == expected.image_size
    assert found.get_fields().keys() == expected.get_fields().keys()
    for name in ("pred_keypoints", "scores"):
        a, b = found.get(name), expected.get(name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        torch.testing.assert_close(a, b, atol=atol, rtol=0)
    assert torch.equal(found.pred_boxes.tensor, expected.pred_boxes.tensor)
    assert found.pred_classes.dtype == torch.int64
    assert torch.equal(found.pred_classes, expected.pred_classes)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_wrapper_equals_the_eager_model(name):
    """The graph's keypoints are the eager model's, bit for bit (the same tensor operations),
    and outputs_to_instances rebuilds its Instances (two images, 2 + 1 boxes)."""
    cfg, model = _model(name)
    records = _mapped(cfg)
    with torch.no_grad():
        expected = [r["instances"] for r in model(records)]
    wrapper = LandmarkExport(model, raw_outputs=True, input_format=cfg.INPUT.FORMAT)
    outputs = _eager(wrapper, _graph_inputs(records))
    assert tuple(outputs) == wrapper.output_names
    found = wrapper.outputs_to_instances(
        outputs, [(50, 70), (44, 36)], wrapper.metadata(), boxes=[x["boxes"] for x in records]
    )
    for f, e in zip(found, expected):
        _assert_same_instances(f, e)
    scores = outputs["keypoints"][..., 2]
    if CONFIGS[name][0] == "heatmap":
        raw = outputs["raw_heatmaps"]
        assert raw.shape == (3, K, CROP[0] // 4, CROP[1] // 4)
        # both kinds of peaks are decoded: positive (stepped) and the nose's <= 0 (princeton's
        # NMS path, mmpose/DARK's (-1, -1))
        assert (scores[:, 2] <= 0).all() and (scores > 0).sum() >= 2 * len(scores), scores
        if "dark" in name:  # the Taylor step moved some points off the quarter-pixel grid
            coords, _ = model.codec.decode(raw)
            assert ((coords * 4) % 1).abs().max() > 0.01
    else:
        assert outputs["raw_coords"].shape == (3, K, 2) and scores.eq(1).all()
        assert outputs["raw_coords"].std() > 0.02  # perturbed: not the crop centre everywhere


@pytest.mark.parametrize("name", ["princeton_flip", "dark_flip_shift", "regression_flip"])
def test_torchscript_equals_the_wrapper(tmp_path, name):
    """Traced on 2 whole-image crops, run on the mapper's 3."""
    cfg, model = _model(name)
    wrapper = LandmarkExport(model, raw_outputs=True)
    image = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    path = str(tmp_path / "landmark.ts")
    export_torchscript(wrapper, wrapper.sample_inputs(image, batch_size=2), path)
    module, meta = load_torchscript(path)
    assert meta == wrapper.metadata()
    inputs = _graph_inputs(_mapped(cfg))
    found, expected = run_torchscript(module, meta, inputs), _eager(wrapper, inputs)
    assert found.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(found[key], expected[key], atol=1e-5, rtol=0)


def _dark_steps(codec: HeatmapCodec, heatmaps: torch.Tensor) -> torch.Tensor:
    """(R, K) length of DARK's Taylor step from the argmax, in heatmap pixels (0 for maps with
    max <= 0: no step, (-1, -1))."""
    width = heatmaps.shape[-1]
    peak, index = heatmaps.flatten(2).max(-1)
    argmax = torch.stack([index % width, index // width], dim=-1)
    coords, _ = codec.decode(heatmaps)
    return torch.where(peak > 0, (coords - argmax).norm(dim=-1), torch.zeros_like(peak))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_onnx_equals_the_wrapper(tmp_path, name):
    """onnxruntime on the mapper's 3 crops of an export traced on 2: raw outputs <= 1e-4; the
    keypoints <= 1e-4 image px of the wrapper's, and of the wrapper's decoding of the graph's
    own raw outputs; the same Instances.

    DARK's exception: its Taylor step divides by the Hessian's determinant. Where the step stays
    within a pixel (a peak the quadratic model fits) it agrees to <= 1e-4; where it jumps further
    (a weak, flat maximum of this barely trained net: a near-singular Hessian) the ~1e-7
    differences of two CPU runtimes' sums grow to ~1e-3 image px, so <= 1e-2 there."""
    cfg, model = _model(name)
    wrapper = LandmarkExport(model, raw_outputs=True)
    image = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    path = export_onnx(wrapper, wrapper.sample_inputs(image, 2), str(tmp_path / "landmark.onnx"))
    # torch.onnx.export restores the traced module's mode: the model must still be in eval
    assert not model.training and not wrapper.training
    session, meta = onnx_session(path, num_threads=1)
    assert meta == wrapper.metadata() == read_onnx_metadata(path)
    records = _mapped(cfg)
    inputs = _graph_inputs(records)
    found, expected = run_onnx(session, meta, inputs), _eager(wrapper, inputs)
    assert list(found) == list(expected)
    raw_name = wrapper.output_names[1]
    np.testing.assert_allclose(found[raw_name], expected[raw_name].numpy(), atol=1e-4, rtol=0)
    with torch.no_grad():
        decoded = wrapper.decode(torch.from_numpy(found[raw_name]), inputs[1]).numpy()
    good, atol = np.ones(found["keypoints"].shape[:2], bool), 1e-4
    if "dark" in name:
        steps = _dark_steps(model.codec, expected[raw_name]).numpy()
        good, atol = steps <= 1.0, 1e-2
        assert (good & (steps > 0.1)).any(), steps  # refined points among the compared
    for reference in (expected["keypoints"].numpy(), decoded):
        np.testing.assert_allclose(found["keypoints"][good], reference[good], atol=1e-4, rtol=0)
        np.testing.assert_allclose(found["keypoints"], reference, atol=atol, rtol=0)
    sizes, boxes = [(50, 70), (44, 36)], [x["boxes"] for x in records]
    onnx_instances = LandmarkExport.outputs_to_instances(found, sizes, meta, boxes=boxes)
    for f, e in zip(onnx_instances, wrapper.outputs_to_instances(expected, sizes, meta, boxes)):
        _assert_same_instances(f, e, atol=atol)


def test_traced_princeton_decode_is_not_frozen_to_the_trace_inputs():
    """princeton's NMS only matters for maps whose max is <= 0; eagerly it runs on those only
    (a data-dependent branch). Traced on maps that are all positive, or all negative, the
    graph decodes a mix exactly as eager."""
    codec = HeatmapCodec((8, 12), 1.0, decode="princeton")
    g = torch.Generator().manual_seed(0)
    mixed = torch.randn(3, K, 8, 12, generator=g)
    mixed[0] -= 5.0  # every map of crop 0 <= 0: the NMS path
    mixed[1, :, 2, 3] = 9.0  # crop 1 positive everywhere
    low = mixed.flatten(2).amax(-1) <= 0
    assert low.any() and (~low).any()
    expected = codec.decode(mixed)
    for trace_maps in (torch.rand(2, K, 8, 12) + 0.1, -torch.rand(2, K, 8, 12) - 0.1):
        traced = torch.jit.trace(lambda m: codec.decode(m), trace_maps, check_trace=False)
        for a, b in zip(traced(mixed), expected):
            assert torch.equal(a, b)


def test_sample_inputs_outputs_to_instances_and_metadata():
    cfg, model = _model("mmpose")
    wrapper = LandmarkExport(model, fixed_shape=CROP, input_format="RGB")
    image = np.random.default_rng(2).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    crops, affine = wrapper.sample_inputs(image, batch_size=3)
    assert crops.shape == (3, 3, *CROP) and crops.dtype == torch.float32
    assert affine.shape == (3, 2, 3) and affine.dtype == torch.float32
    assert torch.equal(crops[0], crops[2])
    # the crop's corners (0, 0) and (w, h) land on the image's (0, 0) and (W, H)
    corners = torch.tensor([[0.0, 0.0, 1.0], [CROP[1], CROP[0], 1.0]])
    torch.testing.assert_close(corners @ affine[0].T, torch.tensor([[0.0, 0.0], [60.0, 40.0]]))
    # the same crops through the eager model (whole-image boxes) give the same Instances
    record = {"crops": crops.to(torch.uint8), "crop_to_image": affine, "height": 40, "width": 60}
    record["boxes"] = torch.tensor([[0.0, 0.0, 60.0, 40.0]]).repeat(3, 1)
    with torch.no_grad():
        (expected,) = [r["instances"] for r in model([record])]
    outputs = _eager(wrapper, (crops, affine))
    assert list(outputs) == ["keypoints"]
    (found,) = wrapper.outputs_to_instances(outputs, [(40, 60)], wrapper.metadata())
    _assert_same_instances(found, expected)
    meta = wrapper.metadata()
    assert meta["model_name"] == "TopDownLandmarkDetector"
    assert meta["input_names"] == ["crops", "crop_to_image"]
    assert meta["output_names"] == ["keypoints"]
    assert meta["crop_size"] == meta["fixed_shape"] == list(CROP)
    assert (meta["num_keypoints"], meta["head"], meta["input_format"]) == (K, "heatmap", "RGB")
    assert (meta["decode"], meta["flip_test"]) == ("mmpose", False)
    assert wrapper.dynamic_axes() == {
        "crops": {0: "num_crops"},
        "crop_to_image": {0: "num_crops"},
        "keypoints": {0: "num_crops"},
    }
    regression = LandmarkExport(_model("regression_flip")[1], raw_outputs=True).metadata()
    assert (regression["decode"], regression["head"], regression["flip_test"]) == (
        None,
        "regression",
        True,
    )
    assert regression["output_names"] == ["keypoints", "raw_coords"]


def test_bad_inputs_are_named(tmp_path):
    cfg, model = _build("princeton")
    wrapper = LandmarkExport(model)
    crops, affine = wrapper.sample_inputs(np.zeros((20, 30, 3), np.uint8), batch_size=2)
    wrong = torch.zeros(2, 3, 48, 48)
    with pytest.raises(ValueError, match=r"crops are 48x48.*32x48 crops.*INPUT.LANDMARK.CROP_SIZE"):
        wrapper(wrong, affine)
    path = export_onnx(wrapper, (crops, affine), str(tmp_path / "landmark.onnx"))
    session, meta = onnx_session(path, num_threads=1)
    with pytest.raises(Exception, match="(?s)invalid dimensions for input: crops.*Got: 48"):
        run_onnx(session, meta, (wrong, affine))
    with pytest.raises(ValueError, match=r"INPUT.LANDMARK.CROP_SIZE \(32, 48\).*fixed_shape"):
        LandmarkExport(model, fixed_shape=(64, 64))
    with pytest.raises(ValueError, match=r"crops must be \(R, 3, h, w\)"):
        wrapper(crops[:, :1], affine)
    with pytest.raises(ValueError, match=r"crop_to_image must be \(R, 2, 3\) = \(2, 2, 3\)"):
        wrapper(crops, affine[:1])
    with pytest.raises(ValueError, match="exports a TopDownLandmarkDetector"):
        LandmarkExport(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="eval mode"):
        LandmarkExport(model.train())
    model.eval()
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        wrapper.sample_inputs(np.zeros((20, 30), np.uint8))
    outputs = _eager(wrapper, (crops, affine))
    with pytest.raises(ValueError, match=r"boxes count \[1\] \(sum 1\) differs.*2 crops"):
        wrapper.outputs_to_instances(outputs, [(20, 30)], meta, boxes=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="boxes=None.*covers one image"):
        wrapper.outputs_to_instances(outputs, [(20, 30), (20, 30)], meta)
