"""``tools/benchmark.py`` and its cases in ``tools/benchmarks/``."""

import os
import subprocess
import sys


def test_benchmark_lists_every_case(repo_root):
    out = subprocess.run(
        [sys.executable, os.path.join(repo_root, "tools", "benchmark.py"), "--list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=repo_root,
    ).stdout
    names = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert {
        "mask_assembly",
        "paste_masks",
        "yolact_e2e",
        "yolact_fast_nms",
        "yolact_edge_video",
        "coco_eval",
        "pq",
        "heatmap_decode",
        "retinaface_vga",
        "densepose_branch",
        "export_onnxruntime",
    } <= names


def test_benchmark_rejects_unknown_case(repo_root):
    proc = subprocess.run(
        [sys.executable, os.path.join(repo_root, "tools", "benchmark.py"), "no_such_case"],
        capture_output=True,
        text=True,
        cwd=repo_root,
    )
    assert proc.returncode == 2
    assert "no_such_case" in proc.stderr
