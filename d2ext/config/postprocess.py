from detectron2.config import CfgNode as CN


def add_postprocess_config(cfg: CN) -> None:
    """Keys of the fused post-processing used by stock D2 models.

    The switch itself is ``MODEL.META_ARCHITECTURE: "FastGeneralizedRCNN"`` (or
    ``"FastPanopticFPN"``), see :mod:`d2ext.modeling.postprocess`; stock meta-architecture names
    never read these keys.
    """
    cfg.MODEL.FAST_POSTPROCESS = CN()
    # In FastGeneralizedRCNN / FastPanopticFPN: paste instance masks with d2ext.layers.paste_masks
    # (fused kernel, bool output) instead of D2's paste_masks_in_image. False = D2's paste (A/B).
    cfg.MODEL.FAST_POSTPROCESS.PASTE_MASKS = True
