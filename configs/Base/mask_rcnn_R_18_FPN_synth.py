"""LazyConfig twin of mask_rcnn_R_18_FPN_synth.yaml: stock D2 Mask R-CNN R-18 FPN on synth_shapes.

python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/Base/mask_rcnn_R_18_FPN_synth.py
"""

import torch
from detectron2.model_zoo import get_config

from ..common.synth_data import dataloader
from ..common.synth_r18 import resnet18_from_scratch as _resnet18_from_scratch
from ..common.synth_schedule import clipped_optimizer as _clipped_optimizer
from ..common.synth_schedule import lr_multiplier, train  # noqa: F401

model = get_config("common/models/mask_rcnn_fpn.py").model

# ResNet-18 with trainable BatchNorm (from scratch)
_resnet18_from_scratch(model.backbone.bottom_up)
model.pixel_mean = [127.5, 127.5, 127.5]
model.pixel_std = [64.0, 64.0, 64.0]
model.input_format = "BGR"
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
model.proposal_generator.post_nms_topk = (500, 500)
model.roi_heads.num_classes = 6
model.roi_heads.batch_size_per_image = 128

# SGD lr 0.01 with per-parameter gradient-norm clipping at 10 (see the yacs twin for why)
optimizer = _clipped_optimizer(torch.optim.SGD, 10.0, lr=0.01, momentum=0.9, weight_decay=1e-4)

train.output_dir = "output/mask_rcnn_R_18_FPN_synth_lazy"
