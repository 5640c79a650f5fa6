"""YolactEdge R-50-FPN 550 (the original's yolact_edge_vid_resnet50_config), LazyConfig twin of
yolact_edge_R_50_FPN_550.yaml: the YOLACT R-50 LazyConfig plus FlowNetMini and SPA.

python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/YolactEdge/yolact_edge_R_50_FPN_550.py
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler

from d2ext.modeling.common import FlowNetMini
from d2ext.modeling.yolact_edge import SPA, YolactEdge

from ..YOLACT.yolact_lazy_common import dataloader, model, optimizer, train  # noqa: F401

model._target_ = YolactEdge
model.num_classes = 40  # YouTube-VIS 2019
model.flow_net = L(FlowNetMini)(
    in_channels=256, out_channels=256, reduce_channels=[64], encode_channels=64
)
model.spa = L(SPA)(channels=256, levels=["p4", "p5"])
model.keyframe_interval = 5
model.warp_feature_names = ["p4", "p5"]
model.warp_flow_scale = 0.125
model.flow_scale_bias = True
model.train_stage = "image"
model.loss_fm_weight = 1.0

# synthetic videos per frame (see the yacs twin for YouTube-VIS)
dataloader.train.dataset.names = "synth_videos_train"
dataloader.test.dataset.names = "synth_videos_val"
# the test loader of the yacs twin (D2's DatasetMapper: shortest edge 550, the model stretches)
dataloader.test.mapper = L(DatasetMapper)(
    is_train=False,
    augmentations=[L(T.ResizeShortestEdge)(short_edge_length=550, max_size=1333)],
    image_format="RGB",
)

optimizer.lr = 2e-4
train.max_iter = 200000
train.eval_period = 0  # at the end, as the yacs twin
train.output_dir = "output/yolact_edge_R_50_FPN_550_lazy"
# lr 2e-4, cosine over 200k iterations, warmup over 500 from 1e-4 x
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.0),
    warmup_length=500 / 200000,
    warmup_factor=1e-4,
)
