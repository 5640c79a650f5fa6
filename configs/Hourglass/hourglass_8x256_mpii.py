"""LazyConfig twin of hourglass_8x256_mpii.yaml: the paper's 8-stack, width-256 MPII model on
256x256 crops, on synth_bodies' 17 COCO joints (see the yacs twin for MPII and the optimizer). The other
Hourglass landmark ``*.py`` configs start from this one.

python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/Hourglass/hourglass_8x256_mpii.py
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.detection_utils import create_keypoint_hflip_indices
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler
from detectron2.solver.build import get_default_optimizer_params
from fvcore.common.param_scheduler import MultiStepParamScheduler
from omegaconf import OmegaConf
from torch.optim import AdamW

import d2ext  # noqa: F401  (registers the synth_* datasets)
from d2ext.data.mappers import RandomLandmarkCrop, TopDownLandmarkMapper
from d2ext.evaluation import LandmarkEvaluator
from d2ext.modeling.common import HeatmapCodec
from d2ext.modeling.hourglass import StackedHourglass, TopDownLandmarkDetector

model = L(TopDownLandmarkDetector)(
    backbone=L(StackedHourglass)(
        num_stacks=8, width=256, num_keypoints=17, depth=4, increase=0, in_channels=3, norm="BN"
    ),
    crop_size=(256, 256),
    # the original's input: RGB / 255, no mean subtraction (official checkpoints load as is)
    pixel_mean=[0.0, 0.0, 0.0],
    pixel_std=[255.0, 255.0, 255.0],
    head="heatmap",
    # heatmaps are the crop over the backbone's stride 4; sigma = output_res / 64
    codec=L(HeatmapCodec)(
        heatmap_size=(64, 64), sigma=1.0, unbiased_encoding=False, decode="princeton"
    ),
    heatmap_loss="mse_weighted",
    # the paper's flip test: the test set's flip map swaps left/right joints
    flip_test_indices=L(create_keypoint_hflip_indices)(dataset_names=["synth_bodies_val"]),
    flip_shift=False,
)

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synth_bodies_train"),
    mapper=L(TopDownLandmarkMapper)(
        is_train=True,
        # the original's augmentation (data/MPII/dp.py): scale 0.75-1.25, rotation +-30, flip
        augmentations=[
            L(RandomLandmarkCrop)(
                crop_size=(256, 256),
                box_padding=1.25,
                scale_range=(0.75, 1.25),
                rotation=30.0,
                shift=0.0,
            ),
            L(T.RandomFlip)(prob=0.5, horizontal=True),
        ],
        image_format="RGB",
        keypoint_hflip_indices=L(create_keypoint_hflip_indices)(
            dataset_names="${...dataset.names}"
        ),
    ),
    total_batch_size=16,
    num_workers=2,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synth_bodies_val", filter_empty=False),
    mapper=L(TopDownLandmarkMapper)(
        is_train=False,
        augmentations=[L(RandomLandmarkCrop)(crop_size=(256, 256), box_padding=1.25)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=2,
)
dataloader.evaluator = L(LandmarkEvaluator)(dataset_name="${..test.dataset.names}")

# Adam (AdamW, weight decay 0) at the paper's RMSprop lr; see the yacs twin
optimizer = L(AdamW)(
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0),
    lr=2.5e-4,
    betas=(0.9, 0.999),
    weight_decay=0.0,
)

train = get_config("common/train.py").train
train.init_checkpoint = ""
train.max_iter = 200000
train.eval_period = 0
train.checkpointer.period = 10000
train.seed = 0
train.output_dir = "output/hourglass_8x256_mpii_lazy"

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1], milestones=[150000], num_updates="${train.max_iter}"
    ),
    warmup_length=0.0,
    warmup_factor=0.001,
)
