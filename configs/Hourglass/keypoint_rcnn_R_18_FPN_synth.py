"""LazyConfig twin of keypoint_rcnn_R_18_FPN_synth.yaml: stock D2 Keypoint R-CNN R-18 FPN from
scratch on synth_bodies (17 COCO keypoints, 192x192 images), the anchor of the hourglass keypoint
head comparison (keypoint_rcnn_R_18_FPN_synth_hourglass_head.py).

    python .venv/d2-tools/lazyconfig_train_net.py \
        --config-file configs/Hourglass/keypoint_rcnn_R_18_FPN_synth.py
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
from detectron2.data.detection_utils import create_keypoint_hflip_indices
from detectron2.evaluation import COCOEvaluator
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from omegaconf import OmegaConf

import d2ext  # noqa: F401,I001  (registers synth_bodies_*)

from ..common.synth_r18 import resnet18_from_scratch as _resnet18_from_scratch
from ..common.synth_schedule import clipped_optimizer as _clipped_optimizer
from ..common.synth_schedule import lr_multiplier, train

# pycocotools' COCO person sigmas (the yacs twin's TEST.KEYPOINT_OKS_SIGMAS)
_COCO_PERSON_OKS_SIGMAS = [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072]
_COCO_PERSON_OKS_SIGMAS += [0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089]

model = get_config("common/models/keypoint_rcnn_fpn.py").model
_resnet18_from_scratch(model.backbone.bottom_up)
model.pixel_mean = [127.5, 127.5, 127.5]
model.pixel_std = [64.0, 64.0, 64.0]
model.input_format = "BGR"
# FPN at 128 channels (see the yacs twin for the costs behind every budget choice)
model.backbone.out_channels = 128
model.proposal_generator.head.in_channels = 128
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
model.proposal_generator.post_nms_topk = (500, 500)
model.roi_heads.batch_size_per_image = 32
model.roi_heads.box_head.input_shape = ShapeSpec(channels=128, height=7, width=7)
model.roi_heads.keypoint_head.input_shape = ShapeSpec(channels=128, height=14, width=14)
model.roi_heads.keypoint_head.conv_dims = [128] * 8

optimizer = _clipped_optimizer(torch.optim.SGD, 10.0, lr=0.01, momentum=0.9, weight_decay=1e-4)

train.max_iter = 600
lr_multiplier.scheduler.milestones = [450, 550]
lr_multiplier.warmup_length = 100 / 600
train.output_dir = "output/keypoint_rcnn_R_18_FPN_synth_lazy"

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synth_bodies_train", min_keypoints=1),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(
                short_edge_length=(160, 192, 224), sample_style="choice", max_size=224
            ),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        use_instance_mask=False,
        instance_mask_format="bitmask",
        use_keypoint=True,
        keypoint_hflip_indices=L(create_keypoint_hflip_indices)(
            dataset_names="${...dataset.names}"
        ),
    ),
    total_batch_size=4,
    num_workers=2,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synth_bodies_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=192, max_size=192)],
        image_format="BGR",
    ),
    num_workers=2,
)
dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${..test.dataset.names}", kpt_oks_sigmas=_COCO_PERSON_OKS_SIGMAS
)
