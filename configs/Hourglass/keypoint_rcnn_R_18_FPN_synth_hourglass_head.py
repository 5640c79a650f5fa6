"""LazyConfig twin of keypoint_rcnn_R_18_FPN_synth_hourglass_head.yaml: the stock Keypoint R-CNN
of keypoint_rcnn_R_18_FPN_synth.py with d2ext's HourglassKeypointHead as its keypoint head.

    python .venv/d2-tools/lazyconfig_train_net.py \
        --config-file configs/Hourglass/keypoint_rcnn_R_18_FPN_synth_hourglass_head.py
"""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from d2ext.modeling.hourglass import HourglassKeypointHead

# the stock config's data, optimizer, schedule and model; only the keypoint head is replaced
from .keypoint_rcnn_R_18_FPN_synth import (
    dataloader,  # noqa: F401
    lr_multiplier,  # noqa: F401
    model,
    optimizer,  # noqa: F401
    train,
)

model.roi_heads.keypoint_head = L(HourglassKeypointHead)(
    input_shape=ShapeSpec(channels=128, height=14, width=14),
    num_keypoints=17,
    num_stacks=2,
    width=64,
    depth=2,
    norm="BN",
    sigma=2.0,
    unbiased_encoding=True,
    decode="dark",
    blur_kernel=11,
    loss_normalizer="visible",
)

train.output_dir = "output/keypoint_rcnn_R_18_FPN_synth_hourglass_head_lazy"
