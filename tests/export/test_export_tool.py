"""tools/export_model.py, ExportedPredictor and demo.py --exported-model, end to end on the
hourglass face model (the cheapest exportable model), and their errors."""

import io
import os
import sys

import cv2
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from tool_runs import run_in_repo

from d2ext import add_d2ext_config
from d2ext.engine import ExportedPredictor, LandmarkPredictor

pytest.importorskip("onnxruntime")

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FACE_CONFIG = os.path.join(REPO, "configs", "Hourglass", "hourglass_face_synth.yaml")
RETINAFACE_CONFIG = os.path.join(REPO, "configs", "RetinaFace", "retinaface_mnet025_640.yaml")
BOXES = [[20.0, 25.0, 100.0, 110.0], [0.0, 0.0, 128.0, 128.0]]
sys.path.insert(0, os.path.join(REPO, "tools"))


def _cfg(path=FACE_CONFIG, weights=""):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = weights
    return cfg


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A face image and the weights of a seeded random face model."""
    from d2ext.data.synthetic.faces import render_face_image

    tmp = tmp_path_factory.mktemp("export_tool")
    scene = render_face_image(7, 0, 128, 128)
    image = str(tmp / "face.png")
    cv2.imwrite(image, cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    torch.manual_seed(0)
    model = build_model(_cfg())
    DetectionCheckpointer(model, save_dir=str(tmp)).save("random")
    return {"dir": tmp, "image": image, "weights": str(tmp / "random.pth")}


@pytest.fixture(scope="module")
def exported(files):
    """tools/export_model.py --format onnx --check, as a user runs it."""
    out = files["dir"] / "onnx"
    log = run_in_repo(
        [
            sys.executable,
            "tools/export_model.py",
            "--config-file",
            FACE_CONFIG,
            "--format",
            "onnx",
            "--output",
            str(out),
            "--sample-image",
            files["image"],
            "--check",
            "MODEL.WEIGHTS",
            files["weights"],
            "MODEL.DEVICE",
            "cpu",
            "OUTPUT_DIR",
            str(out),
        ],
        files["dir"],
    )
    return str(out / "model.onnx"), log


def test_export_tool_checks_its_file(exported):
    path, log = exported
    assert os.path.isfile(path)
    checks = [line for line in log.splitlines() if "max |exported - eager|" in line]
    assert len(checks) == 1 and "keypoints" in checks[0]
    assert float(checks[0].rsplit("=", 1)[1]) < 1e-4


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_predictor_equals_the_eager_one(files, exported, fmt, tmp_path):
    cfg = _cfg(weights=files["weights"])
    if fmt == "onnx":
        path = exported[0]
    else:
        import export_model

        export_model.main(
            ["--config-file", FACE_CONFIG, "--format", "torchscript", "--output", str(tmp_path)]
            + ["--sample-image", files["image"], "MODEL.WEIGHTS", files["weights"]]
            + ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path)]
        )
        path = str(tmp_path / "model.ts")
    image = cv2.imread(files["image"])
    ours = ExportedPredictor(cfg, path)(image, boxes=BOXES)
    eager = LandmarkPredictor(cfg)(image, boxes=BOXES)
    assert ours.image_size == eager.image_size == (128, 128)
    assert torch.equal(ours.pred_boxes.tensor, eager.pred_boxes.tensor)
    assert torch.equal(ours.pred_classes, eager.pred_classes)
    torch.testing.assert_close(ours.pred_keypoints, eager.pred_keypoints, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.scores, eager.scores, atol=1e-5, rtol=0)
    # a grayscale image takes the same path as in the eager predictor
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    torch.testing.assert_close(
        ExportedPredictor(cfg, path)(gray).pred_keypoints,
        LandmarkPredictor(cfg)(gray).pred_keypoints,
        atol=1e-4,
        rtol=0,
    )


def test_demo_runs_the_exported_model(files, exported, tmp_path):
    out = tmp_path / "vis"
    run_in_repo(
        [sys.executable, "tools/demo.py", "--config-file", FACE_CONFIG, "--input", files["image"]]
        + ["--output", str(out), "--box", "20", "25", "100", "110"]
        + ["--exported-model", exported[0], "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path)],
        tmp_path,
    )
    rendered = cv2.imread(str(out / "face.png"))
    assert rendered is not None and rendered.shape == (128, 128, 3)


def test_exported_predictor_refuses_another_models_file(exported):
    with pytest.raises(ValueError, match="'TopDownLandmarkDetector'.*'RetinaFace'"):
        ExportedPredictor(_cfg(RETINAFACE_CONFIG), exported[0])


def test_exported_predictor_refuses_foreign_and_missing_files(tmp_path):
    foreign = tmp_path / "plain.onnx"
    f = io.BytesIO()
    torch.onnx.export(torch.nn.Conv2d(3, 4, 1), (torch.zeros(1, 3, 8, 8),), f, dynamo=False)
    foreign.write_bytes(f.getvalue())
    with pytest.raises(ValueError, match="no 'd2ext' metadata"):
        ExportedPredictor(_cfg(), str(foreign))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ExportedPredictor(_cfg(), str(tmp_path / "missing.onnx"))
    other = tmp_path / "model.bin"
    other.write_bytes(b"\0")
    with pytest.raises(ValueError, match="unknown exported format"):
        ExportedPredictor(_cfg(), str(other))


def test_export_tool_errors(files, tmp_path):
    import export_model

    args = ["--config-file", FACE_CONFIG, "--output", str(tmp_path), "MODEL.DEVICE", "cpu"]
    with pytest.raises(ValueError, match="use --export-method tracing"):
        export_model.main(["--export-method", "scripting"] + args)
    with pytest.raises(FileNotFoundError, match="--sample-image"):
        export_model.main(["--sample-image", str(tmp_path / "none.png")] + args)
    # a meta-architecture without a d2ext export names the ones that have one
    from d2ext.export import build_export_wrapper

    with pytest.raises(ValueError, match="has no d2ext export.*RetinaFace"):
        build_export_wrapper(torch.nn.Conv2d(1, 1, 1).eval())
