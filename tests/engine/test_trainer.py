"""Trainer pieces that need no training run: optimizer choice and the CPU-DDP workaround."""

import pytest
import torch
from detectron2.config import get_cfg

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


def test_sgd_follows_the_solver_keys():
    """SOLVER.OPTIMIZER "SGD": per-parameter lr / weight decay, momentum, Nesterov and gradient
    clipping as the SOLVER keys say, checked on one step against the update written out."""
    cfg = _cfg(
        BASE_LR=0.1,
        MOMENTUM=0.8,
        NESTEROV=True,
        WEIGHT_DECAY=1e-3,
        WEIGHT_DECAY_NORM=0.0,
        BIAS_LR_FACTOR=2.0,
        WEIGHT_DECAY_BIAS=5e-4,
    )
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    conv, bn, head = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 2, 1)
    head.weight.requires_grad_(False)
    opt = Trainer.build_optimizer(cfg, torch.nn.Sequential(conv, bn, head))
    assert isinstance(opt, torch.optim.SGD)
    # (lr, weight decay): biases get BIAS_LR_FACTOR and WEIGHT_DECAY_BIAS (norm biases too),
    # norm weights WEIGHT_DECAY_NORM; frozen parameters are left out
    expected = {
        conv.weight: (0.1, 1e-3),
        conv.bias: (0.2, 5e-4),
        bn.weight: (0.1, 0.0),
        bn.bias: (0.2, 5e-4),
        head.bias: (0.2, 5e-4),
    }
    got = {p: (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    assert set(map(id, got)) == set(map(id, expected))
    for p, hyper in expected.items():
        assert got[p] == pytest.approx(hyper)
    assert all((g["momentum"], g["nesterov"]) == (0.8, True) for g in opt.param_groups)

    before = {p: p.detach().clone() for p in expected}
    frozen_before = head.weight.detach().clone()
    for p in expected:
        p.grad = torch.full_like(p, 100.0)  # clipped to 0.01 per element
    opt.step()
    for p, (lr, wd) in expected.items():
        d = 0.01 + wd * before[p]  # clipped gradient + weight decay
        # first step: the momentum buffer is d; Nesterov steps along d + momentum * d
        torch.testing.assert_close(p.detach(), before[p] - lr * (1 + 0.8) * d)
    assert torch.equal(head.weight, frozen_before)


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
