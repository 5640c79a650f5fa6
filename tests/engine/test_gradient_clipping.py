"""SOLVER.CLIP_GRADIENTS.CLIP_TYPE "full_model": the norm of all gradients together is clipped
(mmdetection's grad_clip, VPSNet's setting), not each parameter's as D2's "norm"."""

import pytest
import torch
from detectron2.config import get_cfg

from d2ext import add_d2ext_config
from d2ext.engine import Trainer
from d2ext.engine.gradient_clipping import full_model_gradient_clipping


def _params():
    a = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(1))
    a.grad = torch.tensor([3.0, 0.0])
    b.grad = torch.tensor([4.0])  # joint norm 5, each parameter's below 5
    return a, b


def test_joint_norm_is_clipped_and_direction_kept():
    a, b = _params()
    opt = full_model_gradient_clipping(torch.optim.SGD, 2.5)([a, b], lr=1.0)
    opt.step()
    # gradients scaled by 2.5 / 5 together: the update keeps the 3:4 direction
    assert a.tolist() == pytest.approx([-1.5, 0.0]) and b.tolist() == pytest.approx([-2.0])
    a, b = _params()
    opt = full_model_gradient_clipping(torch.optim.SGD, 10.0)([a, b], lr=1.0)
    opt.step()  # under the limit: unchanged
    assert a.tolist() == pytest.approx([-3.0, 0.0]) and b.tolist() == pytest.approx([-4.0])
    with pytest.raises(ValueError, match="max_norm > 0"):
        full_model_gradient_clipping(torch.optim.SGD, 0.0)


@pytest.mark.parametrize("optimizer", ["SGD", "ADAMW"])
def test_trainer_builds_it_from_the_config(optimizer):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.SOLVER.OPTIMIZER = optimizer
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 2.5
    model = torch.nn.Linear(2, 1, bias=False)
    opt = Trainer.build_optimizer(cfg, model)
    assert type(opt).__name__.endswith("WithFullModelGradientClip")
    assert isinstance(opt, torch.optim.SGD if optimizer == "SGD" else torch.optim.AdamW)
    assert cfg.SOLVER.CLIP_GRADIENTS.ENABLED  # the caller's config is left as it was
    if optimizer == "SGD":
        for g in opt.param_groups:
            g["momentum"] = 0.0
            g["weight_decay"] = 0.0
            g["lr"] = 1.0
        model.weight.grad = torch.tensor([[30.0, 40.0]])
        before = model.weight.detach().clone()
        opt.step()
        assert (before - model.weight)[0].tolist() == pytest.approx([1.5, 2.0])
