"""LazyConfig twin of panoptic_fpn_R_18_synth_ft.yaml: panoptic_fpn_R_18_synth.py fine-tuned for
120 iterations from the synth_panoptic detector of mask_rcnn_R_18_FPN_synth_panoptic.py."""

from .common.synth_budget import synth_panoptic_finetune as _synth_panoptic_finetune
from .panoptic_fpn_R_18_synth import dataloader, lr_multiplier, model, optimizer, train

_synth_panoptic_finetune(train, optimizer, lr_multiplier, "output/panoptic_fpn_R_18_synth_ft_lazy")

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
