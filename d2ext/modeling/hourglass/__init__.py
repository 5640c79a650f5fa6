"""Stacked Hourglass (Newell et al., ECCV 2016) in Detectron2. Importing registers the
``StackedHourglass`` backbone; official princeton-vl checkpoints are converted by
:func:`convert_official_hourglass_state_dict` (``tools/convert_hourglass_weights.py``)."""

from d2ext.config.hourglass import add_hourglass_config

from .backbone import Hourglass, HourglassStack, HourglassStem, PreActBottleneck, StackedHourglass
from .checkpoint import convert_official_hourglass_state_dict, infer_official_hourglass_config

__all__ = [
    "add_hourglass_config",
    "StackedHourglass",
    "Hourglass",
    "HourglassStem",
    "HourglassStack",
    "PreActBottleneck",
    "convert_official_hourglass_state_dict",
    "infer_official_hourglass_config",
]
