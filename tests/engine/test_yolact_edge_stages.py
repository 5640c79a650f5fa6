"""The YolactEdge stage configs on the CPU budget (configs/YolactEdge/yolact_edge_R_18_synth_*)
train 2 iterations each through tools/train_net.py on the mini synthetic videos, each temporal
stage starting from a checkpoint of the previous stage's model: every weight loads, the stage's
losses are logged, and what the stage freezes is left exactly as loaded."""

import json
import sys

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from tool_runs import REPO, TWO_ITERATIONS, run_in_repo

from d2ext import add_d2ext_config

DETECTION = {"loss_box", "loss_cls", "loss_mask", "loss_sem_seg"}
STAGE_LOSSES = {
    "image": DETECTION,
    "flow_gt": {"loss_flow"},
    "flow": {"loss_fm"},
    "joint": DETECTION | {f"{k}_warp" for k in DETECTION} | {"loss_fm"},
}
PREVIOUS_STAGE = {"flow_gt": "image", "flow": "flow_gt", "joint": "flow"}


def config_path(stage):
    return f"configs/YolactEdge/yolact_edge_R_18_synth_{stage}.yaml"


def build_stage_model(stage):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(f"{REPO}/{config_path(stage)}")
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg)


@pytest.mark.parametrize("stage", list(STAGE_LOSSES))
def test_synth_stage_config_trains_two_iterations(tmp_path, stage):
    weights, previous = "", None
    if stage in PREVIOUS_STAGE:  # stands in for the previous stage's model_final.pth
        torch.manual_seed(0)
        previous = build_stage_model(PREVIOUS_STAGE[stage])
        DetectionCheckpointer(previous, save_dir=str(tmp_path)).save("previous")
        weights = str(tmp_path / "previous.pth")
    out = tmp_path / "out"
    log = run_in_repo(
        [
            sys.executable,
            "tools/train_net.py",
            "--config-file",
            config_path(stage),
            *TWO_ITERATIONS,
            "DATASETS.TRAIN",
            "('synth_videos_mini_train',)",
            # the per-frame evaluation is the same plain forward for every stage: run it once
            "DATASETS.TEST",
            "('synth_videos_mini_val',)" if stage == "joint" else "()",
            "MODEL.WEIGHTS",
            weights,
            "OUTPUT_DIR",
            str(out),
        ],
        tmp_path,
    )
    assert (out / "model_final.pth").is_file(), log[-3000:]
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    logged = {k for m in metrics for k in m if k.startswith("loss_")}
    # D2 logs the parts of a loss dict only when it has more than one
    losses = STAGE_LOSSES[stage]
    assert logged == (losses if len(losses) > 1 else set()), log[-3000:]
    totals = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert totals and all(t > 0 for t in totals), log[-3000:]
    if stage == "joint":
        assert "Evaluation results for segm" in log, log[-3000:]
    if previous is None:
        return
    # D2's checkpointer names any key it could not match in either direction
    assert "not found in the checkpoint" not in log and "not used by the model" not in log
    trained = build_stage_model(stage)
    DetectionCheckpointer(trained).load(str(out / "model_final.pth"))
    before = dict(previous.named_parameters())
    changed = {n for n, p in trained.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= {n for n, p in trained.named_parameters() if p.requires_grad}
    # frozen BN statistics too (the ResNet's, in eval mode in every temporal stage)
    assert all(
        torch.equal(v, previous.state_dict()[k])
        for k, v in trained.state_dict().items()
        if k.startswith("backbone.bottom_up.") and "running_" in k
    )
