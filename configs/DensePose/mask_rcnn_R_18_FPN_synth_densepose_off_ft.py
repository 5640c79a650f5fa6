"""LazyConfig twin of mask_rcnn_R_18_FPN_synth_densepose_off_ft.yaml: the anchor of
densepose_rcnn_R_18_FPN_synth_ft.py (the same detector and 250 iterations, no DensePose branch)."""

from .mask_rcnn_R_18_FPN_synth_densepose_off import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

train.init_checkpoint = "output/mask_rcnn_R_18_FPN_synth_densepose_off/model_final.pth"
optimizer.lr = 0.0025  # the original's 0.01 at batch 16, scaled to batch 4
train.max_iter = 250
lr_multiplier.scheduler.milestones = [200]
lr_multiplier.scheduler.values = [1.0, 0.1]
lr_multiplier.warmup_length = 25 / 250
train.output_dir = "output/mask_rcnn_R_18_FPN_synth_densepose_off_ft_lazy"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
