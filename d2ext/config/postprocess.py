from detectron2.config import CfgNode as CN


def add_postprocess_config(cfg: CN) -> None:
    """Keys of the fused post-processing kernels used by stock D2 models."""
    cfg.MODEL.FAST_POSTPROCESS = CN()
    # Use d2ext.layers.paste_masks (fused, bool output) instead of D2's paste_masks_in_image.
    cfg.MODEL.FAST_POSTPROCESS.PASTE_MASKS = False
