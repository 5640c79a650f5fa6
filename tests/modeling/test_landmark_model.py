"""TopDownLandmarkDetector: built from yacs, the coordinate round trip image -> crop -> heatmap
-> crop -> image for every codec convention, both heads overfitting two crops, eval-mode BN,
flip test, empty / invisible / 1x1 inputs, and D2's Visualizer drawing the output."""

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage
from detectron2.utils.visualizer import Visualizer
from PIL import Image

from d2ext import add_d2ext_config
from d2ext.data.mappers import TopDownLandmarkMapper
from d2ext.modeling.common import HeatmapCodec
from d2ext.modeling.hourglass import TopDownLandmarkDetector, heatmap_mse_loss

K = 5
FLIP = [1, 0, 2, 4, 3]
META = "test_landmark_model_meta"


def _register_meta():
    if META not in DatasetCatalog.list():
        DatasetCatalog.register(META, lambda: [])
        MetadataCatalog.get(META).set(
            thing_classes=["face"],
            keypoint_names=("l_eye", "r_eye", "nose", "mouth_r", "mouth_l"),
            keypoint_flip_map=(("l_eye", "r_eye"), ("mouth_l", "mouth_r")),
            keypoint_connection_rules=[("l_eye", "r_eye", (255, 0, 0))],
        )


def _cfg(head="heatmap", crop=32, stacks=2, **landmark):
    _register_meta()
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "TopDownLandmarkDetector"
    cfg.MODEL.BACKBONE.NAME = "StackedHourglass"
    cfg.MODEL.PIXEL_MEAN = [127.5] * 3
    cfg.MODEL.PIXEL_STD = [64.0] * 3
    hg = cfg.MODEL.HOURGLASS
    hg.NUM_STACKS, hg.WIDTH, hg.DEPTH, hg.NUM_KEYPOINTS = stacks, 16, 2, K
    cfg.MODEL.LANDMARK.HEAD = head
    for key, value in landmark.items():
        setattr(cfg.MODEL.LANDMARK, key, value)
    cfg.INPUT.LANDMARK.CROP_SIZE = (crop, crop)
    cfg.INPUT.DATASET_MAPPER_NAME = "TopDownLandmarkMapper"
    cfg.DATASETS.TRAIN = (META,)
    cfg.DATASETS.TEST = (META,)
    return cfg


def _model(*args, **kwargs) -> TopDownLandmarkDetector:
    torch.manual_seed(0)
    return build_model(_cfg(*args, **kwargs))


def _inputs(num=2, crop=32, seed=0, labelled=True, margin=4):
    """Mapper-like inputs with random crops and keypoints at least ``margin`` crop px inside,
    one instance per image."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(num):
        xy = margin + torch.rand(1, K, 2, generator=g) * (crop - 2 * margin)
        v = torch.full((1, K, 1), 2.0 if labelled else 0.0)
        affine = torch.tensor([[[2.0, 0.0, 10.0 * i], [0.0, 2.0, 5.0]]])
        out.append(
            {
                "crops": torch.randint(0, 256, (1, 3, crop, crop), generator=g, dtype=torch.uint8),
                "crop_to_image": affine,
                "boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0]]),
                "height": 100,
                "width": 120,
                "gt_keypoints": torch.cat([xy, v], dim=-1),
            }
        )
    return out


def test_build_and_shapes():
    for head, loss_key in (("heatmap", "loss_heatmap"), ("regression", "loss_keypoint_l1")):
        model = _model(head)
        assert isinstance(model, TopDownLandmarkDetector)
        with EventStorage():
            losses = model(_inputs())
        assert list(losses) == [loss_key] and torch.isfinite(losses[loss_key])
        losses[loss_key].backward()
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad), trainable
        model.eval()
        (out,) = model(_inputs(1))
        inst = out["instances"]
        assert inst.image_size == (100, 120) and len(inst) == 1
        assert inst.pred_keypoints.shape == (1, K, 3) and inst.scores.shape == (1,)
        assert inst.pred_classes.tolist() == [0]
        assert inst.pred_boxes.tensor.tolist() == [[10.0, 10.0, 50.0, 50.0]]
        torch.testing.assert_close(inst.scores, inst.pred_keypoints[..., 2].mean(dim=1))
    # the unused last-stack heatmap predictor is frozen in regression mode only
    assert not _model("regression").backbone.stacks[-1].predictor.weight.requires_grad
    assert _model("heatmap").backbone.stacks[-1].predictor.weight.requires_grad


class _Oracle(torch.nn.Module):
    """A stand-in backbone returning fixed heatmaps, with the real one's shape API."""

    def __init__(self, real, heatmaps):
        super().__init__()
        self.real, self.heatmaps = real, heatmaps
        self.size_divisibility = real.size_divisibility

    def output_shape(self):
        return self.real.output_shape()

    def forward(self, x):
        return {name: self.heatmaps for name in self.real.output_shape()}


