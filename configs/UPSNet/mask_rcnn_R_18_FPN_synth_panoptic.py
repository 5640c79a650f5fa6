"""LazyConfig twin of mask_rcnn_R_18_FPN_synth_panoptic.yaml: the stock D2 Mask R-CNN R-18 FPN
that the synth_panoptic Panoptic FPN / UPSNet fine-tunes start from (synth_panoptic_train's
things, Base-synth-panoptic-R18's model budget, batch 4, 800 iterations, clipped SGD).

    python .venv/d2-tools/lazyconfig_train_net.py \
        --config-file configs/UPSNet/mask_rcnn_R_18_FPN_synth_panoptic.py
"""

import torch
from detectron2.model_zoo import get_config

import d2ext  # noqa: F401,I001  (registers synth_panoptic_*)

from ..common.synth_schedule import clipped_optimizer as _clipped_optimizer
from ..common.synth_schedule import lr_multiplier, train
from .common.synth_budget import synth_panoptic_rcnn_budget as _synth_panoptic_rcnn_budget
from .panoptic_fpn_R_18_synth import dataloader as _panoptic_dataloader

model = get_config("common/models/mask_rcnn_fpn.py").model
_synth_panoptic_rcnn_budget(model)

# Panoptic FPN's loaders on the same "separated" registration: the mapper reads the things'
# instances (its semantic labels are not used by Mask R-CNN); no test set (the fine-tunes
# report the thing AP)
dataloader = _panoptic_dataloader
dataloader.train.total_batch_size = 4
del dataloader["test"]
del dataloader["evaluator"]

# SGD lr 0.01 with per-parameter gradient-norm clipping at 10 (see the yacs twin)
optimizer = _clipped_optimizer(torch.optim.SGD, 10.0, lr=0.01, momentum=0.9, weight_decay=1e-4)

train.max_iter = 800
train.checkpointer.period = 100
lr_multiplier.scheduler.milestones = [600, 740]
lr_multiplier.warmup_length = 100 / 800
train.output_dir = "output/mask_rcnn_R_18_FPN_synth_panoptic_lazy"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
