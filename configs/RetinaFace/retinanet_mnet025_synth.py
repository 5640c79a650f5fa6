"""LazyConfig twin of retinanet_mnet025_synth.yaml: stock D2 RetinaNet on MobileNet-0.25 under
D2's FPN (p3-p5, RetinaFace's strides and anchors), same data, mapper and budget as
retinaface_mnet025_synth.py."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling import FPN
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.meta_arch.retinanet import RetinaNet, RetinaNetHead

from d2ext.modeling.retinaface import MobileNetV1

from .retinaface_mnet025_synth import dataloader, lr_multiplier, optimizer, train

model = L(RetinaNet)(
    backbone=L(FPN)(
        bottom_up=L(MobileNetV1)(out_features=["stage1", "stage2", "stage3"]),
        in_features=["stage1", "stage2", "stage3"],
        out_channels=64,
        top_block=None,
    ),
    head=L(RetinaNetHead)(
        input_shape=[ShapeSpec(channels=64)],
        num_classes=1,
        conv_dims=[64, 64, 64, 64],
        prior_prob=0.01,
        num_anchors=2,
    ),
    head_in_features=["p3", "p4", "p5"],
    anchor_generator=L(DefaultAnchorGenerator)(
        sizes=[[16, 32], [64, 128], [256, 512]],
        aspect_ratios=[[1.0]],
        strides=[8, 16, 32],
        offset=0.5,
    ),
    box2box_transform=L(Box2BoxTransform)(weights=[1.0, 1.0, 1.0, 1.0]),
    anchor_matcher=L(Matcher)(
        thresholds=[0.4, 0.5], labels=[0, -1, 1], allow_low_quality_matches=True
    ),
    num_classes=1,
    # D2's yacs defaults, as the yacs twin
    focal_loss_alpha=0.25,
    focal_loss_gamma=2.0,
    smooth_l1_beta=0.1,
    box_reg_loss_type="smooth_l1",
    # RetinaFace's inference settings, so AP compares the models and not the thresholds
    test_score_thresh=0.02,
    # no practical limit, as RetinaFace's WIDER protocol
    test_topk_candidates=100000,
    test_nms_thresh=0.4,
    max_detections_per_image=100000,
    pixel_mean=[104.0, 117.0, 123.0],
    pixel_std=[1.0, 1.0, 1.0],
    input_format="BGR",
)
train.output_dir = "output/retinanet_mnet025_synth_lazy"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