@pytest.mark.parametrize(
    "decode, unbiased, bound",
    [
        # princeton: Gaussian at floor(x_hm), decoded at floor(x_hm) + 0.25 (a tie steps -1/4)
        ("princeton", False, 0.75),
        # mmpose: Gaussian at the nearest pixel centre, no step on a symmetric peak
        ("mmpose", False, 0.5),
        # DARK refines where 1 < x < W - 2 (heatmap px): points kept 2 px inside the map. Without
        # the modulation blur the log of a Gaussian is a quadratic, which its Taylor step solves
        # exactly
        ("dark", True, 1e-4),
    ],
)
def test_round_trip_image_crop_heatmap_image(decode, unbiased, bound):
    """GT crop points -> training targets -> decode -> crop -> image: recovered within the
    codec's quantisation (in heatmap pixels, x stride 4 in the crop, x 2 in the image); the
    crop -> image step alone is exact."""
    model = _model(
        DECODE=decode, UNBIASED_ENCODING=unbiased, SIGMA=1.5, BLUR_KERNEL=1, crop=64
    ).eval()
    inputs = _inputs(3, crop=64, margin=10)
    gt = torch.cat([x["gt_keypoints"] for x in inputs])
    targets, weights = model.encode_targets(gt)
    assert targets.shape == (3, K, 16, 16) and weights.min() == 1
    model.backbone = _Oracle(model.backbone, targets)
    points, scores = model.predict(torch.zeros(3, 3, 64, 64))
    error = (points - gt[..., :2]).abs().max().item()
    assert error <= bound * 4 + 1e-4, error
    if decode == "princeton":  # the quantisation is reached: the bound is tight
        assert error > 0.5 * 4
    exact = model.postprocess(inputs, gt[..., :2], torch.ones(3, K))
    for x, out, decoded in zip(inputs, model(inputs), exact):
        a = x["crop_to_image"][0]
        expected = x["gt_keypoints"][0, :, :2] @ a[:, :2].T + a[:, 2]
        torch.testing.assert_close(decoded["instances"].pred_keypoints[0, :, :2], expected)
        found = out["instances"].pred_keypoints[0, :, :2]
        assert (found - expected).abs().max() <= bound * 4 * 2 + 1e-4


def test_round_trip_through_the_mapper(tmp_path):
    """Image keypoints -> TopDownLandmarkMapper crop -> targets -> DARK decode -> the model's
    image keypoints: exact (float32) without the modulation blur."""
    path = str(tmp_path / "a.png")
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(path)
    kps = np.array([[20.3, 25.1], [31.7, 26.0], [26.2, 35.9], [22.0, 40.4], [30.9, 39.7]])
    ann = {
        "bbox": [15, 18, 38, 42],
        "bbox_mode": BoxMode.XYXY_ABS,
        "category_id": 0,
        "keypoints": np.hstack([kps, np.full((K, 1), 2.0)]).ravel().tolist(),
    }
    cfg = _cfg(DECODE="dark", UNBIASED_ENCODING=True, SIGMA=1.5, BLUR_KERNEL=1, crop=64)
    x = TopDownLandmarkMapper(cfg, is_train=False)(
        {"file_name": path, "height": 60, "width": 80, "image_id": 0, "annotations": [ann]}
    )
    model = build_model(cfg).eval()
    model.backbone = _Oracle(model.backbone, model.encode_targets(x["gt_keypoints"])[0])
    found = model([x])[0]["instances"].pred_keypoints[0, :, :2].numpy()
    np.testing.assert_allclose(found, kps, atol=1e-3)


