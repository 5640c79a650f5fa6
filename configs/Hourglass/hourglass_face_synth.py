"""LazyConfig twin of hourglass_face_synth.yaml: the CPU-budget heatmap hourglass on synth_faces
(64x64 crops -> 16x16 heatmaps, 2 stacks of width 64, depth 2; see the yacs twin)."""

from .hourglass_8x256_mpii import dataloader, lr_multiplier, model, optimizer, train

model.backbone.num_stacks = 2
model.backbone.width = 64
model.backbone.depth = 2
model.backbone.num_keypoints = 68
model.crop_size = (64, 64)
model.codec.heatmap_size = (16, 16)
# DARK's modulation blur scaled to the 16x16 maps (used with decode="dark")
model.codec.blur_kernel = 5
model.flip_test_indices = None
dataloader.train.dataset.names = "synth_faces_train"
dataloader.test.dataset.names = "synth_faces_val"
for crop in (dataloader.train.mapper.augmentations[0], dataloader.test.mapper.augmentations[0]):
    crop.crop_size = (64, 64)

# Adam at 1e-3 as princeton-vl's train config, 10x lower for the last quarter
optimizer.lr = 1e-3
train.max_iter = 2000
train.device = "cpu"
train.checkpointer.period = 100000
train.output_dir = "output/hourglass_face_synth_lazy"
lr_multiplier.scheduler.milestones = [1500]
lr_multiplier.warmup_length = 100 / 2000

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
