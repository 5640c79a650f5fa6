"""LazyConfig twin of yolact_R_18_synth.yaml: YOLACT R-18 from scratch on synth_shapes (CPU).

python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/YOLACT/yolact_R_18_synth.py
"""

import detectron2.data.transforms as T
import torch
from detectron2.config import LazyCall as L

from d2ext.data.mappers import YOLACTDatasetMapper

from ..common.synth_data import dataloader
from ..common.synth_r18 import resnet18_from_scratch as _resnet18_from_scratch
from ..common.synth_schedule import clipped_optimizer as _clipped_optimizer
from ..common.synth_schedule import lr_multiplier, train  # noqa: F401
from .yolact_lazy_common import model

_resnet18_from_scratch(model.backbone.bottom_up)
model.num_classes = 6
model.input_size = 256
# the paper's sizes scaled to 256 px, three scales per level as YOLACT++ (see the yacs twin)
model.anchor_generator.sizes = [
    [12, 15.12, 19.05],
    [24, 30.24, 38.1],
    [48, 60.5, 76.2],
    [96, 121, 152.4],
    [192, 242, 305],
]
model.anchor_generator.square_anchors = False
model.head.num_anchors = 9  # 3 sizes x 3 aspect ratios per location
# soft mask targets and a 0.35 mask threshold (chosen on synth_shapes_tune; see the yacs twin)
model.loss.soft_mask_targets = True
model.mask_threshold = 0.35
model.pixel_mean = [127.5, 127.5, 127.5]
model.pixel_std = [64.0, 64.0, 64.0]

dataloader.train.mapper = L(YOLACTDatasetMapper)(
    is_train=True,
    # scale jitter (MODEL.YOLACT.SCALE_JITTER), flip and stretch: the original's SSD augmentation
    # is off at this CPU budget (see the yacs twin); to turn it on, put
    # L(PhotometricDistort)(image_format="BGR"), L(Expand)(fill=[127.5] * 3) and
    # L(RandomSampleCrop)() (d2ext.data.transforms) first, as
    # configs/YOLACT/yolact_lazy_common.py does
    augmentations=[
        L(T.ResizeScale)(min_scale=0.75, max_scale=1.25, target_height=256, target_width=256),
        # masks padded with 0 (FixedSizeCrop's default 255 would mark a bitmask's padding)
        L(T.FixedSizeCrop)(crop_size=(256, 256), pad=True, pad_value=127.5, seg_pad_value=0),
        L(T.RandomFlip)(horizontal=True),
        L(T.Resize)(shape=(256, 256)),
    ],
    image_format="BGR",
    use_instance_mask=True,
    instance_mask_format="bitmask",
)

# AdamW at 1e-3 with per-parameter gradient-norm clipping at 1 (see the yacs twin for why)
optimizer = _clipped_optimizer(torch.optim.AdamW, 1.0, lr=1e-3, weight_decay=1e-4)

train.output_dir = "output/yolact_R_18_synth_lazy"
