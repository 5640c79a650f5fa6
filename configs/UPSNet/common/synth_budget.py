"""LazyConfig form of configs/UPSNet/Base-synth-panoptic-R18.yaml's model keys, shared by the
Panoptic FPN and UPSNet synthetic configs so both compare on the same R-CNN budget."""

from ...common.synth_r18 import resnet18_from_scratch
from ...common.synth_schedule import finetune_schedule


def synth_panoptic_rcnn_budget(model) -> None:
    """R-18 from scratch, a 128-channel FPN, anchors for 192-px images, 6 thing classes."""
    resnet18_from_scratch(model.backbone.bottom_up)
    model.backbone.out_channels = 128  # and every head reading the FPN:
    model.proposal_generator.head.in_channels = 128
    model.roi_heads.box_head.input_shape.channels = 128
    model.roi_heads.mask_head.input_shape.channels = 128
    model.pixel_mean = [127.5, 127.5, 127.5]
    model.pixel_std = [64.0, 64.0, 64.0]
    model.input_format = "BGR"
    model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
    model.proposal_generator.post_nms_topk = (300, 300)
    model.roi_heads.num_classes = 6
    model.roi_heads.batch_size_per_image = 128
    model.roi_heads.mask_head.num_classes = 6


# the synth_panoptic detector the *_ft configs start from (mask_rcnn_R_18_FPN_synth_panoptic)
SYNTH_PANOPTIC_DETECTOR = "output/mask_rcnn_R_18_FPN_synth_panoptic/model_final.pth"


def synth_panoptic_finetune(train, optimizer, lr_multiplier, output_dir: str) -> None:
    """The fine-tune schedule of the *_ft configs: from the synth_panoptic detector,
    120 iterations at lr 0.005, x0.1 at 100, 20 warm-up iterations."""
    finetune_schedule(
        train, optimizer, lr_multiplier, init_checkpoint=SYNTH_PANOPTIC_DETECTOR,
        lr=0.005, max_iter=120, step=100, warmup=20, output_dir=output_dir,
    )  # fmt: skip
