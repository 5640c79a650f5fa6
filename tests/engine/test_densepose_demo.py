"""tools/demo.py --iuv with the DensePose R-18 synthetic config: the rendering, the whole-image
IUV PNG (image-sized, part labels 0..24) and one IUV PNG per detection are written; --iuv with a
model without DensePose outputs is a clear error."""

import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
from tool_runs import REPO, run_in_repo

CONFIG = "configs/DensePose/densepose_rcnn_R_18_FPN_synth.yaml"
SIZES = {"a": (96, 128), "b": (120, 80)}  # stem -> (height, width)


def _demo(config, inputs, out, tmp_path, check=True):
    cmd = [sys.executable, "tools/demo.py", "--config-file", config, "--input", *inputs]
    cmd += ["--output", str(out), "--confidence-threshold", "0", "--iuv"]
    cmd += ["MODEL.WEIGHTS", "", "OUTPUT_DIR", str(tmp_path / "run")]
    if check:
        return run_in_repo(cmd, tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_demo_writes_iuv_pngs(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for stem, (h, w) in SIZES.items():
        cv2.imwrite(str(images / f"{stem}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    out = tmp_path / "vis"
    log = _demo(CONFIG, [str(images)], out, tmp_path)
    # random weights: the box classifier scores ~0.5, above the 0.05 test threshold
    drawn = {
        m[0]: int(m[1]) for m in re.findall(r"images/(\w+)\.png: \d+ instances, (\d+) drawn", log)
    }
    assert sorted(drawn) == sorted(SIZES) and min(drawn.values()) > 0, log[-2000:]
    for stem, (h, w) in SIZES.items():
        assert cv2.imread(str(out / f"{stem}.png")).shape == (h, w, 3)
        iuv = cv2.imread(str(out / f"{stem}_iuv.png"), cv2.IMREAD_UNCHANGED)
        assert iuv.shape == (h, w, 3) and iuv.dtype == np.uint8
        assert iuv[:, :, 0].max() <= 24
        # one box-sized PNG per drawn detection, <stem>_iuv_0.png ... <stem>_iuv_<n-1>.png
        per_detection = {p.name for p in out.glob(f"{stem}_iuv_*.png")}
        assert per_detection == {f"{stem}_iuv_{k}.png" for k in range(drawn[stem])}
        crop = cv2.imread(str(out / f"{stem}_iuv_0.png"), cv2.IMREAD_UNCHANGED)
        assert crop.ndim == 3 and crop.shape[2] == 3 and crop[:, :, 0].max() <= 24

    proc = _demo(
        "configs/RetinaFace/retinaface_mnet025_synth.yaml",
        [str(images / "a.png")],
        tmp_path / "vis_retinaface",
        tmp_path,
        check=False,
    )
    assert proc.returncode != 0 and "--iuv" in proc.stderr, proc.stderr[-2000:]
