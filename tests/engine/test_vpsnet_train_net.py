"""configs/VPSNet/vpsnet_R_18_synth.yaml end to end through tools/train_net.py: 2 training
iterations on frame pairs of the synthetic panoptic videos (Cityscapes-VPS layout, loaded by the
``cityscapes_vps`` loader), then VPQ of the per-frame outputs with their track ids."""

import json
import sys

from tool_runs import TWO_ITERATIONS, run_in_repo

UPSNET_LOSSES = {"loss_sem_seg", "loss_panoptic", "loss_cls", "loss_box_reg", "loss_mask"}


def test_vpsnet_trains_and_is_evaluated_with_vpq(tmp_path):
    out = tmp_path / "out"
    log = run_in_repo(
        [
            sys.executable,
            "tools/train_net.py",
            "--config-file",
            "configs/VPSNet/vpsnet_R_18_synth.yaml",
            *TWO_ITERATIONS,
            # the small split for both: the pair mapper, the video state and VPQ all run
            "DATASETS.TRAIN",
            "('synth_vps_val',)",
            "OUTPUT_DIR",
            str(out),
        ],
        tmp_path,
    )
    assert (out / "model_final.pth").is_file(), log[-3000:]
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    logged = {k for m in metrics for k in m if k.startswith("loss_")}
    assert UPSNET_LOSSES | {"loss_match"} <= logged, logged
    assert "VPQ over 8 videos" in log, log[-3000:]
    csv = log.split("copypaste: Task: vpq")[1].splitlines()
    header = csv[1].split("copypaste: ")[1].split(",")
    values = [float(v) for v in csv[2].split("copypaste: ")[1].split(",")]
    assert header[:3] == ["VPQ", "VPQ_th", "VPQ_st"] and header[-1] == "ID_switches"
    assert all(0.0 <= v <= 100.0 for v in values[:-1]) and values[-1] >= 0, values
