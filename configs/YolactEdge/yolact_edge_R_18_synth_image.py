"""LazyConfig twin of yolact_edge_R_18_synth_image.yaml: YolactEdge R-18 from scratch on
synth_videos, stage 1 of 4 (the image model: configs/YOLACT/yolact_R_18_synth.py + FlowNetMini
and SPA). The stages, each from the previous one's weights:

python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/YolactEdge/yolact_edge_R_18_synth_image.py
python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/YolactEdge/yolact_edge_R_18_synth_flow_gt.py \
    train.init_checkpoint=output/yolact_edge_R_18_synth_image_lazy/model_final.pth
python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/YolactEdge/yolact_edge_R_18_synth_flow.py \
    train.init_checkpoint=output/yolact_edge_R_18_synth_flow_gt_lazy/model_final.pth
python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/YolactEdge/yolact_edge_R_18_synth_joint.py \
    train.init_checkpoint=output/yolact_edge_R_18_synth_flow_lazy/model_final.pth
"""

from detectron2.config import LazyCall as L

from d2ext.modeling.common import FlowNetMini
from d2ext.modeling.yolact_edge import SPA, YolactEdge

from ..YOLACT.yolact_R_18_synth import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model._target_ = YolactEdge
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

dataloader.train.dataset.names = "synth_videos_train"
dataloader.test.dataset.names = "synth_videos_val"

train.output_dir = "output/yolact_edge_R_18_synth_image_lazy"
