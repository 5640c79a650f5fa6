"""LazyConfig twin of upsnet_R_18_synth_no_unknown_ft.yaml: upsnet_R_18_synth_no_unknown.py
fine-tuned for 120 iterations from the synth_panoptic detector of
mask_rcnn_R_18_FPN_synth_panoptic.py."""

from .upsnet_R_18_synth_no_unknown import dataloader, lr_multiplier, model, optimizer, train

train.init_checkpoint = "output/mask_rcnn_R_18_FPN_synth_panoptic/model_final.pth"
optimizer.lr = 0.005
train.max_iter = 120
train.checkpointer.period = 1000
lr_multiplier.scheduler.milestones = [100]
lr_multiplier.scheduler.values = [1.0, 0.1]
lr_multiplier.warmup_length = 20 / 120
train.output_dir = "output/upsnet_R_18_synth_no_unknown_ft_lazy"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
