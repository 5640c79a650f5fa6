"""LazyConfig twin of panoptic_fpn_R_18_synth.yaml: stock D2 Panoptic FPN, R-18 FPN from scratch
on synth_panoptic ("separated" labels), the budget of Base-synth-panoptic-R18.yaml.

    python .venv/d2-tools/lazyconfig_train_net.py \
        --config-file configs/UPSNet/panoptic_fpn_R_18_synth.py
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator, SemSegEvaluator
from detectron2.model_zoo import get_config
from omegaconf import OmegaConf

import d2ext  # noqa: F401,I001  (registers synth_panoptic_*)

from ..common.synth_schedule import lr_multiplier, optimizer, train
from .common.synth_budget import synth_panoptic_rcnn_budget as _synth_panoptic_rcnn_budget

model = get_config("common/models/panoptic_fpn.py").model
_synth_panoptic_rcnn_budget(model)
model.sem_seg_head.num_classes = 4  # 3 stuff + "things"
model.combine_stuff_area_thresh = 256

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synth_panoptic_train_separated"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=192, max_size=192),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        use_instance_mask=True,
        instance_mask_format="bitmask",
    ),
    total_batch_size=2,
    num_workers=2,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(
        names="synth_panoptic_val_separated", filter_empty=False
    ),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=192, max_size=192)],
        image_format="BGR",
    ),
    num_workers=2,
)
dataloader.evaluator = [
    L(COCOEvaluator)(dataset_name="${...test.dataset.names}"),
    L(SemSegEvaluator)(dataset_name="${...test.dataset.names}"),
    L(COCOPanopticEvaluator)(dataset_name="${...test.dataset.names}"),
]

optimizer.lr = 0.01
train.max_iter = 400
train.checkpointer.period = 100
lr_multiplier.scheduler.milestones = [300, 370]
lr_multiplier.warmup_length = 50 / 400
train.output_dir = "output/panoptic_fpn_R_18_synth_lazy"
