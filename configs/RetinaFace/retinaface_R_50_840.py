"""LazyConfig twin of retinaface_R_50_840.yaml: biubug6's cfg_re50 (torchvision-style ResNet-50
res3-res5, FPN / SSH width 256, 840x840 crops, batch 24, 100 epochs)."""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet

from .retinaface_mnet025_640 import dataloader, lr_multiplier, model, optimizer, train

model.backbone = L(ResNet)(
    stem=L(BasicStem)(in_channels=3, out_channels=64, norm="BN"),
    stages=L(ResNet.make_default_stages)(
        depth=50,
        # torchvision's ResNet-50: the stride in the 3x3 conv
        stride_in_1x1=False,
        norm="BN",
    ),
    out_features=["res3", "res4", "res5"],
    freeze_at=0,
)
model.in_features = ["res3", "res4", "res5"]
model.out_channels = 256
dataloader.train.mapper.augmentations.train_size = 840
dataloader.train.total_batch_size = 24
# 100 epochs of 537 iterations, lr x0.1 at epochs 70 and 90
train.max_iter = 53700
train.checkpointer.period = 5370
train.output_dir = "output/retinaface_R_50_840_lazy"
lr_multiplier.scheduler.milestones = [37590, 48330]

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
