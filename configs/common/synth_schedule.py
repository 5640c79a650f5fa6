"""LazyConfig optimizer, LR schedule and train loop for the synthetic CPU budget, mirroring
configs/Base/Base-synth-R18.yaml (SGD lr 0.02, 1500 iters, steps at 1100/1350, warmup 100)."""

from detectron2.config import LazyCall as L
from detectron2.config import get_cfg
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from fvcore.common.param_scheduler import MultiStepParamScheduler

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.02

train = get_config("common/train.py").train
train.init_checkpoint = ""  # from scratch: no weights can be downloaded
train.max_iter = 1500
train.device = "cpu"
train.eval_period = 0
train.checkpointer.period = 100000
train.seed = 0

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[1100, 1350],
        num_updates="${train.max_iter}",
    ),
    warmup_length=100 / 1500,
    warmup_factor=0.001,
)


def clipped_optimizer(optimizer_class, clip_value: float, **kwargs):
    """A LazyCall of ``optimizer_class`` with per-parameter gradient-norm clipping at
    ``clip_value``, through D2's own wrapper (what SOLVER.CLIP_GRADIENTS does for yacs configs);
    ``kwargs`` are the optimizer's (lr, weight_decay, ...)."""
    clip_cfg = get_cfg()
    clip_cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    clip_cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    clip_cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = clip_value
    return L(maybe_add_gradient_clipping(clip_cfg, optimizer_class))(
        params=L(get_default_optimizer_params)(weight_decay_norm=0.0), **kwargs
    )


def full_model_clipped_optimizer(optimizer_class, max_norm: float, **kwargs):
    """A LazyCall of ``optimizer_class`` clipping the norm of all gradients together at
    ``max_norm`` (yacs ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE: "full_model"``, d2ext's Trainer)."""
    from d2ext.engine.gradient_clipping import full_model_gradient_clipping

    return L(full_model_gradient_clipping(optimizer_class, max_norm))(
        params=L(get_default_optimizer_params)(weight_decay_norm=0.0), **kwargs
    )


def finetune_schedule(
    train, optimizer, lr_multiplier, *, init_checkpoint, lr, max_iter, step, warmup, output_dir
) -> None:
    """A fine-tune from ``init_checkpoint``: ``max_iter`` iterations at ``lr``, x0.1 at ``step``,
    ``warmup`` linear warm-up iterations, no intermediate checkpoints (yacs: MODEL.WEIGHTS,
    SOLVER.BASE_LR / MAX_ITER / STEPS (step,) / WARMUP_ITERS, CHECKPOINT_PERIOD 1000)."""
    train.init_checkpoint = init_checkpoint
    optimizer.lr = lr
    train.max_iter = max_iter
    train.checkpointer.period = 1000
    lr_multiplier.scheduler.milestones = [step]
    lr_multiplier.scheduler.values = [1.0, 0.1]
    lr_multiplier.warmup_length = warmup / max_iter
    train.output_dir = output_dir
