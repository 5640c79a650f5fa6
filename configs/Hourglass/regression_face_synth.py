"""LazyConfig twin of regression_face_synth.yaml: hourglass_face_synth.py with the
coordinate-regression head (global pool + FC to 2 x 68, L1) in place of the heatmaps."""

from detectron2.config import LazyCall as L

from d2ext.modeling.hourglass import CoordinateRegressionHead

from .hourglass_face_synth import dataloader, lr_multiplier, model, optimizer, train

model.head = "regression"
model.codec = None
model.regression_head = L(CoordinateRegressionHead)(
    in_channels="${..backbone.width}", num_keypoints="${..backbone.num_keypoints}"
)
train.output_dir = "output/regression_face_synth_lazy"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
