"""LazyConfig twin of mask_rcnn_R_18_FPN_synth_densepose_off.yaml: densepose_rcnn_R_18_FPN_synth.py
without the DensePose branch (same Mask R-CNN, data, mapper and budget), its anchor."""

from .densepose_rcnn_R_18_FPN_synth import dataloader, lr_multiplier, model, optimizer, train

# DensePoseROIHeads with the branch off is a plain StandardROIHeads
model.roi_heads.densepose_on = False
for _key in (
    "densepose_in_features",
    "decoder",
    "densepose_pooler",
    "densepose_head",
    "densepose_predictor",
    "densepose_loss",
    "densepose_fg_iou_threshold",
):
    del model.roi_heads[_key]
train.output_dir = "output/mask_rcnn_R_18_FPN_synth_densepose_off_lazy"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
