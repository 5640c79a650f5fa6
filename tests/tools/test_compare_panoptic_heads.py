"""``tools/compare_panoptic_heads.py``: D2's Panoptic FPN combination of a UPSNet output gives
UPSNet's category ids, and the tool evaluates both combinations of one checkpoint."""

import importlib
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from detectron2.structures import Boxes, Instances
from tool_runs import REPO, run_in_repo

from d2ext.data.panoptic_label_space import PanopticLabelSpace


@pytest.fixture
def tool(repo_root, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(repo_root, "tools"))
    return importlib.import_module("compare_panoptic_heads")


def _logits(labels: torch.Tensor, channels: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, channels).permute(2, 0, 1).float()


@pytest.mark.parametrize("stuff_area_limit", [8, 9])
def test_d2_combination_ids(tool, stuff_area_limit):
    # 2 stuff + 2 things; output channel k is internal channel order[k] and contiguous id k
    order = torch.tensor([2, 0, 3, 1])
    space = PanopticLabelSpace(thing_ids=(0, 2), stuff_ids=(1, 3))
    sem = torch.tensor([[1] * 6, [1] * 6, [3, 3, 3, 3, 2, 2], [3, 3, 3, 3, 2, 2]])  # output ids
    masks = torch.zeros((2, 4, 6), dtype=torch.bool)
    masks[0, :2, :2] = True  # thing class 1, kept
    masks[1, 2:, :2] = True  # below the score threshold
    inst = Instances(
        (4, 6),
        pred_boxes=Boxes(torch.zeros((2, 4))),
        scores=torch.tensor([0.75, 0.25]),
        pred_classes=torch.tensor([1, 0]),
        pred_masks=masks,
    )
    pan, segs = tool.d2_combination(inst, _logits(sem, 4), space, order, 0.5, stuff_area_limit, 0.5)
    thing = [{"id": 1, "isthing": True, "category_id": 2, "score": 0.75, "instance_id": 0}]
    if stuff_area_limit == 9:  # both stuff regions have 8 pixels: void
        assert segs == thing
        assert pan.tolist() == (masks[0].int()).tolist()
        return
    assert segs == thing + [
        {"id": 2, "isthing": False, "category_id": 1, "area": 8},
        {"id": 3, "isthing": False, "category_id": 3, "area": 8},
    ]
    assert pan.tolist() == [
        [1, 1, 2, 2, 2, 2],
        [1, 1, 2, 2, 2, 2],
        [3, 3, 3, 3, 0, 0],  # the semantic head's thing pixels without an instance stay void
        [3, 3, 3, 3, 0, 0],
    ]


def test_tool_runs_and_rejects_other_models(tmp_path):
    out = tmp_path / "pq.json"
    run_in_repo(
        [
            sys.executable,
            "tools/compare_panoptic_heads.py",
            "--config-file",
            "configs/UPSNet/upsnet_R_18_synth.yaml",
            "--dataset",
            "synth_panoptic_mini_val",
            "--output",
            str(out),
            "MODEL.WEIGHTS",
            "",
        ],
        tmp_path,
    )
    res = json.loads(out.read_text())
    assert set(res) == {"upsnet_head", "d2_combination"}
    for pq in res.values():
        assert set(pq) >= {"PQ", "PQ_th", "PQ_st"}
        assert all(math.isfinite(v) and 0 <= v <= 100 for v in pq.values())
    proc = subprocess.run(
        [
            sys.executable,
            "tools/compare_panoptic_heads.py",
            "--config-file",
            "configs/Base/mask_rcnn_R_18_FPN_synth.yaml",
            "MODEL.WEIGHTS",
            "",
        ],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "has no UPSNet panoptic head" in proc.stderr
