"""DensePose chart head (Güler et al., CVPR 2018) on stock Mask R-CNN ROIs, faithful to D2
``projects/DensePose`` (its s1x configs, module names and checkpoints)."""

from .checkpoint import convert_official_densepose_state_dict
from .decoder import DensePoseDecoder
from .head import DensePoseV1ConvXHead
from .inference import DensePoseChartPredictorOutput, box_xyxy_to_int_xywh, densepose_chart_results
from .losses import DensePoseChartLoss, pack_densepose_targets
from .predictor import DensePoseChartPredictor
from .roi_heads import DensePoseROIHeads, select_densepose_proposals

__all__ = [
    "DensePoseChartLoss",
    "DensePoseChartPredictor",
    "DensePoseChartPredictorOutput",
    "DensePoseDecoder",
    "DensePoseROIHeads",
    "DensePoseV1ConvXHead",
    "box_xyxy_to_int_xywh",
    "convert_official_densepose_state_dict",
    "densepose_chart_results",
    "pack_densepose_targets",
    "select_densepose_proposals",
]
