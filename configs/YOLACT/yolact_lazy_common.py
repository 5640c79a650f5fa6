"""LazyConfig pieces shared by the YOLACT ``*.py`` configs: the paper's R-50 550 model, COCO
data with the square 550 stretch, and the paper's schedule (batch 8, lr 1e-3, 800k iterations).
Mirrors Base-YOLACT.yaml; every class is the same ``@configurable`` one the yacs path builds."""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper
from detectron2.model_zoo import get_config
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

import d2ext  # noqa: F401  (registration)
from d2ext.data.mappers import YOLACTDatasetMapper
from d2ext.data.transforms import Expand, PhotometricDistort, RandomSampleCrop
from d2ext.modeling.yolact import (
    YOLACT,
    YOLACTFPN,
    ProtoNet,
    YOLACTAnchorGenerator,
    YOLACTHead,
    YOLACTLoss,
)

model = L(YOLACT)(
    backbone=L(YOLACTFPN)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="FrozenBN"),
            out_features=["res3", "res4", "res5"],
            freeze_at=0,
        ),
        in_features=["res3", "res4", "res5"],
        out_channels=256,
        num_downsample=2,
        relu_outputs=True,
    ),
    proto_net=L(ProtoNet)(in_channels=256, conv_dim=256, num_prototypes=32),
    head=L(YOLACTHead)(
        in_channels=256,
        conv_dim=256,
        num_anchors=3,
        num_classes="${..num_classes}",
        num_prototypes=32,
    ),
    anchor_generator=L(YOLACTAnchorGenerator)(
        sizes=[[24], [48], [96], [192], [384]],
        aspect_ratios=[1.0, 2.0, 0.5],  # D2 h/w order == the original's w/h [1, 1/2, 2]
        strides=[8, 16, 32, 64, 128],
        offset=0.5,
        square_anchors=True,  # the official checkpoints' quirk
    ),
    box2box_transform=L(Box2BoxTransform)(weights=(10.0, 10.0, 5.0, 5.0)),
    loss=L(YOLACTLoss)(
        box2box_transform=L(Box2BoxTransform)(weights=(10.0, 10.0, 5.0, 5.0)),
        anchor_matcher=L(Matcher)(
            thresholds=[0.4, 0.5], labels=[0, -1, 1], allow_low_quality_matches=False
        ),
    ),
    num_classes=80,
    input_size=550,
    head_in_features=["p3", "p4", "p5", "p6", "p7"],
    proto_in_feature="p3",
    pixel_mean=[123.68, 116.78, 103.94],
    pixel_std=[58.40, 57.12, 57.38],
)

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.mapper = L(YOLACTDatasetMapper)(
    is_train=True,
    # the original's SSD augmentation (MODEL.YOLACT.SSD_AUGMENTATION in the yacs configs), flip, stretch
    augmentations=[
        L(PhotometricDistort)(image_format="RGB"),
        L(Expand)(fill=[123.68, 116.78, 103.94]),
        L(RandomSampleCrop)(),
        L(T.RandomFlip)(horizontal=True),
        L(T.Resize)(shape=(550, 550)),
    ],
    image_format="RGB",
    use_instance_mask=True,
    instance_mask_format="bitmask",
)
dataloader.train.total_batch_size = 8
dataloader.test.mapper = L(DatasetMapper)(
    is_train=False, augmentations=[L(T.Resize)(shape=(550, 550))], image_format="RGB"
)

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 1e-3
optimizer.weight_decay = 5e-4

train = get_config("common/train.py").train
train.max_iter = 800000
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01, 0.001, 0.0001],
        milestones=[280000, 600000, 700000, 750000],
        num_updates="${train.max_iter}",
    ),
    warmup_length=500 / 800000,
    warmup_factor=1e-4,
)
