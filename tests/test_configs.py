"""Every shipped config loads and builds its model: yacs YAML through get_cfg +
add_d2ext_config, LazyConfig .py through LazyConfig.load + instantiate."""
import glob
import os

import pytest
import torch

from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.modeling import build_model

import d2ext
from d2ext import add_d2ext_config

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
YAML_CONFIGS = sorted(
    p
    for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base-")  # bases are partial by design
)
LAZY_CONFIGS = sorted(
    p
    for p in glob.glob(os.path.join(REPO, "configs", "**", "*.py"), recursive=True)
    if os.sep + "common" + os.sep not in p
)


def _rel(p):
    return os.path.relpath(p, REPO)


def test_configs_exist():
    assert any("mask_rcnn_R_18_FPN_synth" in p for p in YAML_CONFIGS)
    yaml_stems = {os.path.splitext(_rel(p))[0] for p in YAML_CONFIGS}
    lazy_stems = {os.path.splitext(_rel(p))[0] for p in LAZY_CONFIGS}
    # every yacs config has a LazyConfig twin
    assert yaml_stems <= lazy_stems, sorted(yaml_stems - lazy_stems)


@pytest.mark.parametrize("path", YAML_CONFIGS, ids=_rel)
def test_yaml_config_builds(path):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert isinstance(model, torch.nn.Module)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("path", LAZY_CONFIGS, ids=_rel)
def test_lazy_config_builds(path):
    cfg = LazyConfig.load(path)
    for key in ("model", "dataloader", "optimizer", "lr_multiplier", "train"):
        assert key in cfg, f"{_rel(path)} lacks `{key}`"
    model = instantiate(cfg.model)
    assert isinstance(model, torch.nn.Module)


def test_add_config_is_idempotent_and_leaves_d2_defaults_alone():
    from detectron2.config.defaults import _C

    before = _C.dump()
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.INPUT.DATASET_MAPPER_NAME = "x"
    add_d2ext_config(cfg)  # second call keeps values
    assert cfg.INPUT.DATASET_MAPPER_NAME == "x"
    assert _C.dump() == before
    assert "D2EXT" not in get_cfg()


def test_unknown_mapper_name_is_a_clear_error():
    from d2ext.data import build_train_mapper

    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.INPUT.DATASET_MAPPER_NAME = "NoSuchMapper"
    with pytest.raises(KeyError, match="NoSuchMapper"):
        build_train_mapper(cfg)


def test_yolact_synth_twins_agree():
    """The yacs and LazyConfig YOLACT synthetic configs build the same anchors, mask targets,
    mask threshold and training augmentations (the twins are edited by hand)."""
    from d2ext.data import build_train_mapper

    yaml = get_cfg()
    add_d2ext_config(yaml)
    yaml.merge_from_file(os.path.join(REPO, "configs", "YOLACT", "yolact_R_18_synth.yaml"))
    lazy = LazyConfig.load(os.path.join(REPO, "configs", "YOLACT", "yolact_R_18_synth.py"))
    ma, mb = build_model(yaml), instantiate(lazy.model)
    assert (ma.loss.soft_mask_targets, ma.mask_threshold) == (True, 0.35)
    assert (mb.loss.soft_mask_targets, mb.mask_threshold) == (True, 0.35)
    assert (ma.mask_iou_net, mb.mask_iou_net) == (None, None)
    a, b = ma.anchor_generator, mb.anchor_generator
    assert len(a.cell_anchors) == len(b.cell_anchors)
    for x, y in zip(a.cell_anchors, b.cell_anchors):
        torch.testing.assert_close(x, y)

    def augs(mapper):  # LazyConfig stores tuples as lists
        return str(mapper.augmentations).replace("(", "[").replace(")", "]")

    assert augs(build_train_mapper(yaml)) == augs(instantiate(lazy.dataloader.train.mapper))
