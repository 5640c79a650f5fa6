"""yolact_base (R-101-FPN, 550x550), LazyConfig twin of yolact_R_101_FPN_550.yaml.

python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/YOLACT/yolact_R_101_FPN_550.py
"""

from .yolact_lazy_common import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-101.pkl"
train.output_dir = "output/yolact_R_101_FPN_550_lazy"
