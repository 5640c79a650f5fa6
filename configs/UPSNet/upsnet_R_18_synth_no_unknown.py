"""LazyConfig twin of upsnet_R_18_synth_no_unknown.yaml: the ablation without the unknown class
(all GT instances fed to the panoptic head, as UPSNet without void)."""

from .upsnet_R_18_synth import dataloader, lr_multiplier, model, optimizer, train

model.panoptic_head.unknown_class = False
model.panoptic_head.box_keep_fraction = 1.0
train.output_dir = "output/upsnet_R_18_synth_no_unknown_lazy"
