"""LazyConfig twin of upsnet_R_18_synth_no_unknown_ft.yaml: upsnet_R_18_synth_no_unknown.py
fine-tuned for 120 iterations from the synth_panoptic detector of
mask_rcnn_R_18_FPN_synth_panoptic.py."""

from .common.synth_budget import synth_panoptic_finetune as _synth_panoptic_finetune
from .upsnet_R_18_synth_no_unknown import dataloader, lr_multiplier, model, optimizer, train

_synth_panoptic_finetune(
    train, optimizer, lr_multiplier, "output/upsnet_R_18_synth_no_unknown_ft_lazy"
)

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
