"""yolact_resnet50 (R-50-FPN, 550x550), LazyConfig twin of yolact_R_50_FPN_550.yaml.

python .venv/d2-tools/lazyconfig_train_net.py --config-file configs/YOLACT/yolact_R_50_FPN_550.py
"""

from .yolact_lazy_common import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "output/yolact_R_50_FPN_550_lazy"
