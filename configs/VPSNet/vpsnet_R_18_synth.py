"""LazyConfig twin of vpsnet_R_18_synth.yaml: VPSNet (fuse + track) on UPSNet R-18 FPN from
scratch on synth_vps.

python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/VPSNet/vpsnet_R_18_synth.py
"""

import detectron2.data.transforms as T
import torch
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

import d2ext  # noqa: F401,I001  (registers the synthetic datasets and VPSNet)
from d2ext.data.mappers import VPSNetPairMapper
from d2ext.evaluation import VPQEvaluator
from d2ext.modeling.vpsnet import TrackHead, VPSNet, VPSNetFuse

# UPSNet R-18, its data pipeline and schedule as configs/UPSNet/upsnet_R_18_synth.py
from ..common.synth_schedule import full_model_clipped_optimizer as _clipped_optimizer
from ..UPSNet.upsnet_R_18_synth import dataloader, lr_multiplier, model, train

model.panoptic_head.label_space.name = "synth_vps_train"

# VPSNet: the original's Fuse over P2-P6 and track head; no flow net (see the yaml)
model._target_ = VPSNet
model.fuse = L(VPSNetFuse)(
    input_shape={
        f"p{i}": L(ShapeSpec)(channels="${....backbone.out_channels}", stride=2**i)
        for i in (2, 3, 4, 5, 6)
    },
    in_features=["p2", "p3", "p4", "p5", "p6"],
    gather_feature="p2",
    flow_refine=True,
    corr_max_displacement=4,
    flow_refine_conv_dims=[64, 64, 32],
    fusion_conv=True,
)
model.flow_net = None
model.track_head = L(TrackHead)(
    input_shape=L(ShapeSpec)(channels="${...backbone.out_channels}", height=7, width=7),
    num_fc=2,
    fc_dim=1024,
    loss_weight=0.5,
    match_coeff=[1.0, 2.0, 10.0],
    dummy_iou=0.0,
    min_match_score=-100.0,
)

# UPSNet's data pipeline on synth_vps: the pair mapper (same augmentations) and VPQ
dataloader.train.dataset.names = "synth_vps_train"
dataloader.train.mapper._target_ = VPSNetPairMapper
dataloader.train.mapper.dataset_names = ["synth_vps_train"]
dataloader.train.mapper.reference_offsets = [-1, 1]
dataloader.test.dataset.names = "synth_vps_val"
# the frames at their own 128x256 size (see the yaml)
dataloader.train.mapper.augmentations[0] = L(T.ResizeShortestEdge)(
    short_edge_length=128, max_size=256
)
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=128, max_size=256)
]
dataloader.evaluator = L(VPQEvaluator)(dataset_name="synth_vps_val")

# SGD clipping the norm of all gradients together at 35, as the original (see the yaml)
optimizer = _clipped_optimizer(torch.optim.SGD, 35.0, lr=0.01, momentum=0.9, weight_decay=1e-4)

train.output_dir = "output/vpsnet_R_18_synth_lazy"
