"""tools/demo.py with RetinaFace: a WIDER-style folder of event subfolders is read recursively,
faces and their five landmarks are drawn, same-named images of two events both survive, and an
image-less folder is a clear error."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from tool_runs import REPO, run_in_repo

CONFIG = "configs/RetinaFace/retinaface_mnet025_synth.yaml"


def _demo(inputs, out, tmp_path, check=True):
    cmd = [sys.executable, "tools/demo.py", "--config-file", CONFIG, "--input", *inputs]
    cmd += ["--output", str(out), "--confidence-threshold", "0.0"]
    cmd += ["MODEL.WEIGHTS", "", "OUTPUT_DIR", str(tmp_path / "run")]
    if check:
        return run_in_repo(cmd, tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_demo_on_a_wider_style_folder(tmp_path):
    images = tmp_path / "images"
    rng = np.random.default_rng(0)
    for event in ("0--Parade", "1--Handshaking"):
        (images / event).mkdir(parents=True)
        cv2.imwrite(
            str(images / event / "1.jpg"), rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        )
    out = tmp_path / "vis"
    log = _demo([str(images)], out, tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["0--Parade_1.png", "1--Handshaking_1.png"]
    # random weights: every kept anchor is drawn at threshold 0, with its landmarks
    assert log.count(" instances, ") == 2, log[-2000:]
    assert cv2.imread(str(out / "0--Parade_1.png")).shape == (96, 128, 3)

    (tmp_path / "empty").mkdir()
    proc = _demo([str(tmp_path / "empty")], out, tmp_path, check=False)
    assert proc.returncode != 0 and "no images" in proc.stderr and "empty" in proc.stderr
