"""LazyConfig twin of retinaface_mnet025_synth.yaml: the CPU-budget RetinaFace mnet0.25 from
scratch on synth_face_scenes (320 px scenes; see the yacs twin)."""

from .retinaface_mnet025_640 import dataloader, lr_multiplier, model, optimizer, train

dataloader.train.dataset.names = "synth_face_scenes_train"
dataloader.test.dataset.names = "synth_face_scenes_val"
dataloader.train.mapper.augmentations.train_size = 320
dataloader.train.total_batch_size = 16
dataloader.train.num_workers = 1
dataloader.test.num_workers = 1
# from scratch: 10x the original's lr after a warm-up
optimizer.lr = 0.01
train.max_iter = 2000
train.device = "cpu"
train.checkpointer.period = 100000
train.output_dir = "output/retinaface_mnet025_synth_lazy"
lr_multiplier.scheduler.milestones = [1600]
lr_multiplier.scheduler.values = [1.0, 0.1]
lr_multiplier.warmup_length = 200 / 2000

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
