from detectron2.config import CfgNode

from .common import add_common_config
from .densepose import add_densepose_config
from .hourglass import add_hourglass_config
from .hourglass_keypoint_head import add_hourglass_keypoint_head_config
from .postprocess import add_postprocess_config
from .retinaface import add_retinaface_config
from .upsnet import add_upsnet_config
from .vpsnet import add_vpsnet_config
from .yolact import add_yolact_config
from .yolact_edge import add_yolact_edge_config


def add_d2ext_config(cfg: CfgNode) -> CfgNode:
    """Add every d2ext key to ``cfg`` (a copy of D2's defaults, e.g. ``get_cfg()``), in place.

    Idempotent: adding twice keeps the values already set.
    """
    if "D2EXT" in cfg:  # already added: keep the values set since
        return cfg
    add_common_config(cfg)
    add_postprocess_config(cfg)
    add_yolact_config(cfg)
    add_yolact_edge_config(cfg)
    add_upsnet_config(cfg)
    add_vpsnet_config(cfg)
    add_hourglass_config(cfg)
    add_hourglass_keypoint_head_config(cfg)
    add_retinaface_config(cfg)
    add_densepose_config(cfg)
    return cfg
