"""Stacked Hourglass (Newell et al., ECCV 2016) in Detectron2. Importing registers the
``StackedHourglass`` backbone and the ``TopDownLandmarkDetector`` meta-architecture (heatmap or
coordinate-regression head on instance crops); official princeton-vl checkpoints are converted by
:func:`convert_official_hourglass_state_dict` (``tools/convert_hourglass_weights.py``)."""

from d2ext.config.hourglass import add_hourglass_config
from d2ext.config.hourglass_keypoint_head import add_hourglass_keypoint_head_config

from .backbone import Hourglass, HourglassStack, HourglassStem, PreActBottleneck, StackedHourglass
from .checkpoint import convert_official_hourglass_state_dict, infer_official_hourglass_config
from .losses import heatmap_mse_loss, keypoint_l1_loss
from .meta_arch import TopDownLandmarkDetector  # registration: META_ARCH
from .regression_head import CoordinateRegressionHead
from .roi_keypoint_head import HourglassKeypointHead  # registration: ROI_KEYPOINT_HEAD

__all__ = [
    "add_hourglass_config",
    "add_hourglass_keypoint_head_config",
    "StackedHourglass",
    "Hourglass",
    "HourglassStem",
    "HourglassStack",
    "PreActBottleneck",
    "HourglassKeypointHead",
    "TopDownLandmarkDetector",
    "CoordinateRegressionHead",
    "heatmap_mse_loss",
    "keypoint_l1_loss",
    "convert_official_hourglass_state_dict",
    "infer_official_hourglass_config",
]