@pytest.mark.parametrize("head", ["heatmap", "regression"])
def test_overfits_two_crops(head):
    model = _model(head, LOSS="mse_weighted")
    inputs = _inputs(2)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    with EventStorage():
        for _ in range(100):
            loss = sum(model(inputs).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append(loss.item())
    assert history[-1] < history[0] / 5, (history[0], history[-1])
    if head == "heatmap":  # better than the all-zero map, not just smaller outputs
        targets, _ = model.encode_targets(torch.cat([x["gt_keypoints"] for x in inputs]))
        assert history[-1] < 2 * targets.square().mean().item() / 5


def test_eval_batchnorm_makes_each_crop_independent_of_the_batch():
    """The original validated with train-mode BN (batch statistics): one crop's output depended
    on the other crops. In eval mode it must not."""
    model = _model()
    a, b = _inputs(2)
    with EventStorage():  # a few steps so the running statistics are not the initial ones
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        for _ in range(3):
            loss = sum(model([a, b]).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    alone = model([a])[0]["instances"].pred_keypoints
    batched = model([a, b])[0]["instances"].pred_keypoints
    torch.testing.assert_close(alone, batched, atol=1e-5, rtol=0)
    crops = model.preprocess([a, b])
    with torch.no_grad():
        eval_maps = model.backbone(crops[:1])["stack1"]
        torch.testing.assert_close(eval_maps, model.backbone(crops)["stack1"][:1])
        model.train()  # in train mode the same crop's maps do depend on the batch
        assert not torch.allclose(
            model.backbone(crops[:1])["stack1"], model.backbone(crops)["stack1"][:1]
        )


class _Asymmetric(_Oracle):
    """Positive stride-4 heatmaps of the input through fixed random channel weights plus a
    fixed random position term: not mirror-equivariant by itself."""

    def __init__(self, real):
        g = torch.Generator().manual_seed(3)
        super().__init__(real, torch.randn(K, 8, 8, generator=g))
        self.weight = torch.randn(K, 3, generator=g)

    def forward(self, x):
        pooled = torch.nn.functional.avg_pool2d(x, 4)
        maps = torch.einsum("kc,nchw->nkhw", self.weight, pooled) + self.heatmaps
        return {name: torch.nn.functional.softplus(maps) for name in self.real.output_shape()}


@pytest.mark.parametrize("head", ["heatmap", "regression"])
def test_flip_test_is_mirror_symmetric(head):
    """With the flip test, a crop and its mirror give mirrored, swapped keypoints (the average
    of a crop's maps and its mirror's flipped-back maps is itself mirror-symmetric); a random
    model without it does not.

    Heatmaps: only the left/right pairs with a positive peak are compared. A self-mirrored
    point's averaged map is symmetric, so its argmax is a tie that both inputs break to the
    left; a map with peak <= 0 decodes to (-1, -1) in either."""
    crops = torch.rand(2, 3, 32, 32) * 4 - 2

    def predict(model, x):
        points, scores = model.predict(x)
        mirrored, mirrored_scores = model.predict(x.flip(-1))
        mirrored = mirrored[:, FLIP]
        mirrored[..., 0] = 32 - mirrored[..., 0]
        keep = (scores > 0) & (mirrored_scores[:, FLIP] > 0)
        if head == "heatmap":
            keep[:, [i for i, j in enumerate(FLIP) if i == j]] = False
        return points[keep], mirrored[keep], keep

    plain = _model(head, DECODE="dark").eval()
    model = _model(head, DECODE="dark", FLIP_TEST=True).eval()
    if head == "heatmap":  # an untrained net's peaks are mostly <= 0: positive, asymmetric maps
        plain.backbone = model.backbone = _Asymmetric(plain.backbone)
    a, b, _ = predict(plain, crops)
    assert (a - b).abs().max() > 0.05
    assert model.flip_test_indices == FLIP
    a, b, keep = predict(model, crops)
    assert keep.sum() >= keep.numel() // 2, keep
    torch.testing.assert_close(a, b, atol=1e-3, rtol=0)


def test_flip_test_needs_flip_metadata():
    cfg = _cfg(FLIP_TEST=True)
    cfg.DATASETS.TEST = ("test_landmark_model_no_meta",)
    DatasetCatalog.register("test_landmark_model_no_meta", lambda: [])
    with pytest.raises(ValueError, match="FLIP_TEST needs the keypoint_names"):
        build_model(cfg)


@pytest.mark.parametrize("head", ["heatmap", "regression"])
def test_invisible_instances_add_nothing_and_never_nan(head):
    model = _model(head).eval()  # eval: per-crop outputs do not depend on the batch
    visible, hidden = _inputs(1, seed=1), _inputs(1, seed=2, labelled=False)
    crops = model.preprocess(visible + hidden)
    (both,) = model.losses(crops, visible + hidden).values()
    (alone,) = model.losses(crops[:1], visible).values()
    # a mean over N*K*...: the hidden instance contributes 0 but counts in N
    torch.testing.assert_close(both, alone / 2)
    model.train()
    model.zero_grad()
    with EventStorage():
        (loss,) = model(_inputs(2, labelled=False)).values()
    assert loss.item() == 0.0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_princeton_loss_is_the_plain_mean_averaged_over_stacks():
    maps = [torch.rand(2, K, 8, 8) for _ in range(3)]
    targets, weights = torch.rand(2, K, 8, 8), torch.zeros(2, K)
    expected = sum(((m - targets) ** 2).mean() for m in maps) / 3
    torch.testing.assert_close(heatmap_mse_loss(maps, targets, weights, "princeton"), expected)
    weights[0, 1] = 1
    expected = sum(((m - targets)[0, 1] ** 2).sum() / (2 * K * 64) for m in maps)
    torch.testing.assert_close(heatmap_mse_loss(maps, targets, weights, "mse_weighted"), expected)
    with pytest.raises(ValueError, match="must be one of"):
        heatmap_mse_loss(maps, targets, weights, "l2")
    model = _model(LOSS="princeton")
    with EventStorage():
        (loss,) = model(_inputs(2, labelled=False)).values()
    assert loss.item() > 0  # no weights: unlabelled points are trained toward empty maps


def test_images_without_instances():
    model = _model()
    empty = {
        "crops": torch.zeros((0, 3, 32, 32), dtype=torch.uint8),
        "crop_to_image": torch.zeros((0, 2, 3)),
        "boxes": torch.zeros((0, 4)),
        "gt_keypoints": torch.zeros((0, 0, 3)),
        "height": 40,
        "width": 50,
    }
    with EventStorage():
        (loss,) = model([empty]).values()
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        (mixed,) = model([empty] + _inputs(2)).values()
        assert torch.isfinite(mixed) and mixed.item() > 0
    model.eval()
    outputs = model([empty] + _inputs(1) + [empty])
    assert [len(o["instances"]) for o in outputs] == [0, 1, 0]
    assert outputs[0]["instances"].pred_keypoints.shape == (0, K, 3)
    assert outputs[0]["instances"].image_size == (40, 50)


def test_one_pixel_box_end_to_end(tmp_path):
    path = str(tmp_path / "a.png")
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(path)
    ann = {
        "bbox": [10, 10, 11, 11],
        "bbox_mode": BoxMode.XYXY_ABS,
        "category_id": 0,
        "keypoints": [10.5, 10.5, 2] * K,
    }
    d = {"file_name": path, "height": 20, "width": 20, "image_id": 0, "annotations": [ann]}
    cfg = _cfg()
    cfg.INPUT.LANDMARK.FLIP_PROB = 0.0
    model = build_model(cfg)
    with EventStorage():
        (loss,) = model([TopDownLandmarkMapper(cfg, is_train=True)(d)]).values()
    assert torch.isfinite(loss)
    model.eval()
    (out,) = model([TopDownLandmarkMapper(cfg, is_train=False)(d)])
    kps = out["instances"].pred_keypoints
    # 1.25 image px across the crop: every decoded point stays within it
    assert torch.isfinite(kps).all() and (kps[0, :, :2] - 10.5).abs().max() <= 0.625


def test_bad_inputs_are_named():
    model = _model()
    with pytest.raises(ValueError, match="has no 'crops'.*TopDownLandmarkMapper"):
        model([{"image": torch.zeros(3, 32, 32), "file_name": "x.png"}])
    bad = _inputs(1)
    bad[0]["crops"] = torch.zeros(1, 3, 48, 48, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"crops must be \(R, C, 32, 32\)"):
        model(bad)
    bad = _inputs(1)
    bad[0]["gt_keypoints"] = torch.zeros(1, K + 1, 3)
    with pytest.raises(ValueError, match="MODEL.HOURGLASS.NUM_KEYPOINTS"):
        model(bad)
    with pytest.raises(ValueError, match="CROP_SIZE"):
        _model(crop=40)
    with pytest.raises(ValueError, match="MODEL.LANDMARK.HEAD"):
        _model("dsnt")
    kwargs = TopDownLandmarkDetector.from_config(_cfg())
    with pytest.raises(ValueError, match="takes no regression_head"):
        TopDownLandmarkDetector(**kwargs, regression_head=torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="HeatmapCodec of heatmap_size"):
        TopDownLandmarkDetector(**{**kwargs, "codec": HeatmapCodec((16, 16), 1.0)})


def test_visualizer_draws_the_predictions():
    """D2's Visualizer draws the output with the dataset's keypoint metadata (names,
    connection rules): pixels change at the predicted points."""
    model = _model().eval()
    inputs = _inputs(1)
    targets, _ = model.encode_targets(inputs[0]["gt_keypoints"])
    model.backbone = _Oracle(model.backbone, targets)  # confident peaks: drawn
    (out,) = model(inputs)
    image = np.zeros((100, 120, 3), np.uint8)
    vis = Visualizer(image, MetadataCatalog.get(META))
    drawn = vis.draw_instance_predictions(out["instances"]).get_image()
    assert drawn.shape == image.shape
    for x, y, score in out["instances"].pred_keypoints[0].tolist():
        assert score > 0.5
        assert drawn[int(y), int(x)].any(), (x, y)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["hourglass_face_synth", "regression_face_synth"])
def test_train_net_two_iterations_and_landmark_eval(tmp_path, config):
    """tools/train_net.py trains the CPU configs on synth_faces crops and evaluates them top-down
    on the annotation boxes with the landmark evaluator (NME, failure rate, AUC)."""
    import json
    import sys

    from tool_runs import TWO_ITERATIONS, run_in_repo

    out = tmp_path / "out"
    log = run_in_repo(
        [
            sys.executable,
            "tools/train_net.py",
            "--config-file",
            f"configs/Hourglass/{config}.yaml",
            *TWO_ITERATIONS,
            "DATASETS.TRAIN",
            "('synth_faces_mini_train',)",
            "DATASETS.TEST",
            "('synth_faces_mini_val',)",
            "D2EXT.VIS_PERIOD_IMAGES",
            "1",
            "OUTPUT_DIR",
            str(out),
        ],
        tmp_path,
    )
    assert (out / "model_final.pth").is_file()
    with open(out / "inference" / "landmark_results.json") as f:
        results = json.load(f)
    # every val face got a prediction (one per annotation box), normalised by the eye corners
    assert results["normalizer"] == "interocular", log[-3000:]
    assert results["results"]["missing"] == 0 and 0 < results["results"]["NME"] < float("inf")
    assert len(list((out / "vis" / "synth_faces_mini_val").glob("*.png"))) == 1


@pytest.mark.slow
def test_train_net_top_down_bodies_get_oks_ap_and_pckh(tmp_path):
    """The MPII-like config on synth_bodies (17 COCO joints, shrunk to a CPU test): evaluated on
    the person boxes with D2's keypoint OKS AP and with PCK / PCKh@0.5 from the head sizes."""
    import json
    import sys

    from tool_runs import TWO_ITERATIONS, run_in_repo

    out = tmp_path / "out"
    small = ["MODEL.HOURGLASS.NUM_STACKS", "1", "MODEL.HOURGLASS.WIDTH", "16"]
    small += ["MODEL.HOURGLASS.DEPTH", "2", "INPUT.LANDMARK.CROP_SIZE", "(64, 64)"]
    small += ["MODEL.DEVICE", "cpu"]
    log = run_in_repo(
        [
            sys.executable,
            "tools/train_net.py",
            "--config-file",
            "configs/Hourglass/hourglass_8x256_mpii.yaml",
            *TWO_ITERATIONS,
            *small,
            "DATASETS.TRAIN",
            "('synth_bodies_mini_train',)",
            "DATASETS.TEST",
            "('synth_bodies_mini_val',)",
            "OUTPUT_DIR",
            str(out),
        ],
        tmp_path,
    )
    assert "copypaste: Task: keypoints" in log, log[-3000:]
    with open(out / "inference" / "landmark_results.json") as f:
        results = json.load(f)
    assert results["normalizer"] == "box_diagonal"
    assert 0.0 <= results["results"]["PCKh@0.5"] <= 100.0
    assert results["results"]["missing"] == 0
