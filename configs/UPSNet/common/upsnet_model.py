"""LazyConfig UPSNet model: D2's model-zoo Mask R-CNN FPN (R-50) turned into UPSNet, with the
paper's COCO semantic head (3 deformable convs) and loss weights. ``panoptic_head.label_space``
is read from the training dataset's metadata; configs set its ``name``."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config

import d2ext  # noqa: F401  (registration)
from d2ext.data import PanopticLabelSpace
from d2ext.modeling.upsnet import UPSNet, UPSNetPanopticHead, UPSNetSemanticHead

model = get_config("common/models/mask_rcnn_fpn.py").model
model._target_ = UPSNet
model.sem_seg_head = L(UPSNetSemanticHead)(
    input_shape={
        f"p{i}": L(ShapeSpec)(channels="${....backbone.out_channels}", stride=2**i)
        for i in (2, 3, 4, 5)
    },
    num_classes=133,  # stuff + things (COCO panoptic: 53 + 80)
    conv_dim=128,
    num_convs=3,
    deformable=True,
    norm="",
    loss_weight=0.2,
    roi_loss_weight=0.04,
    roi_resolution=28,
)
model.panoptic_head = L(UPSNetPanopticHead)(
    label_space=L(PanopticLabelSpace.from_dataset)(name="coco_2017_train_panoptic"),
    unknown_class=True,
    box_keep_fraction=0.7,
    loss_weight=0.1,
    score_thresh=0.6,
    nms_thresh=0.5,
    overlap_thresh=0.3,
    stuff_override_fraction=0.5,
    stuff_area_limit=4096,
    detections_per_image=100,
)
model.roi_heads.num_classes = 80
