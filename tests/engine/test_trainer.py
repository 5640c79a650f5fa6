"""Trainer pieces that need no training run: optimizer choice and the CPU-DDP workaround."""
import pytest
import torch

from detectron2.config import get_cfg
from detectron2.solver import build_optimizer as d2_build_optimizer

from d2ext import add_d2ext_config
from d2ext.engine import Trainer
from d2ext.engine.trainer import _ddp_device_ids_for


def _cfg(**solver):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def _model():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))


def test_sgd_is_d2s_optimizer():
    cfg = _cfg()
    ours, d2 = Trainer.build_optimizer(cfg, _model()), d2_build_optimizer(cfg, _model())
    assert type(ours) is type(d2) and isinstance(ours, torch.optim.SGD)
    assert [g["lr"] for g in ours.param_groups] == [g["lr"] for g in d2.param_groups]


def test_adamw_uses_d2_param_groups_and_clipping():
    cfg = _cfg(OPTIMIZER="ADAMW", BASE_LR=1e-3, WEIGHT_DECAY=1e-4, WEIGHT_DECAY_NORM=0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    opt = Trainer.build_optimizer(cfg, _model())
    assert isinstance(opt, torch.optim.AdamW)
    assert type(opt).__name__ != "AdamW"  # D2 wrapped it for gradient clipping
    decays = sorted({g["weight_decay"] for g in opt.param_groups})
    assert decays == [0.0, 1e-4]  # BN params get WEIGHT_DECAY_NORM, as in D2's SGD groups


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        Trainer.build_optimizer(_cfg(OPTIMIZER="LAMB"), _model())


def test_cpu_ddp_patch_is_scoped():
    import detectron2.engine.defaults as d2_defaults

    original = d2_defaults.create_ddp_model
    with _ddp_device_ids_for("cpu"):
        assert d2_defaults.create_ddp_model is not original
        model = _model()
        assert d2_defaults.create_ddp_model(model) is model  # world size 1: unchanged
    assert d2_defaults.create_ddp_model is original
    with _ddp_device_ids_for("cuda"):
        assert d2_defaults.create_ddp_model is original
