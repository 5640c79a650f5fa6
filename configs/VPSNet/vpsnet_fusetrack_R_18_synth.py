"""LazyConfig twin of vpsnet_fusetrack_R_18_synth.yaml: VPSNet's second stage, the track head
added to the stage-one model of vpsnet_fuse_R_18_synth.py (whose checkpoint holds the Fuse
module and the RAFT-small weights), lr 0.001."""

from detectron2.config import LazyCall as L

from d2ext.modeling.common import RAFTFlow

from ..common.synth_schedule import finetune_schedule as _finetune_schedule
from .vpsnet_R_18_synth import dataloader, lr_multiplier, model, optimizer, train

model.flow_net = L(RAFTFlow)(input_format="BGR", num_flow_updates=12, weights="")

_finetune_schedule(
    train, optimizer, lr_multiplier,
    # stage one's checkpoint (either twin's: the same state dict)
    init_checkpoint="output/vpsnet_fuse_R_18_synth/model_final.pth",
    lr=0.001, max_iter=120, step=100, warmup=20,
    output_dir="output/vpsnet_fusetrack_R_18_synth_lazy",
)  # fmt: skip

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
