"""tools/demo.py --video with the tiny YOLACT (random weights): a 6-frame mp4 written here from
synthetic frames comes out as an mp4 of the same frame count and size, with a line per frame;
a one-frame video works; a missing file, a corrupt file and videos without frames are clear
errors."""

import argparse
import importlib.util
import logging
import os
import re
import sys

import cv2
import numpy as np
import pytest
from tool_runs import REPO, run_in_repo
from yolact_tiny import tiny_cfg

H, W = 48, 64


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("demo", os.path.join(REPO, "tools", "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_video(path, n, fourcc="mp4v"):
    """``n`` synthetic frames: a bright square moving right over a gradient background."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (W, H))
    assert writer.isOpened()
    background = np.tile(np.linspace(0, 120, W, dtype=np.uint8)[None, :, None], (H, 1, 3))
    for k in range(n):
        frame = background.copy()
        frame[10:30, 4 + 5 * k : 24 + 5 * k] = (40, 200, 240)
        writer.write(frame)
    writer.release()
    return str(path)


def _read_video(path):
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def _cfg(tmp_path):
    cfg = tiny_cfg(DETECTIONS_PER_IMAGE=5)  # D2's Visualizer takes ~10 ms per drawn instance
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.OUTPUT_DIR = str(tmp_path / "run")
    return cfg


def _args(video, output, **kwargs):
    args = dict(video=video, output=str(output), confidence_threshold=0.05, iuv=False)
    args.update(box=None, exported_model=None)
    args.update(kwargs)
    return argparse.Namespace(**args)


def test_video_demo_writes_mp4(tmp_path):
    config = tmp_path / "yolact_tiny.yaml"
    config.write_text(_cfg(tmp_path).dump())
    video = _write_video(tmp_path / "in.mp4", 6)
    out = tmp_path / "vis" / "out.mp4"  # the folder is created
    cmd = [sys.executable, "tools/demo.py", "--config-file", str(config), "--video", video]
    cmd += ["--output", str(out), "--confidence-threshold", "0.05"]
    log = run_in_repo(cmd, tmp_path)
    lines = re.findall(r"frame (\d+): (\d+) instances, (\d+) drawn, [\d.]+ ms \([\d.]+ fps\)", log)
    assert [int(m[0]) for m in lines] == list(range(6)), log[-3000:]
    # random weights: the top 5 scores are above the 0.05 threshold
    assert all(m[1:] == ("5", "5") for m in lines), log[-3000:]
    assert re.search(r"6 frames -> .*out\.mp4; model \+ tracking [\d.]+ ms/frame", log), log[-3000:]
    assert "6/6" in log  # the progress bar's end
    frames = _read_video(out)
    assert len(frames) == 6 and all(f.shape == (H, W, 3) for f in frames)
    assert any(not np.array_equal(a, b) for a, b in zip(frames, _read_video(video)))


def test_one_frame_video(demo, tmp_path, capsys):
    video = _write_video(tmp_path / "one.mp4", 1)
    out = tmp_path / "one_out.mp4"
    assert demo._demo_video(_args(video, out), _cfg(tmp_path), logging.getLogger("test")) == 0
    frames = _read_video(out)
    assert len(frames) == 1 and frames[0].shape == (H, W, 3)
    assert "frame 0: " in capsys.readouterr().out


def test_bad_videos(demo, tmp_path):
    cfg, logger = _cfg(tmp_path), logging.getLogger("test")
    out = tmp_path / "out.mp4"
    with pytest.raises(FileNotFoundError, match="--video .*missing.mp4' does not exist"):
        demo._demo_video(_args(str(tmp_path / "missing.mp4"), out), cfg, logger)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="corrupt.mp4'.*OpenCV cannot open it"):
        demo._demo_video(_args(str(corrupt), out), cfg, logger)
    # OpenCV's mp4 without frames has no video track at all: it cannot be opened either
    empty_mp4 = _write_video(tmp_path / "empty.mp4", 0)
    with pytest.raises(ValueError, match="empty.mp4'.*an mp4 written without any frame"):
        demo._demo_video(_args(empty_mp4, out), cfg, logger)
    # an AVI without frames opens and yields none
    empty_avi = _write_video(tmp_path / "empty.avi", 0, fourcc="MJPG")
    with pytest.raises(ValueError, match="empty.avi' has no frame OpenCV can read"):
        demo._demo_video(_args(empty_avi, out), cfg, logger)
    assert not out.exists()

    video = _write_video(tmp_path / "in.mp4", 1)
    with pytest.raises(ValueError, match="--output must end in .mp4"):
        demo._demo_video(_args(video, tmp_path), cfg, logger)
    with pytest.raises(ValueError, match="does not combine with --exported-model, --iuv"):
        demo._demo_video(_args(video, out, iuv=True), cfg, logger)


def test_track_colors_follow_the_track_id():
    """The demo's colours: one per track id (D2's colormap), whatever the instances' order."""
    import torch
    from detectron2.data import MetadataCatalog
    from detectron2.structures import Boxes, Instances

    from d2ext.utils.visualize import draw_predictions, track_colors

    masks = torch.zeros((2, H, W), dtype=torch.bool)
    masks[0, 2:46, 2:30] = True
    masks[1, 2:46, 34:62] = True
    boxes = torch.tensor([[2.0, 2, 30, 46], [34, 2, 62, 46]])
    # interiors away from the outlines and from the labels (drawn at the boxes' top-left)
    interiors = [(slice(30, 34), slice(14, 18)), (slice(30, 34), slice(46, 50))]
    image = np.full((H, W, 3), 128, dtype=np.uint8)
    metadata = MetadataCatalog.get("__test_track_colors")

    def render(order, ids):
        """Mask k has track id ids[k]; the instances listed in ``order``."""
        inst = Instances((H, W), pred_masks=masks[order], scores=torch.tensor([0.9, 0.8]))
        inst.pred_boxes = Boxes(boxes[order])
        inst.pred_classes = torch.zeros(2, dtype=torch.int64)
        inst.pred_track_ids = torch.tensor(ids)[order]
        rendered = draw_predictions(image, {"instances": inst}, metadata, 0.5, track_colors)
        return [rendered[r] for r in interiors]

    first = render([0, 1], [3, 7])
    assert all(np.array_equal(a, b) for a, b in zip(first, render([1, 0], [3, 7])))
    swapped = render([0, 1], [7, 3])
    assert np.array_equal(first[0], swapped[1]) and not np.array_equal(first[0], first[1])
    assert np.array_equal(first[0], render([0, 1], [3 + 74, 7])[0])  # the palette cycles
