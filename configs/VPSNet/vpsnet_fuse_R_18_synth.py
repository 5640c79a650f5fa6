"""LazyConfig twin of vpsnet_fuse_R_18_synth.yaml: VPSNet's first stage (UPSNet + Fuse, no
track head) from the synth_panoptic UPSNet fine-tune, with RAFT-small trained on synth_vps's
flow (give it as ``model.flow_net.weights=output/raft_small_synth_vps/model_final.pth``)."""

from detectron2.config import LazyCall as L

from d2ext.modeling.common import RAFTFlow

from ..common.synth_schedule import finetune_schedule as _finetune_schedule
from .vpsnet_R_18_synth import dataloader, lr_multiplier, model, optimizer, train

model.track_head = None
model.flow_net = L(RAFTFlow)(input_format="BGR", num_flow_updates=12, weights="")

_finetune_schedule(
    train, optimizer, lr_multiplier, init_checkpoint="output/upsnet_R_18_synth_ft/model_final.pth",
    lr=0.005, max_iter=360, step=300, warmup=20, output_dir="output/vpsnet_fuse_R_18_synth_lazy",
)  # fmt: skip

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
