"""LazyConfig twin of yolact_edge_R_18_synth_flow_gt.yaml: stage 2 of 4, the flow net alone on
the exact flow to the next frame (the chain of commands: yolact_edge_R_18_synth_image.py)."""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler

from d2ext.data.mappers import YolactEdgePairMapper

from .yolact_edge_R_18_synth_image import dataloader, model, optimizer, train

model.train_stage = "flow_gt"
# pairs (frame t, frame t + 1), only resized (no scale jitter, no flip), as the original's flow
# stage
dataloader.train.mapper = L(YolactEdgePairMapper)(
    is_train=True,
    frame_offsets=[-1],
    augmentations=[L(T.Resize)(shape=(256, 256))],
    image_format="BGR",
    use_instance_mask=True,
    instance_mask_format="bitmask",
)

optimizer.lr = 1e-3
train.init_checkpoint = "output/yolact_edge_R_18_synth_image/model_final.pth"
train.max_iter = 1000
train.output_dir = "output/yolact_edge_R_18_synth_flow_gt_lazy"
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.0),
    warmup_length=50 / 1000,
    warmup_factor=0.001,
)
