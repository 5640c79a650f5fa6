"""The tiny YOLACT config shared by the model and mapper tests (importable from any test:
pytest puts ``tests/`` on ``sys.path`` for its root conftest)."""

import os

from detectron2.config import get_cfg

from d2ext import add_d2ext_config

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def tiny_cfg(size=128, **yolact):
    """The synthetic YOLACT config with a tiny model (128 px, 32 channels, 8 prototypes,
    one anchor size per level); ``yolact`` overrides ``MODEL.YOLACT`` keys."""
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "YOLACT", "yolact_R_18_synth.yaml"))
    cfg.MODEL.YOLACT.INPUT_SIZE = size
    cfg.MODEL.YOLACT.NUM_CLASSES = 3
    cfg.MODEL.YOLACT.FPN_OUT_CHANNELS = 32
    cfg.MODEL.YOLACT.PROTO_CONV_DIM = 32
    cfg.MODEL.YOLACT.HEAD_CONV_DIM = 32
    cfg.MODEL.YOLACT.NUM_PROTOTYPES = 8
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[8], [16], [32], [64], [128]]
    cfg.MODEL.YOLACT.SCALE_JITTER = []  # tests that want it set it
    for k, v in yolact.items():
        cfg.MODEL.YOLACT[k] = v
    return cfg
