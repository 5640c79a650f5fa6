"""LazyConfig twin of yolact_edge_R_50_FPN_550_joint.yaml: stage 4 of 4, the original's video
stage (yolact_edge_vid_resnet50_config), keyframes 2-5 frames back (the chain of commands:
yolact_edge_R_50_FPN_550_flow_gt.py)."""

from d2ext.data.mappers import YolactEdgePairMapper

from .yolact_edge_R_50_FPN_550 import (  # noqa: F401
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model.train_stage = "joint"
# the image stage's (SSD) augmentation, replayed on the keyframe
dataloader.train.mapper._target_ = YolactEdgePairMapper
dataloader.train.mapper.frame_offsets = [2, 3, 4, 5]

# lr 2e-4, cosine over 200k iterations: the image stage's schedule
train.init_checkpoint = "output/yolact_edge_R_50_FPN_550_flow/model_final.pth"
train.output_dir = "output/yolact_edge_R_50_FPN_550_joint_lazy"
