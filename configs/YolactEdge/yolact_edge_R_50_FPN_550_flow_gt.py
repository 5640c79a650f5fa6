"""LazyConfig twin of yolact_edge_R_50_FPN_550_flow_gt.yaml: stage 2 of 4, the flow net alone
on exact flow to the next frame (the original's flow stage). The stages, each from the previous
one's weights:

python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/YolactEdge/yolact_edge_R_50_FPN_550.py
python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/YolactEdge/yolact_edge_R_50_FPN_550_flow_gt.py \
    train.init_checkpoint=output/yolact_edge_R_50_FPN_550_lazy/model_final.pth
python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/YolactEdge/yolact_edge_R_50_FPN_550_flow.py \
    train.init_checkpoint=output/yolact_edge_R_50_FPN_550_flow_gt_lazy/model_final.pth
python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/YolactEdge/yolact_edge_R_50_FPN_550_joint.py \
    train.init_checkpoint=output/yolact_edge_R_50_FPN_550_flow_lazy/model_final.pth
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler

from d2ext.data.mappers import YolactEdgePairMapper

from .yolact_edge_R_50_FPN_550 import dataloader, model, optimizer, train  # noqa: F401

model.train_stage = "flow_gt"
# pairs (frame t, frame t + 1), only resized (no SSD augmentation, no flip), as the original's
# flow stage
dataloader.train.mapper = L(YolactEdgePairMapper)(
    is_train=True,
    frame_offsets=[-1],
    augmentations=[L(T.Resize)(shape=(550, 550))],
    image_format="RGB",
    use_instance_mask=True,
    instance_mask_format="bitmask",
)

train.init_checkpoint = "output/yolact_edge_R_50_FPN_550/model_final.pth"
train.max_iter = 400000
train.output_dir = "output/yolact_edge_R_50_FPN_550_flow_gt_lazy"
# lr 2e-4 (the image stage's optimizer), cosine over 400k iterations, warmup over 500
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.0),
    warmup_length=500 / 400000,
    warmup_factor=1e-4,
)
