"""Config keys of d2ext: one ``add_<family>_config`` per model family, composed by
:func:`add_d2ext_config`. None of them mutates D2's global defaults."""

from .common import add_common_config
from .defaults import add_d2ext_config
from .densepose import add_densepose_config
from .hourglass import add_hourglass_config
from .hourglass_keypoint_head import add_hourglass_keypoint_head_config
from .postprocess import add_postprocess_config
from .retinaface import add_retinaface_config
from .upsnet import add_upsnet_config
from .vpsnet import add_vpsnet_config
from .yolact import add_yolact_config
from .yolact_edge import add_yolact_edge_config

__all__ = [
    "add_d2ext_config",
    "add_common_config",
    "add_densepose_config",
    "add_hourglass_config",
    "add_hourglass_keypoint_head_config",
    "add_postprocess_config",
    "add_retinaface_config",
    "add_upsnet_config",
    "add_vpsnet_config",
    "add_yolact_config",
    "add_yolact_edge_config",
]
