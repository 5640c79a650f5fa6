"""LazyConfig twin of retinaface_mnet025_640.yaml: biubug6's cfg_mnet (MobileNet-0.25, 640x640
crops, batch 32, 250 epochs of WIDER FACE train). The other RetinaFace ``*.py`` configs start
from this one.

python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/RetinaFace/retinaface_mnet025_640.py
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.model_zoo import get_config
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.solver import WarmupParamScheduler
from detectron2.solver.build import get_default_optimizer_params
from fvcore.common.param_scheduler import MultiStepParamScheduler
from omegaconf import OmegaConf
from torch.optim import SGD

import d2ext  # noqa: F401  (registers the datasets)
from d2ext.data.mappers import RetinaFaceMapper
from d2ext.data.transforms.retinaface import build_retinaface_augmentations
from d2ext.evaluation import WiderFaceEvaluator
from d2ext.modeling.common import Landmark2AnchorTransform
from d2ext.modeling.retinaface import MobileNetV1, RetinaFace

model = L(RetinaFace)(
    backbone=L(MobileNetV1)(
        in_channels=3,
        out_features=["stage1", "stage2", "stage3"],
        norm="BN",
        leaky_relu_slope=0.1,
    ),
    in_features=["stage1", "stage2", "stage3"],
    out_channels=64,
    # the original's PriorBox: min_sizes per level, square, centres (j + 0.5) * step
    anchor_generator=L(DefaultAnchorGenerator)(
        sizes=[[16, 32], [64, 128], [256, 512]],
        aspect_ratios=[[1.0]],
        strides=[8, 16, 32],
        offset=0.5,
    ),
    # BGR minus the original's mean: official weights load unchanged
    pixel_mean=[104.0, 117.0, 123.0],
    pixel_std=[1.0, 1.0, 1.0],
    norm="BN",
    leaky_relu_slope=None,  # the original's rule: 0.1 at width <= 64
    landmark_on=True,
    box2box_transform=L(Box2BoxTransform)(weights=(10.0, 10.0, 5.0, 5.0), scale_clamp=float("inf")),
    landmark_coder=L(Landmark2AnchorTransform)(weight=10.0),
    iou_threshold=0.35,
    forced_match_min_iou=0.2,
    neg_pos_ratio=7,
    loss_weights={"loss_bbox": 2.0, "loss_cls": 1.0, "loss_landmark": 1.0},
    score_threshold=0.02,
    # WIDER evaluation as test_widerface.py: no top-k, no keep limit (detect.py: 5000 / 750)
    topk_candidates=0,
    nms_threshold=0.4,
    max_detections_per_image=0,
    nms_legacy_plus_one=True,
    channels_last=True,
)

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    # images without faces are valid negatives
    dataset=L(get_detection_dataset_dicts)(names="widerface_train", filter_empty=False),
    mapper=L(RetinaFaceMapper)(
        is_train=True,
        augmentations=L(build_retinaface_augmentations)(
            train_size=640,
            crop_scales=[0.3, 0.45, 0.6, 0.8, 1.0],
            crop_trials=250,
            distort=True,
            mirror_prob=0.5,
            random_interpolation=True,
            pixel_mean=[104.0, 117.0, 123.0],  # fills the padding (model.pixel_mean)
            image_format="BGR",
        ),
        # the five landmarks' mirror order (eyes and mouth corners swap) is the mapper's default
        image_format="BGR",
    ),
    total_batch_size=32,
    num_workers=4,
)
# test: every image at its original size (test_widerface.py --origin_size; a short side of 0 is
# D2's "no resize", as MIN_SIZE_TEST 0 in the yacs twin)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="widerface_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=0, max_size=1333)],
        image_format="BGR",
    ),
    num_workers=4,
)
dataloader.evaluator = L(WiderFaceEvaluator)(dataset_name="${..test.dataset.names}")

# train.py: SGD lr 1e-3, momentum 0.9, weight decay 5e-4 on every parameter
optimizer = L(SGD)(
    params=L(get_default_optimizer_params)(weight_decay_norm=5e-4),
    lr=1e-3,
    momentum=0.9,
    weight_decay=5e-4,
)

train = get_config("common/train.py").train
train.init_checkpoint = ""
# 250 epochs of 403 iterations, lr x0.1 at epochs 190 and 220
train.max_iter = 100750
train.eval_period = 0
train.checkpointer.period = 4030
train.seed = 0
train.output_dir = "output/retinaface_mnet025_640_lazy"

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01], milestones=[76570, 88660], num_updates="${train.max_iter}"
    ),
    warmup_length=0.0,
    warmup_factor=0.001,
)

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
