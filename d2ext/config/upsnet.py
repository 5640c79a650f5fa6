from detectron2.config import CfgNode as CN


def add_upsnet_config(cfg: CN) -> None:
    """Keys of UPSNet (Xiong et al., CVPR 2019): semantic head and panoptic head."""
    cfg.MODEL.UPSNET = CN()
