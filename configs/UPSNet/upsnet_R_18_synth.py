"""LazyConfig twin of upsnet_R_18_synth.yaml: UPSNet R-18 FPN from scratch on synth_panoptic.

python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/UPSNet/upsnet_R_18_synth.py
"""

from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader
from detectron2.data import get_detection_dataset_dicts
from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator, DatasetEvaluators

from ..common.synth_schedule import lr_multiplier, optimizer, train
from .common.upsnet_model import model
from ..common.synth_r18 import resnet18_from_scratch as _resnet18_from_scratch

import d2ext  # noqa: F401,I001  (registers synth_panoptic_* and UPSNet)
from d2ext.modeling.upsnet import PanopticLabelSpace, UPSNetPanopticMapper

# the shared budget of Base-synth-panoptic-R18.yaml
_resnet18_from_scratch(model.backbone.bottom_up)
model.backbone.out_channels = 128  # and every head reading the FPN:
model.proposal_generator.head.in_channels = 128
model.roi_heads.box_head.input_shape.channels = 128
model.roi_heads.mask_head.input_shape.channels = 128
model.pixel_mean = [127.5, 127.5, 127.5]
model.pixel_std = [64.0, 64.0, 64.0]
model.input_format = "BGR"
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
model.proposal_generator.post_nms_topk = (300, 300)
model.roi_heads.num_classes = 6
model.roi_heads.batch_size_per_image = 128
model.roi_heads.mask_head.num_classes = 6
# UPSNet: Cityscapes loss weights, plain convs (see the yaml)
model.sem_seg_head.num_classes = 9  # 3 stuff + 6 things
model.sem_seg_head.num_convs = 2
model.sem_seg_head.deformable = False
model.sem_seg_head.loss_weight = 1.0
model.sem_seg_head.roi_loss_weight = 0.0
model.panoptic_head.label_space.name = "synth_panoptic_train"
model.panoptic_head.loss_weight = 0.5
model.panoptic_head.stuff_area_limit = 256

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synth_panoptic_train"),
    mapper=L(UPSNetPanopticMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=192, max_size=192),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        label_space=L(PanopticLabelSpace.from_dataset)(name="${...dataset.names}"),
    ),
    total_batch_size=2,
    num_workers=2,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synth_panoptic_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=192, max_size=192)],
        image_format="BGR",
    ),
    num_workers=2,
)
dataloader.evaluator = L(DatasetEvaluators)(
    evaluators=[
        L(COCOEvaluator)(dataset_name="synth_panoptic_val"),
        L(COCOPanopticEvaluator)(dataset_name="synth_panoptic_val"),
    ]
)

optimizer.lr = 0.01
train.max_iter = 400
train.checkpointer.period = 100
lr_multiplier.scheduler.milestones = [300, 370]
lr_multiplier.warmup_length = 50 / 400
train.output_dir = "output/upsnet_R_18_synth_lazy"
