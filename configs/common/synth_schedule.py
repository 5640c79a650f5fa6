"""LazyConfig optimizer, LR schedule and train loop for the synthetic CPU budget, mirroring
configs/Base/Base-synth-R18.yaml (SGD lr 0.02, 1500 iters, steps at 1100/1350, warmup 100)."""
from fvcore.common.param_scheduler import MultiStepParamScheduler

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler

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
