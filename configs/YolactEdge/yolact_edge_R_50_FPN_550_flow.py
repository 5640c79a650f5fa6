"""LazyConfig twin of yolact_edge_R_50_FPN_550_flow.yaml: stage 3 of 4, the flow net and SPA
with feature matching, keyframes 2-5 frames back (the chain of commands:
yolact_edge_R_50_FPN_550_flow_gt.py)."""

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler

from d2ext.data.mappers import YolactEdgePairMapper

from .yolact_edge_R_50_FPN_550 import dataloader, model, optimizer, train  # noqa: F401

model.train_stage = "flow"
# the image stage's (SSD) augmentation, replayed on the keyframe
dataloader.train.mapper._target_ = YolactEdgePairMapper
dataloader.train.mapper.frame_offsets = [2, 3, 4, 5]

train.init_checkpoint = "output/yolact_edge_R_50_FPN_550_flow_gt/model_final.pth"
train.max_iter = 100000
train.output_dir = "output/yolact_edge_R_50_FPN_550_flow_lazy"
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.0),
    warmup_length=500 / 100000,
    warmup_factor=1e-4,
)
