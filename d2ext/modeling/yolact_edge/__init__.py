"""YolactEdge (Liu et al., ICRA 2021) in Detectron2. Importing registers the ``YolactEdge``
meta-architecture (a :class:`d2ext.modeling.yolact.YOLACT` with keyframe feature transfer on
video; :class:`d2ext.engine.VideoPredictor` threads its state)."""

from d2ext.config.yolact_edge import add_yolact_edge_config

from .checkpoint import convert_official_yolact_edge_state_dict
from .meta_arch import KeyframeFeatures, YolactEdge, YolactEdgeVideoState
from .spa import SPA

__all__ = [
    "add_yolact_edge_config",
    "KeyframeFeatures",
    "SPA",
    "YolactEdge",
    "YolactEdgeVideoState",
    "convert_official_yolact_edge_state_dict",
]
