from detectron2.config import CfgNode as CN


def add_yolact_config(cfg: CN) -> None:
    """Keys of YOLACT (Bolya et al., ICCV 2019) and its YOLACT-FPN backbone."""
    cfg.MODEL.YOLACT = CN()
