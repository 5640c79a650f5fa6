"""LazyConfig twin of densepose_rcnn_R_18_FPN_synth_ft.yaml: densepose_rcnn_R_18_FPN_synth.py
started from the 600-iteration detector of mask_rcnn_R_18_FPN_synth_densepose_off.py and trained
250 more iterations (the branch's weights new)."""

from .densepose_rcnn_R_18_FPN_synth import dataloader, lr_multiplier, model, optimizer, train

train.init_checkpoint = "output/mask_rcnn_R_18_FPN_synth_densepose_off/model_final.pth"
optimizer.lr = 0.0025  # the original's 0.01 at batch 16, scaled to batch 4
train.max_iter = 250
lr_multiplier.scheduler.milestones = [200]
lr_multiplier.scheduler.values = [1.0, 0.1]
lr_multiplier.warmup_length = 25 / 250
train.output_dir = "output/densepose_rcnn_R_18_FPN_synth_ft_lazy"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
