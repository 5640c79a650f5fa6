"""LazyConfig twin of upsnet_R_50_coco.yaml: UPSNet R-50 FPN on COCO panoptic, paper setting.

python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/UPSNet/upsnet_R_50_coco.py
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator
from detectron2.model_zoo import get_config
from omegaconf import OmegaConf

from d2ext.data import PanopticLabelSpace  # noqa: I001
from d2ext.data.mappers import UPSNetPanopticMapper

from .common.upsnet_model import model

# stem and res2 frozen on the ImageNet weights, as the yaml (D2's MODEL.BACKBONE.FREEZE_AT: 2);
# D2's model-zoo LazyConfig trains them
model.backbone.bottom_up.freeze_at = 2

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train_panoptic"),
    mapper=L(UPSNetPanopticMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        label_space=L(PanopticLabelSpace.from_dataset)(name="${...dataset.names}"),
    ),
    total_batch_size=16,
    num_workers=4,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val_panoptic", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
        image_format="BGR",
    ),
    num_workers=4,
)
dataloader.evaluator = [
    L(COCOEvaluator)(dataset_name="${...test.dataset.names}"),
    L(COCOPanopticEvaluator)(dataset_name="${...test.dataset.names}"),
]

optimizer = get_config("common/optim.py").SGD
lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_1x
lr_multiplier.warmup_length = 1500 / 90000
train = get_config("common/train.py").train
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = 90000
train.output_dir = "output/upsnet_R_50_coco_lazy"
