"""LazyConfig twin of densepose_rcnn_R_50_FPN_s1x.yaml: D2 projects/DensePose's s1x model,
Faster R-CNN R-50 FPN + the DensePose chart branch on DensePose-COCO 2014 (see the yacs twin).

    python .venv/d2-tools/lazyconfig_train_net.py \
        --config-file configs/DensePose/densepose_rcnn_R_50_FPN_s1x.py
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.evaluation import DatasetEvaluators
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler
from omegaconf import OmegaConf

import d2ext  # noqa: F401,I001  (registers densepose_coco_2014_* and DensePoseROIHeads)
from d2ext.data.densepose_flip import load_uv_symmetry_of_datasets
from d2ext.data.mappers import DensePoseMapper
from d2ext.evaluation import DensePoseEvaluator, FastCOCOEvaluator

from .common.densepose_branch import add_densepose_branch as _add_densepose_branch

model = get_config("common/models/mask_rcnn_fpn.py").model
# Faster R-CNN: no mask branch (MODEL.MASK_ON is off)
for _key in ("mask_in_features", "mask_pooler", "mask_head"):
    del model.roi_heads[_key]
# stem and res2 frozen on the ImageNet weights (MODEL.BACKBONE.FREEZE_AT: 2)
model.backbone.bottom_up.freeze_at = 2
model.roi_heads.num_classes = 1  # person
# the box pooler of the original's Base-DensePose-RCNN-FPN.yaml: ROIAlign, sampling ratio 2
model.roi_heads.box_pooler.pooler_type = "ROIAlign"
model.roi_heads.box_pooler.sampling_ratio = 2
_add_densepose_branch(model.roi_heads)

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.01

train = get_config("common/train.py").train
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = 130000
train.eval_period = 0  # evaluate once, after training (TEST.EVAL_PERIOD)
train.output_dir = "output/densepose_rcnn_R_50_FPN_s1x_lazy"

# 1000 warmup iterations from 0.1 x the lr, then x0.1 at 100k and 120k
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[100000, 120000],
        num_updates="${train.max_iter}",
    ),
    warmup_length=1000 / 130000,
    warmup_factor=0.1,
)

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(
        names=["densepose_coco_2014_train", "densepose_coco_2014_valminusminival"]
    ),
    mapper=L(DensePoseMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(
                short_edge_length=(640, 672, 704, 736, 768, 800),
                sample_style="choice",
                max_size=1333,
            ),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        use_instance_mask=False,
        # the official UV_symmetry_transforms.mat (the datasets' densepose_transform_src)
        uv_symmetry=L(load_uv_symmetry_of_datasets)(dataset_names="${...dataset.names}"),
    ),
    total_batch_size=16,
    num_workers=4,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="densepose_coco_2014_minival", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
        image_format="BGR",
    ),
    num_workers=4,
)
# what d2ext.evaluation.build_evaluator gives a "densepose" dataset: box AP on the DensePose-COCO
# json, then GPS_uv AP, part mIoU and UV error
dataloader.evaluator = L(DatasetEvaluators)(
    evaluators=[
        L(FastCOCOEvaluator)(dataset_name="${....test.dataset.names}"),
        L(DensePoseEvaluator)(dataset_name="${....test.dataset.names}"),
    ]
)
