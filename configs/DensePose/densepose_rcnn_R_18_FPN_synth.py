"""LazyConfig twin of densepose_rcnn_R_18_FPN_synth.yaml: Mask R-CNN R-18 FPN + the DensePose
chart branch from scratch on synth_densepose, the CPU budget of docs/RESULTS.md (see the yacs
twin). mask_rcnn_R_18_FPN_synth_densepose_off.py is the same model without the branch.

    python .venv/d2-tools/lazyconfig_train_net.py \
        --config-file configs/DensePose/densepose_rcnn_R_18_FPN_synth.py
"""

import detectron2.data.transforms as T
import torch
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.evaluation import DatasetEvaluators
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from omegaconf import OmegaConf

import d2ext  # noqa: F401,I001  (registers synth_densepose_* and DensePoseROIHeads)
from d2ext.data.densepose_flip import load_uv_symmetry_of_datasets
from d2ext.data.mappers import DensePoseMapper
from d2ext.evaluation import DensePoseEvaluator, FastCOCOEvaluator

from ..common.synth_r18 import resnet18_from_scratch as _resnet18_from_scratch
from ..common.synth_schedule import clipped_optimizer as _clipped_optimizer
from ..common.synth_schedule import lr_multiplier, train
from .common.densepose_branch import add_densepose_branch as _add_densepose_branch

model = get_config("common/models/mask_rcnn_fpn.py").model
_resnet18_from_scratch(model.backbone.bottom_up)
model.pixel_mean = [127.5, 127.5, 127.5]
model.pixel_std = [64.0, 64.0, 64.0]
model.input_format = "BGR"
# FPN at 128 channels (see the yacs twin for the budget choices)
model.backbone.out_channels = 128
model.proposal_generator.head.in_channels = 128
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
model.proposal_generator.post_nms_topk = (500, 500)
model.roi_heads.num_classes = 1  # person
model.roi_heads.batch_size_per_image = 64
model.roi_heads.box_head.input_shape = ShapeSpec(channels=128, height=7, width=7)
model.roi_heads.mask_head.input_shape = ShapeSpec(channels=128, height=14, width=14)
# the s1x head scaled to the CPU budget: 4 convs of 128 (8 of 512 in the paper config)
_add_densepose_branch(
    model.roi_heads,
    fpn_channels=128,
    num_stacked_convs=4,
    conv_head_dim=128,
    decoder_conv_dims=64,
    decoder_num_classes=128,
)

optimizer = _clipped_optimizer(torch.optim.SGD, 10.0, lr=0.01, momentum=0.9, weight_decay=1e-4)

train.max_iter = 600
lr_multiplier.scheduler.milestones = [450, 550]
lr_multiplier.warmup_length = 100 / 600
train.output_dir = "output/densepose_rcnn_R_18_FPN_synth_lazy"

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synth_densepose_train"),
    mapper=L(DensePoseMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(
                short_edge_length=(160, 192, 224), sample_style="choice", max_size=224
            ),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        use_instance_mask=True,
        instance_mask_format="bitmask",
        uv_symmetry=L(load_uv_symmetry_of_datasets)(dataset_names="${...dataset.names}"),
    ),
    total_batch_size=4,
    num_workers=2,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synth_densepose_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=192, max_size=192)],
        image_format="BGR",
    ),
    num_workers=2,
)
# what d2ext.evaluation.build_evaluator gives a "densepose" dataset: box and mask AP on the
# DensePose-COCO json, then GPS_uv AP, part mIoU and UV error
dataloader.evaluator = L(DatasetEvaluators)(
    evaluators=[
        L(FastCOCOEvaluator)(dataset_name="${....test.dataset.names}"),
        L(DensePoseEvaluator)(dataset_name="${....test.dataset.names}"),
    ]
)
