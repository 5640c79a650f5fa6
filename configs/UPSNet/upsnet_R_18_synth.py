"""LazyConfig twin of upsnet_R_18_synth.yaml: UPSNet R-18 FPN from scratch on synth_panoptic.

python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/UPSNet/upsnet_R_18_synth.py
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator, DatasetEvaluators
from omegaconf import OmegaConf

import d2ext  # noqa: F401,I001  (registers synth_panoptic_* and UPSNet)
from d2ext.data import PanopticLabelSpace
from d2ext.data.mappers import UPSNetPanopticMapper

from ..common.synth_schedule import lr_multiplier, optimizer, train
from .common.synth_budget import synth_panoptic_rcnn_budget as _synth_panoptic_rcnn_budget
from .common.upsnet_model import model

# the shared budget of Base-synth-panoptic-R18.yaml
_synth_panoptic_rcnn_budget(model)
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
